#!/bin/sh
# A second Docker engine on this machine, standing in for a remote one (docs/scale-out.md):
# its own socket, data root, exec root, pid file and bridge; no iptables of its own
# (published ports go through docker-proxy on 127.0.0.1), nothing leaves the machine.
#   tests/integration/standins/engine.sh start [DIR]   -> prints the engine's URL
#   tests/integration/standins/engine.sh start-tls [DIR] -> the same engine, also on
#       tcp://127.0.0.1:PORT with mutual TLS as a remote engine is reached; prints that
#       URL; the client's ca.pem, cert.pem and key.pem are in DIR/client (DOCKER_CERT_PATH)
#   tests/integration/standins/engine.sh load TAG...   -> copies images from the local engine
#   tests/integration/standins/engine.sh stop [DIR]
set -eu
dir=${2:-/tmp/xsmig-engine2}
bridge=xsmig-br2
sock="$dir/docker.sock"
tls_port=${XSMIG_ENGINE2_TLS_PORT:-23769}
certs() {  # a CA, the engine's certificate for 127.0.0.1, a client certificate
  c="$dir/certs"; mkdir -p "$c" "$dir/client"
  [ -s "$dir/client/key.pem" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=xsmig-test-ca \
    -keyout "$c/ca-key.pem" -out "$c/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$c/server-key.pem" \
    -out "$c/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$c/server.ext"
  openssl x509 -req -in "$c/server.csr" -CA "$c/ca.pem" -CAkey "$c/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$c/server.ext" -out "$c/server.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=xsmig-runner -keyout "$dir/client/key.pem" \
    -out "$c/client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > "$c/client.ext"
  openssl x509 -req -in "$c/client.csr" -CA "$c/ca.pem" -CAkey "$c/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$c/client.ext" -out "$dir/client/cert.pem" 2>/dev/null
  cp "$c/ca.pem" "$dir/client/ca.pem"
}
case "${1:-}" in
start|start-tls)
  mkdir -p "$dir/data" "$dir/exec"
  tls=""
  if [ "$1" = start-tls ]; then
    certs
    tls="-H tcp://127.0.0.1:$tls_port --tlsverify --tlscacert $dir/certs/ca.pem
      --tlscert $dir/certs/server.pem --tlskey $dir/certs/server-key.pem"
  fi
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
    ip addr add 10.213.7.1/24 dev "$bridge"
    ip link set "$bridge" up
  fi
  if ! DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
    nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
      -H "unix://$sock" $tls --bridge "$bridge" --iptables=false --ip-masq=false \
      --ip6tables=false --ip=127.0.0.1 >"$dir/dockerd.log" 2>&1 &
    i=0
    until DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; do
      i=$((i + 1)); [ $i -lt 60 ] || { tail -20 "$dir/dockerd.log" >&2; exit 1; }
      sleep 1
    done
  fi
  if [ -n "$tls" ]; then echo "tcp://127.0.0.1:$tls_port"; else echo "unix://$sock"; fi
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
