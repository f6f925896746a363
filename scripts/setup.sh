#!/usr/bin/env bash
# Everything a fresh Debian machine (as root) needs to run and test codeinterp:
# a running Docker engine, a virtualenv with the project, and the kernel image.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f /tmp/.codeinterp-apt-updated ]; then apt-get update -qq && touch /tmp/.codeinterp-apt-updated; fi
  apt-get install -y -qq "$@" >/dev/null
}

scripts/docker-up.sh

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
