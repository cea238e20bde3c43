#!/usr/bin/env bash
# Stops the cluster and removes its containers, network and volumes (the
# controllers' Raft state) and the agents' host data dirs. Images stay.
#
#   ./down.sh               everything
#   ./down.sh --keep-data   keep volumes and agent data dirs (restart with ./up.sh)
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
project=ephemera
data_root="${EPHEMERA_DATA_ROOT:-/var/lib/ephemera}"
nodes=(node-1 node-2)
keep=0
[[ "${1:-}" == --keep-data ]] && keep=1

if [[ $keep == 1 ]]; then
    docker-compose -p "$project" down --remove-orphans
else
    docker-compose -p "$project" down --volumes --remove-orphans
fi
# Function containers the agents started as siblings (docker runtime) are not
# compose's. The agent labels them ephemera.owner=<node id>-<first 8 hex of
# sha256(absolute data dir)> (AgentConfig::cgroup_name); remove what is left.
for n in "${nodes[@]}"; do
    owner="$n-$(printf '%s' "$data_root/$n" | sha256sum | cut -c1-8)"
    ids="$(docker ps -aq --filter "label=ephemera.owner=$owner")"
    if [[ -n "$ids" ]]; then docker rm -f $ids >/dev/null; fi
done
if [[ $keep == 0 ]]; then
    for n in "${nodes[@]}"; do
        d="$data_root/$n"
        # Only our own per-node dirs, never the root itself.
        if [[ -n "$data_root" && "$d" == */node-* && -d "$d" ]]; then rm -rf -- "$d"; fi
    done
    rmdir "$data_root" 2>/dev/null || true
fi
echo "down: cluster $project removed$([[ $keep == 1 ]] && echo ' (volumes and data kept)')"
