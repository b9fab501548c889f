# Common tasks. `cargo install just` provides `just`; every recipe is a plain cargo command.

# Run the whole suite (starts its own redis-server processes).
test:
    cargo test --workspace

# Reproduce the incident and compare every strategy (private redis-server unless FLYRTECH_REDIS_URL is set).
compare *ARGS:
    cargo run --release -p flyrtech-api -- compare --strategies all --scenario incident {{ARGS}}

# Run the HTTP API. Not built yet: `flyrtech serve` arrives with issue 4.
serve:
    @echo "flyrtech serve is not built yet (issue 4); see 'cargo run -p flyrtech-api -- --help'" && exit 1

# The full comparison (extended by the lab issue).
bench:
    cargo run --release -p flyrtech-api -- compare --strategies all --scenario incident

fmt:
    cargo fmt --all

lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    bash .ci/run
