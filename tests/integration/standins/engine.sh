#!/bin/sh
# A second Docker engine on this machine, standing in for a remote one (docs/scale-out.md):
# its own socket, data root, exec root, pid file and bridge; no iptables of its own
# (published ports go through docker-proxy on 127.0.0.1), nothing leaves the machine.
#   tests/integration/standins/engine.sh start [DIR]   -> prints the engine's URL
#   tests/integration/standins/engine.sh load TAG...   -> copies images from the local engine
#   tests/integration/standins/engine.sh stop [DIR]
set -eu
dir=${2:-/tmp/xsmig-engine2}
bridge=xsmig-br2
sock="$dir/docker.sock"
case "${1:-}" in
start)
  mkdir -p "$dir/data" "$dir/exec"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
    ip addr add 10.213.7.1/24 dev "$bridge"
    ip link set "$bridge" up
  fi
  if ! DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
    nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
      -H "unix://$sock" --bridge "$bridge" --iptables=false --ip-masq=false \
      --ip6tables=false --ip=127.0.0.1 >"$dir/dockerd.log" 2>&1 &
    i=0
    until DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; do
      i=$((i + 1)); [ $i -lt 60 ] || { tail -20 "$dir/dockerd.log" >&2; exit 1; }
      sleep 1
    done
  fi
  echo "unix://$sock"
  ;;
load)
  shift
  for tag in "$@"; do
    docker save "$tag" | DOCKER_HOST="unix://$sock" docker load -q
  done
  ;;
stop)
  if [ -s "$dir/dockerd.pid" ]; then
    kill "$(cat "$dir/dockerd.pid")" 2>/dev/null || true
    i=0; while [ -e "$dir/dockerd.pid" ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
  fi
  ip link del "$bridge" 2>/dev/null || true
  ;;
*) echo "usage: $0 start|load TAG...|stop [DIR]" >&2; exit 2 ;;
esac
