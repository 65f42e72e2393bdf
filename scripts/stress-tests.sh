#!/bin/sh
# Runs the suite's concurrency tests RUNS times (default 20) while one busy loop per CPU core
# keeps the machine loaded, then prints "K of N runs passed". The busy loops are started here
# and stopped on exit. Usage: sh scripts/stress-tests.sh [RUNS]  (PYTHON and STRESS_TESTS may be set).
RUNS=${1:-20}
PYTHON=${PYTHON:-.venv/bin/python}
TESTS=${STRESS_TESTS:-tests/test_ray_generation.py tests/test_ddp_training.py tests/test_resume.py tests/test_store.py}
LOG=${STRESS_LOG:-stress-tests.log}

load_pids=""
stop_load() {
    for pid in $load_pids; do kill "$pid" 2>/dev/null; done
}
trap stop_load EXIT
trap 'exit 130' INT TERM
for core in $(seq "$(nproc)"); do
    yes > /dev/null &
    load_pids="$load_pids $!"
done

: > "$LOG"
passed=0
for run in $(seq "$RUNS"); do
    if "$PYTHON" -m pytest -q -p no:cacheprovider $TESTS >> "$LOG" 2>&1; then
        passed=$((passed + 1))
        echo "run $run: passed"
    else
        echo "run $run: FAILED (see $LOG)"
    fi
done
echo "$passed of $RUNS runs passed"
[ "$passed" -eq "$RUNS" ]
