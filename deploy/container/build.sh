#!/usr/bin/env bash
# Builds the service's image: the release `flyrtech` binary, stripped, on a Debian base.
#
#   deploy/container/build.sh [TAG]      # default flyrtech:dev
#
# BASE names the base image (default debian:bookworm-slim). Where it is neither present nor
# can be pulled (no registry, as in CI here), make-base.sh makes flyrtech/debian:bookworm from
# Debian's packages and the image is built on that. BINARY names a flyrtech binary to use
# instead of building the release one (the test suite passes its own). Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=${1:-flyrtech:dev}
base=${BASE:-debian:bookworm-slim}
if ! docker image inspect "$base" >/dev/null 2>&1 \
    && ! timeout 60 docker pull --quiet "$base" >/dev/null 2>&1; then
    echo "cannot pull $base: making the base from Debian's packages"
    base=flyrtech/debian:bookworm
    deploy/container/make-base.sh "$base"
fi

binary=${BINARY:-}
if [ -z "$binary" ]; then
    cargo build --release --locked -p flyrtech-api
    binary=target/release/flyrtech
fi
context=$(mktemp -d /tmp/flyrtech-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp deploy/container/Dockerfile "$context/"
strip -o "$context/flyrtech" "$binary"
docker build --quiet --build-arg BASE="$base" --tag "$tag" "$context" >/dev/null
echo "built $tag on $base: $(docker image inspect --format '{{.Size}}' "$tag" \
    | awk '{ printf "%.1f MB", $1 / 1e6 }') (the binary $(du -m "$context/flyrtech" | cut -f1) MB)"
