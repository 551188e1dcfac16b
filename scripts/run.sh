#!/bin/sh
# The project's commands, with nothing needed but sh on a fresh Debian (no make):
#   sh scripts/run.sh demo    the main job: a bot job on a built-in local page, with its cleanup report
#   sh scripts/run.sh test    the whole suite: lint, then pytest (what CI runs, through .ci/run),
#                             in EMBASSY_TEST_WORKERS (default 2) pytest-xdist workers; 1: one process
#   sh scripts/run.sh lint    ruff (check and format), mypy, shellcheck and blinter (the .bat)
#   sh scripts/run.sh bench   the benchmarks (writes docs/benchmarks.md)
# Each first runs scripts/bootstrap.sh, which installs what is missing (as root
# for Debian packages). Extra arguments go to the command (demo, pytest, bench).
set -eu
cd "$(dirname "$0")/.."

usage() {
    echo "usage: sh scripts/run.sh demo|test|lint|bench [ARGS...]" >&2
    exit 2
}

lint() {
    .venv/bin/python -m ruff check embassy_cleanup tests bench
    .venv/bin/python -m ruff format --check --quiet embassy_cleanup tests bench
    .venv/bin/python -m mypy --ignore-missing-imports embassy_cleanup
    shellcheck cleanup_chrome.sh scripts/bootstrap.sh scripts/run.sh scripts/fault_matrix.sh .ci/run
    # fails on any warning: parse-time %ERRORLEVEL% in a block (W071), SET in a .bat (W028), ...
    .venv/bin/blinter cleanup_chrome.bat --config scripts/blinter.ini --quiet
}

[ $# -ge 1 ] || usage
what=$1
shift
case $what in
    demo | test | lint | bench) ;;
    *) usage ;;
esac

sh scripts/bootstrap.sh
case $what in
    demo) exec .venv/bin/python -m embassy_cleanup demo "$@" ;;
    lint) lint ;;
    test)
        lint
        # In workers, each test file's tests run in one worker (--dist loadfile):
        # they share its module fixtures (a bystander Chrome, a Grid).
        workers=${EMBASSY_TEST_WORKERS:-2}
        if [ "$workers" != 1 ]; then
            set -- -n "$workers" --dist loadfile "$@"
        fi
        exec .venv/bin/python -m pytest -ra "$@"
        ;;
    bench) exec .venv/bin/python bench/run.py "$@" ;;
esac
