#!/usr/bin/env bash
# A second Docker engine on this machine that looks like another host: for tests and bench/remote.py.
#
#   scripts/remote-dockerd.sh up      # idempotent; prints DOCKER_HOST=... and DOCKER_CERT_PATH=... on stdout
#   scripts/remote-dockerd.sh down    # removes everything `up` made
#   scripts/remote-dockerd.sh status  # exit 0 when the engine answers over TLS
#
# `up` makes a network namespace with a veth pair in a private /30 (the host end and the namespace end,
# nothing routed beyond them), a CA with a server and a client certificate (openssl), and a dockerd in
# the namespace with its own data root, exec root, pid file and containerd, listening only on the
# namespace's address with --tlsverify. Its runtimes are the main daemon's (read from
# /etc/docker/daemon.json, which is never written). Its data root is a directory under
# CODEINTERP_REMOTE_DIR: this machine's kernel has no project quotas (neither ext4's nor XFS's), so
# sandboxes there get a tmpfs /mnt/data (see sandbox/_volumes.py).
# The kernel image is copied in with `docker save | docker load`: no registry is involved.
#
# Settings (environment): CODEINTERP_REMOTE_DIR (default /tmp/codeinterp-remote), CODEINTERP_REMOTE_NETNS
# (ci-remote), CODEINTERP_REMOTE_SUBNET (10.231.7; .1 is this host's end, .2 the engine's),
# CODEINTERP_REMOTE_IMAGE (default: the kernel image of this checkout; empty string: load none).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${CODEINTERP_REMOTE_DIR:-/tmp/codeinterp-remote}
case "$DIR" in
  /tmp/?*|/var/tmp/?*|/run/?*) ;;  # `down` removes it whole: only a directory of its own under a scratch root
  *) echo "remote-dockerd.sh: CODEINTERP_REMOTE_DIR must be under /tmp, /var/tmp or /run, not '$DIR'" >&2; exit 2 ;;
esac
NS=${CODEINTERP_REMOTE_NETNS:-ci-remote}
NET=${CODEINTERP_REMOTE_SUBNET:-10.231.7}
HOST_IF="${NS:0:9}-h"   # interface names are at most 15 bytes
NS_IF="${NS:0:9}-n"
HOST_IP="$NET.1"
ENGINE_IP="$NET.2"
PORT=2376
URL="tcp://$ENGINE_IP:$PORT"
CERTS="$DIR/certs"
PIDFILE="$DIR/exec/dockerd.pid"

log() { printf '[remote-dockerd] %s\n' "$*" >&2; }

# The engine is this machine's: never reach it, or load an image into it, through a proxy.
export NO_PROXY="$ENGINE_IP${NO_PROXY:+,$NO_PROXY}" no_proxy="$ENGINE_IP${no_proxy:+,$no_proxy}"

remote() { docker -H "$URL" --tlsverify --tlscacert "$CERTS/ca.pem" --tlscert "$CERTS/cert.pem" \
                  --tlskey "$CERTS/key.pem" "$@"; }

answers() { timeout 10 docker -H "$URL" --tlsverify --tlscacert "$CERTS/ca.pem" --tlscert "$CERTS/cert.pem" \
              --tlskey "$CERTS/key.pem" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

dockerd_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  # Only our dockerd: a pid file outliving a crash may name a reused pid.
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--data-root $DIR/"; then
    echo "$pid"
  fi
}

make_netns() {
  if ! ip netns list | grep -qw "$NS"; then
    log "network namespace $NS"
    ip netns add "$NS"
  fi
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NS_IF"
    ip link set "$NS_IF" netns "$NS"
  fi
  ip addr replace "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NS" ip addr replace "$ENGINE_IP/30" dev "$NS_IF"
  ip netns exec "$NS" ip link set "$NS_IF" up
  ip netns exec "$NS" ip link set lo up
}

