#!/usr/bin/env bash
# Builds the images (no registry), starts the cluster and waits until
# `ephemera status` through 127.0.0.1:7101 shows a Raft leader and both agents
# up. Rerunnable: an already-running cluster is left as is (compose recreates
# only containers whose image or config changed).
#
#   ./up.sh                   build + start + wait
#   EPHEMERA_NO_BUILD=1 ./up.sh   start with the images already built
#   EPHEMERA_UP_TIMEOUT=180 ./up.sh   seconds to wait for the cluster (default 120)
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
project="${EPHEMERA_PROJECT:-ephemera}"   # also names containers and networks
export EPHEMERA_PROJECT="$project"
# The collector service when its image exists (cargo xtask images builds it).
compose_files=(-f docker-compose.yml)
if [[ -n "$(docker images -q "ephemera/otel-collector:${EPHEMERA_TAG:-dev}" 2>/dev/null)" ]]; then
    compose_files+=(-f docker-compose.otel.yml)
fi
endpoint="${EPHEMERA_UP_ENDPOINT:-https://127.0.0.1:${EPHEMERA_PORT_CONTROLLER_1:-7101}}"
timeout="${EPHEMERA_UP_TIMEOUT:-120}"
data_root="${EPHEMERA_DATA_ROOT:-/var/lib/ephemera}"
target_dir="${EPHEMERA_TARGET_DIR:-$(cd "$here/.." && pwd)/target-static}"
nodes=(node-1 node-2)
die() { echo "up: ERROR: $*" >&2; exit 1; }
log() { echo "up: $*" >&2; }

command -v docker-compose >/dev/null || die "docker-compose (v1) not found"
t0=$SECONDS
if [[ "${EPHEMERA_NO_BUILD:-0}" != 1 ]]; then
    (cd "$here/.." && cargo xtask images) || die "building the images failed (cargo xtask images)"
fi
for img in "ephemera/ephemera:${EPHEMERA_TAG:-dev}" "ephemera/python:${EPHEMERA_TAG:-dev}"; do
    docker image inspect "$img" >/dev/null 2>&1 || die "image $img is missing: run cargo xtask images"
done

# Agent data dirs live at the same path on the host and in the containers.
for n in "${nodes[@]}"; do mkdir -p "$data_root/$n"; done

# The CLI: the static binary from the build, else the image over the host network.
cli=("$target_dir/x86_64-unknown-linux-gnu/release/ephemera")
[[ -x "${cli[0]}" ]] || cli=(docker run --rm --network host -v "$data_root:$data_root" "ephemera/ephemera:${EPHEMERA_TAG:-dev}")

# Credentials: the cluster CA (once) and each member's certificate in its
# own directory, which only that member's container mounts (read-only, at
# /tls). Kept across restarts; renewed when close to expiry.
tls="$data_root/tls"
"${cli[@]}" cluster init --ca-dir "$tls/ca" >/dev/null || die "creating the cluster CA in $tls/ca"
for i in 1 2 3; do
    "${cli[@]}" cluster issue --ca-dir "$tls/ca" --controller "$i" --san "controller-$i" \
        --out "$tls/controller-$i" >/dev/null || die "issuing controller $i's certificate"
done
for n in "${nodes[@]}"; do
    "${cli[@]}" cluster issue --ca-dir "$tls/ca" --agent "$n" --san "agent-${n#node-}" \
        --out "$tls/agent-$n" >/dev/null || die "issuing $n's certificate"
done
export EPHEMERA_CA="$tls/ca/ca.pem"

# One admin token for the three controllers: EPHEMERA_ADMIN_TOKEN, else the
# one kept in the data root (down.sh removes it), else a new one. The CLI
# finds it in its credentials file, under each controller's endpoint.
token_file="$data_root/admin-token"
if [[ -z "${EPHEMERA_ADMIN_TOKEN:-}" ]]; then
    if [[ ! -s "$token_file" ]]; then
        (umask 077; python3 -c 'import secrets; print("eph_" + secrets.token_hex(32))' >"$token_file")
    fi
    EPHEMERA_ADMIN_TOKEN="$(cat "$token_file")"
