# Common tasks. `cargo install just` provides `just`; every recipe is a plain cargo command.

# Run the whole suite (starts its own redis-server processes).
test:
    cargo test --workspace

# Reproduce the incident and compare every strategy (private redis-server unless FLYRTECH_REDIS_URL is set).
compare *ARGS:
    cargo run --release -p flyrtech-lab -- compare --strategies all --scenario incident {{ARGS}}

# Run the HTTP API on 127.0.0.1:5000 (private redis-server unless FLYRTECH_REDIS_URL is set), e.g. `just serve --strategy hash`.
serve *ARGS:
    cargo run --release -p flyrtech-api -- serve {{ARGS}}

# The full comparison: every strategy, every scenario; writes docs/results/ (JSON with the command and machine, the HTML page, charts, terminal output).
bench:
    mkdir -p docs/results
    cargo run --release -p flyrtech-lab -- compare --strategies all --scenario all --json docs/results/lab.json --html docs/results/lab.html --chart docs/results/scaling.svg | tee docs/results/summary.txt

# The lab's pages (compare --html, verify --html of naive and lua) opened in headless Chromium, kept with their screenshots in docs/results/pages.
pages:
    FLYRTECH_PAGES_DIR={{justfile_directory()}}/docs/results/pages cargo test -p flyrtech-lab --test cli -- pages::

# One relay draining a backlog of 1,000,000 outbox entries; writes docs/results/backlog.json.
backlog:
    mkdir -p docs/results
    cargo build --release -p flyrtech-api
    cargo run --release -p flyrtech-lab -- backlog --entries 1000000 --json docs/results/backlog.json

# 1,000,000 journeys migrated document -> hash -> document on a private redis-server; writes docs/results/migration.json.
migrate-bench:
    mkdir -p docs/results
    cargo run --release -p flyrtech-lab -- migrate-bench --journeys 1000000 --json docs/results/migration.json

# The incident for every strategy, each run followed by the relay and the audit; writes docs/results/audit.txt.
audit:
    mkdir -p docs/results
    cargo build --release -p flyrtech-api
    cargo run --release -p flyrtech-lab -- compare --strategies all --scenario incident --audit | tee docs/results/audit.txt

# The OpenAPI document against the running service: schemathesis (pinned, in target/api-check/venv), every check, every phase, each strategy (default all six).
api-check *STRATEGIES:
    tools/api-check/run.sh {{STRATEGIES}}

# The fault suite with its figures printed (docs/reliability.md): the failover under --wait-replicas ROUNDS times per strategy (docs/results/faults.txt), then every nemesis ROUNDS times with each run's history checked for linearizability (docs/results/nemesis.txt); default 10.
faults ROUNDS="10":
    FLYRTECH_FAULT_ROUNDS={{ROUNDS}} cargo test --release -p flyrtech-tests --test it reliability:: failover:: -- --nocapture 2>&1 | tee docs/results/faults.txt
    tools/faults/run.sh {{ROUNDS}}

# The cost of replica-confirmed writes: every strategy with and without WAIT 1 on a private primary with a replica; writes docs/results/wait.json.
wait-cost:
    mkdir -p docs/results
    cargo run --release -p flyrtech-lab -- --wait-replicas 1 compare --strategies all --scenario spread --json docs/results/wait.json | tee docs/results/wait.txt

# The price of --wait-replicas 1 and --wait-aof 1 side by side on one primary and replica with AOF on both (an engine with WAITAOF: FLYRTECH_REDIS_SERVER, default valkey-server); writes docs/results/wait-aof.txt.
wait-aof-cost:
    tools/wait-aof/price.sh

# What serve adds to each request against the stack's floor (crates/lab/examples/floor.rs): the server's and Redis' CPU per request, route by route, with the goals, then instructions per request under callgrind with a profile per route (default hash); writes docs/results/http-cpu.txt, http-instructions.txt and profiles/.
http-bench *STRATEGIES:
    tools/http-bench/bench.sh {{STRATEGIES}}

# Throughput against the floor and each strategy's Redis ceiling, every strategy, with wrk (or oha), then the lab's view (compare --http --http-floor); writes docs/results/http-floor.txt.
http-floor *STRATEGIES:
    tools/http-bench/run.sh {{STRATEGIES}}

