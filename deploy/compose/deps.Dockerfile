# The servers the stack runs beside flyrtech, from Debian's packages: redis-server, nats-server,
# PostgreSQL and Prometheus in one image, each service of docker-compose.yml running one of them.
# On a host that can pull public images, redis:7, nats:2.10, postgres:15 and prom/prometheus do
# the same (docs/deployment.md, "The compose stack"); this image is what a host without a
# registry (CI here) builds instead.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        redis-server redis-tools nats-server postgresql prometheus ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/*
COPY postgres.sh /usr/local/bin/flyrtech-postgres
COPY redis-cluster.sh /usr/local/bin/flyrtech-redis-cluster