fi
export EPHEMERA_ADMIN_TOKEN
export EPHEMERA_TOKEN="$EPHEMERA_ADMIN_TOKEN"
creds="${EPHEMERA_CREDENTIALS:-${HOME:-/root}/.config/ephemera/credentials.json}"
endpoints=()
for i in 1 2 3; do v="EPHEMERA_PORT_CONTROLLER_$i"; endpoints+=("https://127.0.0.1:${!v:-710$i}"); done
python3 - "$creds" "$EPHEMERA_ADMIN_TOKEN" "$EPHEMERA_CA" "${endpoints[@]}" <<'PY' || log "could not record the token in $creds (use EPHEMERA_TOKEN)"
import json, os, sys
path, token, ca, endpoints = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    creds = json.load(open(path))
except (OSError, ValueError):
    creds = {}
for e in endpoints:
    creds[e] = {"token": token, "ca": ca}
os.makedirs(os.path.dirname(path), exist_ok=True)
tmp = path + ".tmp"
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump(creds, f, indent=2)
os.replace(tmp, path)
PY

t_up=$SECONDS
log "starting the cluster (docker-compose -p $project ${compose_files[*]} up -d)"
docker-compose -p "$project" "${compose_files[@]}" up -d || die "docker-compose up failed; see: docker-compose -p $project logs"

ready() { # prints why not, or nothing when ready
    local json c h
    # Every container with a health check must pass it (after a restart the
    # replicated node table may still say "up" for an agent that is not back yet).
    for c in $(docker-compose -p "$project" "${compose_files[@]}" ps -q); do
        h="$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "$c")"
        if [[ "$h" != *" healthy" ]]; then echo "container ${h#/}"; return 1; fi
    done
    json="$("${cli[@]}" --endpoint "$endpoint" status --json 2>&1)" || { echo "status: ${json##*$'\n'}"; return 1; }
    python3 - "$json" "${nodes[@]}" <<'PY'
import json, sys
try:
    s = json.loads(sys.argv[1])
except ValueError:
    print("unexpected status output: %s" % sys.argv[1][:200]); sys.exit(1)
want = sys.argv[2:]
up = {n["node_id"] for n in s.get("nodes", []) if n.get("up")}
missing = [n for n in want if n not in up]
if not s.get("leader_id"):
    print("no leader yet"); sys.exit(1)
if missing:
    print("leader %s; agents not up yet: %s" % (s["leader_id"], ", ".join(missing))); sys.exit(1)
PY
}

deadline=$((SECONDS + timeout))
last=""
while :; do
    if why="$(ready)"; then break; fi
    if [[ "$why" != "$last" ]]; then log "waiting: $why"; last="$why"; fi
    for c in $(docker-compose -p "$project" "${compose_files[@]}" ps -q); do
        state="$(docker inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}}' "$c")"
        case "$state" in
            *" exited "*|*" dead "*) docker logs --tail 30 "$c" >&2 || true; die "container ${state%% *} stopped ($state)";;
        esac
    done
    (( SECONDS < deadline )) || { docker-compose -p "$project" "${compose_files[@]}" ps >&2; die "the cluster was not ready within ${timeout}s (last: $why); logs: docker-compose -p $project logs"; }
    sleep 1
done

log "cluster ready in $((SECONDS - t_up))s (total $((SECONDS - t0))s including the build)"
"${cli[@]}" --endpoint "$endpoint" status
cat <<EOF

  export EPHEMERA_ENDPOINT=$endpoint
  (the admin token and the CA are in $creds for the three endpoints; the
   token is also in $token_file, the CA certificate in $EPHEMERA_CA)
  stop with: $here/down.sh
EOF
