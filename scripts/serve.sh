#!/usr/bin/env bash
# Set up what is missing, then run the gateway (pass `codeinterp serve` options through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/codeinterp serve "$@"
