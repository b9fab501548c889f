#!/usr/bin/env bash
# Makes the stack's Redis Cluster once: the nodes named in $@ (host:port), three primaries with a
# replica each, then waits until every node says the cluster is ok. A cluster already made is
# left as it is (the stack brought up again on its volumes).
set -euo pipefail
first=${1%:*}
for node in "$@"; do
    until redis-cli -h "${node%:*}" -p "${node#*:}" ping >/dev/null 2>&1; do sleep 0.2; done
done
if ! redis-cli -h "$first" cluster info | grep -q 'cluster_known_nodes:[2-9]'; then
    # redis-cli wants addresses, not names.
    addresses=()
    for node in "$@"; do
        addresses+=("$(getent hosts "${node%:*}" | awk '{ print $1 }'):${node#*:}")
    done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes
fi
for node in "$@"; do
    until redis-cli -h "${node%:*}" -p "${node#*:}" cluster info | grep -q 'cluster_state:ok'; do
        sleep 0.2
    done
done
echo "the Redis Cluster is ok"
