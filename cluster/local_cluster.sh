#!/usr/bin/env bash
# A multi-node Ray cluster on this one machine, all on 127.0.0.1, for trying things out:
# a head plus two worker nodes, each a separate raylet with its own resources. The workers
# declare no GPUs but a custom "teacher" resource each, so you can watch actors spread over
# nodes the way GPU actors would on a real cluster.
#
#   cluster/local_cluster.sh start     # prints the dashboard address
#   logitcache submit --address http://127.0.0.1:8265 -- build --teacher smollm2-135m \
#       --corpus 'docs/*.md' --out /tmp/lc-cache --workers 2 --max-tokens 20000
#   cluster/local_cluster.sh status
#   cluster/local_cluster.sh stop      # stops only the nodes this script started
#
# Token authentication is on (RAY_AUTH_MODE=token); the token is generated on first start
# into ~/.ray/auth_token (override with RAY_AUTH_TOKEN_PATH), where `logitcache submit`
# finds it. Environment knobs: LC_RAY_PORT (6379), LC_DASHBOARD_PORT (8265), LC_CLIENT_PORT (10001),
# LC_NODE_CPUS (1 per node), LC_STATE_DIR (/tmp/logitcache-local-cluster).
set -euo pipefail

PORT="${LC_RAY_PORT:-6379}"
DASHBOARD_PORT="${LC_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${LC_CLIENT_PORT:-10001}"
NODE_CPUS="${LC_NODE_CPUS:-1}"
STATE_DIR="${LC_STATE_DIR:-/tmp/logitcache-local-cluster}"
RAY="${RAY:-ray}"
export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0

token_file() { echo "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"; }

start() {
  mkdir -p "$STATE_DIR"
  if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "$(token_file)" ]]; then
    "$RAY" get-auth-token --generate >/dev/null   # never echo the token
  fi
  echo "starting head on 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASHBOARD_PORT)"
  "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --ray-client-server-port="$CLIENT_PORT" \
    --num-cpus="$NODE_CPUS" --num-gpus=0 --resources='{"head": 1}' \
    --temp-dir="$STATE_DIR/ray" --disable-usage-stats >"$STATE_DIR/head.log" 2>&1 \
    || { cat "$STATE_DIR/head.log"; exit 1; }
  for i in 1 2; do
    echo "starting worker node $i"
    "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 \
      --num-cpus="$NODE_CPUS" --num-gpus=0 \
      --resources="{\"teacher\": 1, \"worker_node_$i\": 1}" \
      >"$STATE_DIR/worker$i.log" 2>&1 || { cat "$STATE_DIR/worker$i.log"; exit 1; }
  done
  echo "cluster up: 3 nodes; RAY_ADDRESS=127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT"
}

status() {
  "$RAY" status --address="127.0.0.1:$PORT"
}

ours() {
  # Processes of this cluster: its temp dir on their command line, or (the Ray client proxy)
  # its GCS address.
  { pgrep -f -- "$STATE_DIR/ray"; pgrep -f -- "ray.util.client.server --address=[^ ]*:$PORT( |$)"; } \
    2>/dev/null | sort -u || true
}

stop() {
  # `ray stop` would stop every Ray process on the machine (other users' too): stop only the
  # processes that belong to this cluster.
  local pids
  pids=$(ours)
  if [[ -z "$pids" ]]; then
    echo "no local cluster running (state dir $STATE_DIR)"
    return 0
  fi
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 1 20); do
    [[ -z "$(ours)" ]] && { echo "stopped"; return 0; }
    sleep 0.5
  done
  # shellcheck disable=SC2046
  kill -9 $(ours) 2>/dev/null || true
  echo "stopped (forced)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
