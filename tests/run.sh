#!/usr/bin/env bash
# The whole suite as two pytest processes at once (one per core), each with its own test database,
# files and broker, so that neither sees the other's rows, files or tasks; then the browser tests on
# their own, since their timings want a machine that is not busy with the rest. Extra arguments go to
# every run. The end-to-end tests (a real Celery worker) run in one half only.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTEST=${PYTEST:-.venv/bin/pytest}
HALF_A=(tests/labeling tests/load tests/cli)
HALF_B=(tests/core tests/curation tests/training tests/frontend tests/e2e)
LAST=(tests/browser)

base=${CRUCIBLE_DATA_DIR:-$PWD/var}
db=${TEST_DATABASE_NAME:-test_crucible}
broker=${CELERY_BROKER_URL:-}
broker_a=$broker
if [[ $broker =~ ^(redis://[^/]+/)([0-9]+)$ ]]; then
  broker_a="${BASH_REMATCH[1]}$(( (BASH_REMATCH[2] + 1) % 16 ))"
fi

env_a=(CRUCIBLE_DATA_DIR="$base/test-a" TEST_DATABASE_NAME="${db}_a")
env_b=(CRUCIBLE_DATA_DIR="$base/test-b" TEST_DATABASE_NAME="${db}_b")
if [[ -n $broker ]]; then  # unset: each half's embedded broker lives under its own data folder
  env_a+=(CELERY_BROKER_URL="$broker_a")
  env_b+=(CELERY_BROKER_URL="$broker")
fi

log_a=$(mktemp)
env "${env_a[@]}" "$PYTEST" "${HALF_A[@]}" "$@" >"$log_a" 2>&1 &
pid_a=$!
env "${env_b[@]}" "$PYTEST" "${HALF_B[@]}" "$@"
status_b=$?
wait "$pid_a"
status_a=$?
echo
echo "=== ${HALF_A[*]} ==="
cat "$log_a"
rm -f "$log_a"
echo
env "${env_b[@]}" "$PYTEST" "${LAST[@]}" "$@"
status_c=$?
echo
echo "exit: ${HALF_B[*]} -> $status_b; ${HALF_A[*]} -> $status_a; ${LAST[*]} -> $status_c"
[[ $status_a -eq 0 && $status_b -eq 0 && $status_c -eq 0 ]]
