#!/usr/bin/env bash
# Make the Docker engine usable: install Debian's docker.io and start dockerd
# only when `docker info` does not already answer. Safe to run repeatedly.
set -euo pipefail

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

# A dockerd killed without cleanup leaves its pid file behind, and a new
# dockerd refuses to start while the file names a pid, live or not.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm" 2>/dev/null; then
    log "dockerd (pid $pid) is running; waiting for it to answer"
  else
    log "removing stale $pidfile"
    rm -f "$pidfile"
  fi
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  # setsid: dockerd must outlive the shell (and the CI step) that started it.
  setsid nohup dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
fi

for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    log "docker is ready"
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
