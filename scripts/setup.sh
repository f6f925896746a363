#!/usr/bin/env bash
# Everything a fresh Debian machine (as root) needs to run and test codeinterp:
# a running Docker engine, a virtualenv with the project, and the kernel image; with --runsc (or
# CODEINTERP_RUNTIME=runsc, or CODEINTERP_TEST_RUNTIME=runsc) also gVisor, registered with Docker.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

runsc=0
if [ "${CODEINTERP_RUNTIME:-}" = runsc ] || [ "${CODEINTERP_TEST_RUNTIME:-}" = runsc ]; then runsc=1; fi
for arg in "$@"; do
  case "$arg" in
    --runsc) runsc=1 ;;
    *) printf 'usage: scripts/setup.sh [--runsc]\n' >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f /tmp/.codeinterp-apt-updated ]; then apt-get update -qq && touch /tmp/.codeinterp-apt-updated; fi
  apt-get install -y -qq "$@" >/dev/null
}

if [ "$runsc" = 1 ]; then scripts/runsc-up.sh; else scripts/docker-up.sh; fi

# PostgreSQL's server binaries, for the store tests (scripts/postgres.sh runs throwaway clusters); no
# cluster of Debian's own is created or started.
if [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
  log "installing postgresql-15 (server binaries only)"
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
    || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  apt_install postgresql-15
fi

# debootstrap makes the base image when no registry can be pulled from.
command -v debootstrap >/dev/null 2>&1 || { log "installing debootstrap"; apt_install debootstrap; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv --help >/dev/null 2>&1; then log "installing python3-venv"; apt_install python3-venv; fi
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.codeinterp-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing codeinterp and its dev dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi

.venv/bin/codeinterp image build
