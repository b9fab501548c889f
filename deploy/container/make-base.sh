#!/usr/bin/env bash
# Makes a Debian base image from Debian's packages, for hosts that cannot pull one from a
# registry: debootstrap's minimal Debian (bookworm) into a scratch folder, then `docker import`.
# The result, named by $1 (default flyrtech/debian:bookworm), stands in for debian:bookworm-slim
# as the BASE build argument of deploy/container/Dockerfile.
#
#   deploy/container/make-base.sh [IMAGE]
#
# Idempotent: an image already present is kept. Needs root (debootstrap) and a Debian mirror
# (MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

image=${1:-flyrtech/debian:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image is present"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "debootstrap is missing: apt-get install debootstrap" >&2
    exit 1
}

root=$(mktemp -d /tmp/flyrtech-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm (minbase) from $mirror into $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# What debian:bookworm-slim leaves out: the package lists and caches, man pages, docs and
# translations, now and for every package installed later.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* "$root"/usr/share/doc/* \
    "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/cache/* "$root"/var/log/*
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EXCLUDE'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EXCLUDE
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$image"
docker image ls "$image"
