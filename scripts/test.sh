#!/usr/bin/env bash
# The test command (CI runs exactly this): set up what is missing (gVisor included), lint, type-check,
# then run the sandbox, calls and hostile suites under gVisor (runsc), the gateway suites on PostgreSQL,
# and the whole suite under Docker's default runtime (runc) on SQLite, in that order, so that the last
# summary is the whole suite's. Any failure in any run fails the script.
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

# Three runs; the whole suite's comes last, so that its summary is the script's closing line.
#  1. gVisor: the sandbox, calls and hostile suites (tests/sandbox/test_runtime.py proves they ran there).
#  2. PostgreSQL: the gateway suites with every test server on a throwaway cluster (scripts/postgres.sh).
#  3. runc and SQLite: the whole suite.
status=0
RUNSC_SUITES=(tests/sandbox tests/gateway/test_gateway_calls.py tests/hostile)
echo "== pytest (runsc: ${RUNSC_SUITES[*]})"
CODEINTERP_TEST_RUNTIME=runsc .venv/bin/pytest "${RUNSC_SUITES[@]}" || { status=$?; echo "== FAILED: the runsc run"; }
echo "== pytest (PostgreSQL: tests/gateway)"
env -u CODEINTERP_TEST_RUNTIME CODEINTERP_TEST_DATABASE=postgres .venv/bin/pytest tests/gateway \
  || { status=$?; echo "== FAILED: the PostgreSQL run"; }
echo "== pytest (runc, SQLite: the whole suite)"
runc_status=0
env -u CODEINTERP_TEST_RUNTIME -u CODEINTERP_TEST_DATABASE .venv/bin/pytest || runc_status=$?
if [ "$status" -ne 0 ]; then
  echo "== FAILED: an earlier run (gVisor or PostgreSQL) failed; see its summary above the last one"
  exit "$status"
fi
exit "$runc_status"
