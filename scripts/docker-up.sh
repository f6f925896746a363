#!/usr/bin/env bash
# Make the Docker engine usable: install Debian's docker.io and start dockerd
# only when `docker info` does not already answer. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[docker-up] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

# A live dockerd: not a zombie, and not one that is exiting after a kill -9.
live_dockerd() {
  local pid state
  for pid in $(pgrep -x dockerd 2>/dev/null); do
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]; then return 0; fi
  done
  return 1
}

start_dockerd() {
  # Register gVisor before dockerd reads its configuration, when it is wanted and installed: runtimes
  # would reload on SIGHUP, experimental mode (for checkpoints) only on a start.
  if [ "${CODEINTERP_RUNTIME:-}" = runsc ] && command -v runsc >/dev/null 2>&1; then
    log "registering runsc in /etc/docker/daemon.json: $(python3 scripts/docker_runtime.py register)"
  fi
  # A dockerd killed without cleanup leaves its pid file behind, and a new
  # dockerd refuses to start while the file exists.
  if [ -f /var/run/docker.pid ]; then log "removing stale /var/run/docker.pid"; rm -f /var/run/docker.pid; fi
  log "starting dockerd (log: /var/log/dockerd.log)"
  # setsid: dockerd must outlive the shell (and the CI step) that started it.
  setsid nohup dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
}

if live_dockerd; then
  log "dockerd is running; waiting for it to answer"
else
  start_dockerd
fi

restarted=0
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    log "docker is ready"
    exit 0
  fi
  if ! live_dockerd && [ "$restarted" -lt 2 ]; then
    restarted=$((restarted + 1))
    sleep 1
    start_dockerd
  fi
  sleep 0.5
done
log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
