#!/bin/sh
# Run the whole fault matrix of ../shared/FAULTS.md (tests/faults and
# tests/crash, real Chromium) N times in a row, not in CI: every run's leak
# guard fails a test that leaves a process, a zombie or a dir of its own, so
# "0 failed" in every round means zero leaks. Prints one line a round and a
# total (a failed round's whole output goes to $TMPDIR/fault-matrix-round-N.log);
# exits 1 if any round failed.
#   sh scripts/fault_matrix.sh [ROUNDS] [PYTEST ARGS...]     (default 20 rounds)
set -u
cd "$(dirname "$0")/.." || exit 2
rounds=${1:-20}
# the soak of tests/crash/test_long_running.py runs long here, short in the suite
EMBASSY_SOAK_SESSIONS=${EMBASSY_SOAK_SESSIONS:-50}
export EMBASSY_SOAK_SESSIONS
[ $# -gt 0 ] && shift
failed_rounds=0
i=1
while [ "$i" -le "$rounds" ]; do
    start=$(date +%s)
    if out=$(.venv/bin/python -m pytest -q -p no:cacheprovider tests/faults tests/crash "$@" 2>&1); then
        status=ok
    else
        status=FAILED
        failed_rounds=$((failed_rounds + 1))
        printf '%s\n' "$out" | grep -E '^(FAILED|ERROR) ' | sed "s/^/  round $i: /"
        log="${TMPDIR:-/tmp}/fault-matrix-round-$i.log"
        printf '%s\n' "$out" > "$log" && echo "  round $i: full output in $log"
    fi
    summary=$(printf '%s\n' "$out" | tail -n 1)
    echo "round $i/$rounds: $status in $(( $(date +%s) - start )) s: $summary"
    i=$((i + 1))
done
echo "fault matrix: $rounds round(s), $failed_rounds failed"
[ "$failed_rounds" -eq 0 ]
