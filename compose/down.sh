#!/usr/bin/env bash
# Stops the cluster and removes its containers, network and volumes (the
# controllers' Raft state) and the agents' host data dirs. Images stay.
#
#   ./down.sh               everything
#   ./down.sh --keep-data   keep volumes and agent data dirs (restart with ./up.sh)
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
project="${EPHEMERA_PROJECT:-ephemera}"   # also names containers and networks
export EPHEMERA_PROJECT="$project"
# Both files, so the collector (if it ran) goes too; the file needs no image.
compose_files=(-f docker-compose.yml -f docker-compose.otel.yml)
# The file requires the token; tearing down does not use it.
export EPHEMERA_ADMIN_TOKEN="${EPHEMERA_ADMIN_TOKEN:-unused-by-down}"
data_root="${EPHEMERA_DATA_ROOT:-/var/lib/ephemera}"
nodes=(node-1 node-2)
keep=0
[[ "${1:-}" == --keep-data ]] && keep=1

if [[ $keep == 1 ]]; then
    docker-compose -p "$project" "${compose_files[@]}" down --remove-orphans
else
    docker-compose -p "$project" "${compose_files[@]}" down --volumes --remove-orphans
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
    rm -f -- "$data_root/admin-token"
    # The cluster CA and every member's certificate: a new cluster, new CA.
    if [[ -n "$data_root" && -d "$data_root/tls" ]]; then rm -rf -- "$data_root/tls"; fi
    creds="${EPHEMERA_CREDENTIALS:-${HOME:-/root}/.config/ephemera/credentials.json}"
    if [[ -f "$creds" ]]; then
        endpoints=()
        for i in 1 2 3; do v="EPHEMERA_PORT_CONTROLLER_$i"; endpoints+=("https://127.0.0.1:${!v:-710$i}"); done
        python3 - "$creds" "${endpoints[@]}" <<'PY' || true
import json, os, sys
path, endpoints = sys.argv[1], sys.argv[2:]
creds = json.load(open(path))
for e in endpoints:
    creds.pop(e, None)
tmp = path + ".tmp"
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump(creds, f, indent=2)
os.replace(tmp, path)
PY
    fi
    rmdir "$data_root" 2>/dev/null || true
fi
echo "down: cluster $project removed$([[ $keep == 1 ]] && echo ' (volumes and data kept)')"
