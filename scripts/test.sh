#!/usr/bin/env bash
# The test command (CI runs exactly this): set up what is missing (gVisor included), lint, type-check,
# then run the sandbox, calls and hostile suites under gVisor (runsc) and the whole suite under Docker's
# default runtime (runc), in that order, so that the last summary is the whole suite's. Any failure in
# either run fails the script.
#
# With arguments (e.g. a test file), one pytest run with them, under CODEINTERP_TEST_RUNTIME (runc when
# unset).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --runsc
echo "== ruff"; .venv/bin/ruff check sandbox gateway tests bench
echo "== mypy"; .venv/bin/mypy
if [ "$#" -gt 0 ]; then
  echo "== pytest (runtime: ${CODEINTERP_TEST_RUNTIME:-runc})"; exec .venv/bin/pytest "$@"
fi

# tests/sandbox/test_runtime.py in it proves the sandboxes really ran under gVisor.
RUNSC_SUITES=(tests/sandbox tests/gateway/test_gateway_calls.py tests/hostile)
runsc_status=0
echo "== pytest (runsc: ${RUNSC_SUITES[*]})"
CODEINTERP_TEST_RUNTIME=runsc .venv/bin/pytest "${RUNSC_SUITES[@]}" || runsc_status=$?
echo "== pytest (runc: the whole suite)"
runc_status=0
env -u CODEINTERP_TEST_RUNTIME .venv/bin/pytest || runc_status=$?
if [ "$runsc_status" -ne 0 ]; then
  echo "== FAILED: the runsc run (sandbox, calls, hostile) exited $runsc_status; its summary is above the runc run's"
  exit "$runsc_status"
fi
exit "$runc_status"
