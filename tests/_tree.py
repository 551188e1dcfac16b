"""Build a real process tree for the unit tests of the process layer.

Run as ``python tests/_tree.py ROOT_MARKER SESSION_ID``.  This process (the
tree's root, started by the test in a new session, so it leads its own
process group) starts the processes below, waits until each of them is
ready, prints one JSON line ``{"root": PID, "pids": {"PID": KIND, ...}}``
(the root included, as kind ``root``) and then sleeps.  Only the standard
library is used, so the script also runs under ``python -S``.

========================  ==================================================  ===============
kind                      what it is                                          ``via``
========================  ==================================================  ===============
``root``                  this script, named "chromium"; ROOT_MARKER on its    ``started``
                          command line
``group``                 a child of the root in the root's process group     ``group``
``term_ignorer``          like ``group``, but ignores SIGTERM                 ``group``
``descendant``            a child of the root in its own session (setsid)     ``descendant``
``grandchild``            a child of ``descendant``, in that session          ``descendant``
``orphan_cmdline``        double fork: own session, re-parented to init,      ``cmdline``
                          ROOT_MARKER on its command line, named "chromium"
                          (like crashpad)
``orphan_env``            double fork: own session, re-parented to init,      ``env``
                          only ``EMBASSY_CLEANUP_SESSION=<id>`` in its env
========================  ==================================================  ===============

Only ``root`` and ``orphan_cmdline`` carry ROOT_MARKER on their command line
and only ``orphan_env`` carries the environment marker, so each ``via`` above
is the only key that can find that process.

Every process except the root is a fresh ``python -S -c SLEEPER`` (an exec,
so it does not inherit the root's command line).  A sleeper reports ``KIND
PID`` on a pipe once it is ready (for ``term_ignorer``: once SIGTERM is
ignored), then closes it; the root reads the pipe to EOF, so the JSON line
is printed only when every process is ready and every orphan has been
re-parented.
"""

from __future__ import annotations

import json
import os
import sys
import time

ENV_MARKER = "EMBASSY_CLEANUP_SESSION"
#: How long everything lives if nobody kills it (the tests always do).
LIFETIME_S = 300

SLEEPER = (
    "import os, signal, sys, time\n"
    "fd, kind = int(sys.argv[1]), sys.argv[2]\n"
    "if kind == 'orphan_cmdline':  # named like Chrome: only then does the root on argv count\n"
    "    import ctypes; ctypes.CDLL(None).prctl(15, b'chromium', 0, 0, 0)\n"
    "if kind == 'term_ignorer':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "os.write(fd, ('%s %d\\n' % (kind, os.getpid())).encode())\n"
    "os.close(fd)\n"
    f"time.sleep({LIFETIME_S})\n"
)


def _exec_sleeper(fd: int, kind: str, extra_argv: list[str], env: dict[str, str]) -> None:
    """Replace this (forked) process with a sleeper; never returns."""
    try:
        # Do not hold the test's stdout pipe open (the test reads one line from it).
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.set_inheritable(fd, True)
        argv = [sys.executable, "-S", "-c", SLEEPER, str(fd), kind, *extra_argv]
        os.execve(sys.executable, argv, env)
    finally:  # exec failed: never fall back into the parent's code
        os._exit(127)


def _fork_child(fd: int, kind: str, env: dict[str, str], *, setsid: bool = False) -> int:
    pid = os.fork()
    if pid == 0:
        if setsid:
            os.setsid()
        _exec_sleeper(fd, kind, [], env)
    return pid


def _fork_descendant_with_grandchild(fd: int, env: dict[str, str]) -> int:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            _exec_sleeper(fd, "grandchild", [], env)
        _exec_sleeper(fd, "descendant", [], env)
    return pid


def _fork_orphan(fd: int, kind: str, extra_argv: list[str], env: dict[str, str]) -> int:
    """Double fork: the middle process starts a session, forks and exits, so
    the sleeper is re-parented to init.  Returns the middle process's PID."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                _exec_sleeper(fd, kind, extra_argv, env)
        finally:
            os._exit(0)
    return pid


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} ROOT_MARKER SESSION_ID", file=sys.stderr)
        return 2
    marker, session_id = argv[1], argv[2]
    # Named like Chrome, as the root carries ROOT_MARKER on its command line
    # (only a Chrome-family process counts by it; see embassy_cleanup._ownership).
    import ctypes

    ctypes.CDLL(None).prctl(15, b"chromium", 0, 0, 0)
    plain_env = {k: v for k, v in os.environ.items() if k != ENV_MARKER}
    marked_env = dict(plain_env, **{ENV_MARKER: session_id})

    read_fd, write_fd = os.pipe()
    _fork_child(write_fd, "group", plain_env)
    _fork_child(write_fd, "term_ignorer", plain_env)
    _fork_descendant_with_grandchild(write_fd, plain_env)
    middles = [
        _fork_orphan(write_fd, "orphan_cmdline", [marker], plain_env),
        _fork_orphan(write_fd, "orphan_env", [], marked_env),
    ]
    os.close(write_fd)

    chunks = []
    while True:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    # The middle processes have exited; once reaped, their orphans have a new parent.
    for pid in middles:
        os.waitpid(pid, 0)

    pids = {str(os.getpid()): "root"}
    for line in b"".join(chunks).decode().splitlines():
        kind, pid = line.split()
        pids[pid] = kind
    print(json.dumps({"root": os.getpid(), "pids": pids}), flush=True)

    # Reap our own children as they die (they are nobody else's), then wait to be killed.
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    time.sleep(LIFETIME_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
