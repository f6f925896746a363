#!/usr/bin/env bash
# Make gVisor usable as a Docker runtime: install runsc (Debian's package), register it in
# /etc/docker/daemon.json with the args codeinterp needs (merged into what is there), and make the
# running dockerd load it. Safe to run repeatedly; each step is skipped when already done.
#
# Runtimes reload on SIGHUP. Experimental mode (gVisor's checkpoint needs it) does not: the API keeps
# what dockerd started with. dockerd is restarted for it only when no container at all is running
# (a restart without live-restore stops every container); otherwise this says so and carries on.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[runsc-up] %s\n' "$*" >&2; }

if ! command -v runsc >/dev/null 2>&1; then
  log "installing runsc (gVisor) from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f /tmp/.codeinterp-apt-updated ]; then apt-get update -qq && touch /tmp/.codeinterp-apt-updated; fi
  apt-get install -y -qq runsc >/dev/null
fi

# Writes the file only when it changes; docker-up.sh registers it too before it starts a dockerd.
changed=$(python3 scripts/docker_runtime.py register)
CODEINTERP_RUNTIME=runsc scripts/docker-up.sh

dockerd_pid() { cat /var/run/docker.pid 2>/dev/null || pgrep -xo dockerd; }

registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | python3 -c '
import json, sys
runsc = json.load(sys.stdin).get("runsc") or {}
sys.exit(0 if "--network=none" in (runsc.get("runtimeArgs") or []) else 1)'
}

if [ "$changed" = changed ] || ! registered; then
  log "reloading dockerd's configuration (SIGHUP)${changed:+: daemon.json $changed}"
  kill -HUP "$(dockerd_pid)"
  for _ in $(seq 1 50); do registered && break; sleep 0.2; done
  registered || { log "dockerd did not pick up the runsc runtime; see /var/log/dockerd.log"; exit 1; }
fi

if [ "$(python3 scripts/docker_runtime.py experimental)" != true ]; then
  running=$(docker ps -q | wc -l)
  if [ "$running" -ne 0 ]; then
    log "dockerd needs a restart for experimental mode (checkpoints), but $running container(s) run;" \
        "skipped. Restart it later when idle: this script does it."
  elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
    log "restarting docker (systemd) for experimental mode"
    systemctl restart docker
  else
    pid=$(dockerd_pid)
    log "restarting dockerd (pid $pid) for experimental mode"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "dockerd $pid did not exit within 30 s"; exit 1; fi
    scripts/docker-up.sh
  fi
fi

registered || { log "runsc is not registered with dockerd after setup"; exit 1; }
log "runsc $(runsc --version 2>/dev/null | head -1 | awk '{print $3}') is registered with Docker" \
    "(experimental: $(python3 scripts/docker_runtime.py experimental))"
