#!/bin/sh
# cleanup_chrome.sh: clean up what embassy_cleanup sessions left behind, safely.
#
# With embassy_cleanup installed (on PATH, in this repo's .venv, or importable
# by python3), this hands over to `embassy-cleanup clean` and passes every flag
# through; see `embassy-cleanup clean --help`.
#
# Without it, a self-contained fallback that is just as scoped:
#   - only session dirs named embassy_cleanup-<12 hex> in the temp dir, owned
#     by you, not symlinks, whose owner is dead (its owner.lock is not held);
#   - only processes of yours that carry that session's markers (its dir on
#     the command line, or EMBASSY_CLEANUP_SESSION=<id> in the environment);
#   - never another user's process or file, never anything by name alone,
#     unless you pass --all (then: every Chrome-family process of YOURS,
#     after a confirmation or --yes).
#
# Usage: cleanup_chrome.sh [--dry-run] [--all [--yes]] [--older-than SECONDS] [--temp-dir DIR]
# Exit status: 0 everything went, 1 something is left, 2 usage error.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${EMBASSY_CLEANUP_FALLBACK:-}" ]; then
    if [ -x "$here/.venv/bin/python" ] && "$here/.venv/bin/python" -c 'import embassy_cleanup' 2>/dev/null; then
        exec "$here/.venv/bin/python" -m embassy_cleanup clean "$@"
    fi
    if command -v embassy-cleanup >/dev/null 2>&1; then
        exec embassy-cleanup clean "$@"
    fi
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import embassy_cleanup' 2>/dev/null; then
        exec python3 -m embassy_cleanup clean "$@"
    fi
fi

# ---- fallback: no embassy_cleanup package --------------------------------
dry_run=0
all=0
yes=0
older_than=0
temp_dir=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --all) all=1 ;;
        --yes) yes=1 ;;
        --older-than) [ $# -ge 2 ] || { echo "error: --older-than needs SECONDS" >&2; exit 2; }
                      older_than=$2; shift ;;
        --temp-dir) [ $# -ge 2 ] || { echo "error: --temp-dir needs DIR" >&2; exit 2; }
                    temp_dir=$2; shift ;;
        --all-users) echo "error: --all-users needs the embassy_cleanup package (and root)" >&2; exit 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$older_than" in ''|*[!0-9]*) echo "error: --older-than takes whole seconds" >&2; exit 2 ;; esac
[ -d "$temp_dir" ] || { echo "error: --temp-dir '$temp_dir' is not a directory" >&2; exit 2; }

uid=$(id -u)
me=$$
now=$(date +%s)
failed=0

say() { printf '%s\n' "$*"; }
act() {  # act DESCRIPTION COMMAND...: run it, or only say it with --dry-run
    desc=$1; shift
    if [ "$dry_run" -eq 1 ]; then say "would $desc"; return 0; fi
    if "$@"; then say "$desc"; else say "FAILED: $desc"; failed=1; fi
}

# Processes of this user whose command line contains $1 or whose environment
# has EMBASSY_CLEANUP_SESSION=$2.  Reads /proc directly: no pattern matching,
# so nothing in the path can act as a wildcard.
marked_pids() {
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$me" ] && continue
        [ "$(stat -c %u "$d" 2>/dev/null || echo x)" = "$uid" ] || continue
        if { tr '\0' '\n' < "$d/cmdline"; } 2>/dev/null | grep -qF -- "$1"; then
            say "$pid"
        elif { tr '\0' '\n' < "$d/environ"; } 2>/dev/null | grep -qxF -- "EMBASSY_CLEANUP_SESSION=$2"; then
            say "$pid"
        fi
    done
}

owner_alive() {  # is the session at $1 still owned by a live process?
    lock="$1/owner.lock"
    if [ ! -f "$lock" ] || [ -L "$lock" ]; then return 1; fi
    if command -v flock >/dev/null 2>&1; then
        # flock exits 75 when the lock is held: the owner lives.
        rc=0
        flock -n -E 75 "$lock" true 2>/dev/null || rc=$?
        [ "$rc" -eq 75 ]
    else
        # No flock(1): be conservative and trust the recorded owner pid.
        pid=$(sed -n 's/.*"owner_pid": *\([0-9][0-9]*\).*/\1/p' "$1/session.json" 2>/dev/null)
        [ -n "$pid" ] && [ -d "/proc/$pid" ]
    fi
}

# shellcheck disable=SC2317  # called indirectly, through act()
kill_pids() {  # SIGTERM, a short grace, then SIGKILL what is left
    [ -n "$1" ] || return 0
    # shellcheck disable=SC2086  # the pid list is meant to split
    kill -TERM $1 2>/dev/null || true
    sleep 0.5
    for pid in $1; do
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    return 0
}

found=0
for root in "$temp_dir"/embassy_cleanup-*; do
    [ -e "$root" ] || continue
    name=${root##*/}
    sid=${name#embassy_cleanup-}
    case "$sid" in *[!0-9a-f]*|'') continue ;; esac
    [ ${#sid} -eq 12 ] || continue
    if [ ! -d "$root" ] || [ -L "$root" ]; then continue; fi
    [ "$(stat -c %u "$root")" = "$uid" ] || continue
    age=$(( now - $(stat -c %Y "$root") ))
    [ "$age" -ge "$older_than" ] || continue
    if owner_alive "$root"; then
        say "skip $root: its owner is alive"
        continue
    fi
    if [ ! -e "$root/owner.lock" ] && [ "$age" -lt 30 ]; then
        say "skip $root: no owner.lock yet, and young: a session may be starting"
        continue
    fi
    found=1
    pids=$(marked_pids "$root" "$sid" | tr '\n' ' ')
    act "kill session $sid processes: ${pids:-none}" kill_pids "$pids"
    act "remove $root" rm -rf --one-file-system -- "$root"
done

if [ "$all" -eq 1 ]; then
    pids=""
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$me" ] && continue
        [ "$(stat -c %u "$d" 2>/dev/null || echo x)" = "$uid" ] || continue
        comm=$(cat "$d/comm" 2>/dev/null || true)
        case "$comm" in chrome*|headless_shell*) pids="$pids $pid" ;; esac  # chrome* covers chromium, chromedriver
    done
    if [ -n "$pids" ]; then
        found=1
        say "WARNING: --all kills every Chrome-family process of user $uid, ours or not:$pids"
        if [ "$dry_run" -eq 0 ] && [ "$yes" -eq 0 ]; then
            if [ -t 0 ]; then
                printf 'Kill them? [y/N] '
                read -r answer
                case "$answer" in y|Y|yes) ;; *) say "nothing done"; exit 1 ;; esac
            else
                echo "error: --all needs --yes when there is no terminal to confirm on" >&2
                exit 2
            fi
        fi
        act "kill$pids" kill_pids "$pids"
    fi
fi

[ "$found" -eq 1 ] || say "nothing to clean"
exit "$failed"