make_certs() {
  [ -f "$CERTS/cert.pem" ] && [ -f "$CERTS/server-cert.pem" ] && return 0
  log "TLS certificates in $CERTS"
  mkdir -p "$CERTS"
  chmod 700 "$CERTS"
  (
    cd "$CERTS"
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=codeinterp test CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$ENGINE_IP" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$ENGINE_IP" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 7 \
      -extfile server.ext -out server-cert.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=codeinterp gateway" -keyout key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 7 \
      -extfile client.ext -out cert.pem 2>/dev/null
    rm -f server.csr client.csr server.ext client.ext
    chmod 600 ./*key.pem
  )
}

write_config() {
  # The main daemon's runtimes (gVisor's runsc with its args), and nothing else of its configuration.
  python3 - "$DIR/daemon.json" <<'EOF'
import json, sys
try:
    main = json.load(open("/etc/docker/daemon.json"))
except (OSError, ValueError):
    main = {}
config = {"runtimes": main.get("runtimes") or {}, "experimental": bool(main.get("experimental"))}
with open(sys.argv[1], "w") as out:
    json.dump(config, out, indent=2)
EOF
}

start_dockerd() {
  if [ -n "$(dockerd_pid)" ]; then return 0; fi
  mkdir -p "$DIR/exec"
  log "starting dockerd in $NS on $URL (log: $DIR/dockerd.log)"
  # --bridge none / --iptables false: sandboxes run with --network none, and nothing here may touch
  # this machine's firewall. --cgroup-parent keeps its containers apart from the main daemon's.
  # nsenter --net, not `ip netns exec`: that one also makes a mount namespace with /sys mounted anew,
  # which hides the cgroup hierarchy dockerd needs. setsid: the engine outlives the shell (and the
  # test) that started it, until `down`.
  setsid nohup nsenter --net="/var/run/netns/$NS" dockerd \
    --config-file "$DIR/daemon.json" \
    --data-root "$DIR/docker" --exec-root "$DIR/exec" --pidfile "$PIDFILE" \
    -H "$URL" --tlsverify --tlscacert "$CERTS/ca.pem" \
    --tlscert "$CERTS/server-cert.pem" --tlskey "$CERTS/server-key.pem" \
    --bridge none --iptables=false --ip6tables=false --ip-masq=false \
    --cgroup-parent codeinterp-remote --storage-driver overlay2 \
    >>"$DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    answers && return 0
    sleep 0.5
  done
  log "the engine did not answer on $URL within 60 s; see $DIR/dockerd.log"
  tail -n 20 "$DIR/dockerd.log" >&2 || true
  return 1
}

load_image() {
  local image=${CODEINTERP_REMOTE_IMAGE-}
  if [ -z "${CODEINTERP_REMOTE_IMAGE+set}" ]; then
    image=$(.venv/bin/python -c 'from sandbox._image import default_image; print(default_image())' 2>/dev/null \
            || python3 -c 'from sandbox._image import default_image; print(default_image())')
  fi
  [ -n "$image" ] || return 0
  if remote image inspect "$image" >/dev/null 2>&1; then return 0; fi
  docker image inspect "$image" >/dev/null 2>&1 || { log "image $image is not on the main engine; build it first"; return 1; }
  log "loading $image into the engine (docker save | docker load)"
  docker save "$image" | remote load -q >&2
}

up() {
  command -v dockerd openssl ip >/dev/null
  make_netns
  make_certs
  write_config
  start_dockerd
  load_image
  echo "DOCKER_HOST=$URL"
  echo "DOCKER_CERT_PATH=$CERTS"
}

down() {
  local pid
  pid=$(dockerd_pid)
  if [ -n "$pid" ]; then
    if answers; then
      ids=$(remote ps -aq 2>/dev/null || true)
      [ -z "$ids" ] || remote rm -f -v $ids >/dev/null 2>&1 || true
      remote volume prune -f >/dev/null 2>&1 || true
    fi
    log "stopping dockerd $pid"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -CONT "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  # Its containerd and shims are gone with it; anything mounted under the data or exec root is not.
  if [ -d "$DIR" ]; then
    { grep -E " ($DIR)/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r mnt; do
      umount -l "$mnt" 2>/dev/null || true
    done
  fi
  ip link del "$HOST_IF" 2>/dev/null || true
  if ip netns list | grep -qw "$NS"; then ip netns del "$NS"; fi
  rm -rf --one-file-system "$DIR"
  log "down"
}

status() {
  if answers; then
    echo "up: $URL (dockerd $(dockerd_pid), data root $DIR/docker)"
  else
    echo "down"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