# Where a request's CPU goes: server and Redis, floor against serve, route by route (best of two rounds, the ratios and goals at the end); writes docs/results/http-cpu.txt.
http-cpu *STRATEGIES:
    tools/http-bench/cpu-split.sh {{STRATEGIES}}

# The events' way out: end-to-end lag under spread and a 1,000,000-entry backlog into JetStream and PostgreSQL (private servers); writes docs/results/projection.json.
project-bench:
    mkdir -p docs/results
    cargo run --release -p flyrtech-lab -- project-bench --json docs/results/projection.json

# The same with the stream's partitions shared by 1, then 4 projectors, 60 s of lag; writes docs/results/projection-1.json and projection-4.json.
project-bench-shared:
    mkdir -p docs/results
    for n in 1 4; do cargo run --release -q -p flyrtech-lab -- project-bench --projectors $n --lag-secs 60 --json docs/results/projection-$n.json; done

# The incident five times for the strategies whose goals are ratios of the serial bound (run-to-run noise on this VM is larger than their margins); writes docs/results/incident-runs.txt.
incident-runs:
    mkdir -p docs/results
    for i in 1 2 3 4 5; do cargo run --release -q -p flyrtech-lab -- compare --strategies local-lock,optimistic,redlock --instances 1 --scenario incident 2>/dev/null | grep -E "^│ (local-lock|optimistic|redlock) "; cargo run --release -q -p flyrtech-lab -- compare --strategies optimistic,redlock --scenario incident 2>/dev/null | grep -E "^│ (optimistic|redlock) "; done | tee docs/results/incident-runs.txt

# Mutation testing (`cargo install --locked cargo-mutants`) over core, the checker and the pure parts of infrastructure (key naming, the outbox and hash codecs, the reply decoders); hours on two cores, so CI does not run it (docs/testing.md). Writes target/mutants-core/ and target/mutants-infra/.
mutants:
    cargo mutants -p flyrtech-core -p flyrtech-lab --timeout 30 -j 2 -o target/mutants-core
    cargo mutants -p flyrtech-infrastructure --timeout 60 -j 2 -o target/mutants-infra -f crates/infrastructure/src/keys.rs -f crates/infrastructure/src/store/outbox.rs -f crates/infrastructure/src/store/hash_fields.rs -f crates/infrastructure/src/store/document.rs -f crates/infrastructure/src/store/update_script.rs -f crates/infrastructure/src/connection/error.rs

fmt:
    cargo fmt --all

lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items

# serve, the relay and a load for DURATION (default 10m): every process' RSS, Redis' memory, the event stream and
# the outbox backlog, nobody scraping /metrics; writes docs/results/soak.{json,svg,png} (docs/reliability.md, Resources).
soak DURATION="10m":
    mkdir -p docs/results
    cargo build --release -p flyrtech-api
    cargo run --release -p flyrtech-lab -- soak --duration {{DURATION}} --bus-max-len 200000 --json docs/results/soak.json --chart docs/results/soak.svg > /dev/null

# What CI runs.
ci:
    bash .ci/run

# The service's container image (deploy/container/build.sh): the release binary, stripped, on a slim Debian base (made from Debian's packages where no registry answers); prints its size.
image TAG="flyrtech:dev":
    deploy/container/build.sh {{TAG}}

# The whole pipeline on this host's Docker (deploy/compose): the image, then the stack; serve on :8081 and :8082, Prometheus on :9090. The stack's API key: `just key`.
up:
    deploy/container/build.sh
    BASE=$(docker image inspect debian:bookworm-slim >/dev/null 2>&1 && echo debian:bookworm-slim || echo flyrtech/debian:bookworm) docker-compose -f deploy/compose/docker-compose.yml -p flyrtech build
    docker-compose -f deploy/compose/docker-compose.yml -p flyrtech up --detach

# The compose stack's API key (admin scope), for verify --api-key or curl.
key:
    docker run --rm --volume flyrtech_secrets:/secrets:ro --entrypoint cat flyrtech:dev /secrets/token

# Takes the compose stack down with its volumes.
down:
    docker-compose -f deploy/compose/docker-compose.yml -p flyrtech down --volumes --remove-orphans
