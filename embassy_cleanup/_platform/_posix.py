"""POSIX backend, shared by Linux and the other Unixes.

Signals are identity-checked with the process create time (psutil's
``(pid, create_time)`` identity) right before ``os.kill``.  The Linux backend
replaces that with a pidfd, which closes the remaining window.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from typing import Any, Callable, Iterable, Sequence

import psutil

from ._types import Identity, ProcRow, SignalResult, identity, same_birth

HAVE_PROCESS_GROUPS = True
#: Longest usable AF_UNIX socket path (sun_path less its NUL byte).
UNIX_SOCKET_PATH_MAX: int | None = 103
HAVE_PIDFD = False
_PGREP = shutil.which("pgrep")
HAVE_PGREP = _PGREP is not None
_ERE_SPECIAL = set("\\.^$|?*+()[]{}")


def _identity_matches(pid: int, create_time: float) -> bool | None:
    """True if ``pid`` is still the process born at ``create_time``; None if it
    is gone; False if reused or unreadable (see ``_types``: never signal what
    is not provably ours).  A zombie still matches."""
    found = identity(pid, create_time)
    return None if found is Identity.GONE else found is Identity.MATCH


def _send_checked(pid: int, create_time: float, send: Callable[[], None]) -> SignalResult:
    """``send()`` (a signal to ``pid`` or its group) if ``pid`` is still the
    process born at ``create_time``."""
    match = _identity_matches(pid, create_time)
    if match is None:
        return SignalResult.GONE
    if not match:
        return SignalResult.REUSED
    try:
        send()
    except ProcessLookupError:  # exited between check and kill (bpo-40550); or an empty group
        return SignalResult.GONE
    except PermissionError:
        return SignalResult.DENIED
    return SignalResult.SENT


def signal_process(pid: int, create_time: float, force: bool) -> SignalResult:
    return _send_checked(pid, create_time, lambda: os.kill(pid, signal.SIGKILL if force else signal.SIGTERM))


def kill_group(pid: int, create_time: float) -> SignalResult:
    return _send_checked(pid, create_time, lambda: os.killpg(pid, signal.SIGKILL))


def is_running(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if not same_birth(proc.create_time(), create_time):
            return False
        return proc.status() != psutil.STATUS_ZOMBIE or _threads_left(pid)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # not provably gone (see _types)
        return True


def _threads_left(pid: int) -> bool:
    """Whether a process shown as a zombie still has threads that run: it
    has not exited yet.  Both backends' ``is_running`` and process tables
    use this one rule.

    The process shows as a zombie once its main thread exits, while its
    other threads may still run (or, after SIGKILL, still be exiting).
    Until the last one exits, its children stay its own: only then are they
    handed to the reaper, which may be the owner (PID 1 in a container)."""
    try:
        return psutil.Process(pid).num_threads() > 1
    except psutil.Error:
        return False


def wait_gone(procs: Sequence[tuple[int, float]], timeout: float) -> set[int]:
    """Poll with a short back-off; Linux overrides this with pidfds."""
    deadline = time.monotonic() + max(0.0, timeout)
    alive = {pid: ct for pid, ct in procs}
    delay = 0.002
    while True:
        for pid in [p for p, ct in alive.items() if not is_running(p, ct)]:
            del alive[pid]
        now = time.monotonic()
        if not alive or now >= deadline:
            return set(alive)
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def create_time_offset() -> float:
    """Seconds to add to a create time to compare it with a file's times:
    none here, the OS reports create times to the microsecond."""
    return 0.0


def process_table() -> list[ProcRow]:
    """Every process, through psutil (the Linux backend reads /proc itself)."""
    rows = []
    for proc in psutil.process_iter(["ppid", "create_time", "name", "status"]):
        info = proc.info
        if info["create_time"] is None:
            continue
        zombie = info["status"] == psutil.STATUS_ZOMBIE and not _threads_left(proc.pid)
        rows.append(
            ProcRow(proc.pid, info["ppid"] or 0, None, info["create_time"], info["name"] or "?", zombie)
        )
    return rows


def reap_child(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or already reaped
        return False
    return done == pid


def new_session_popen_kw() -> dict[str, Any]:
    return {"start_new_session": True}


def process_group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def ere_literal(marker: str) -> str:
    """An extended regex that matches ``marker`` literally, and that does not
    contain ``marker`` itself: the first character goes in brackets.  pgrep's
    own command line carries the pattern, and a pattern that spelled the
    marker out would make pgrep look like one of the session's processes to a
    discovery running meanwhile (which then killed it mid-search)."""
    escaped = ["\\" + c if c in _ERE_SPECIAL else c for c in marker]
    for i, c in enumerate(marker):
        if c not in "]^\\-":  # inside brackets every other character is literal
            escaped[i] = f"[{c}]"
            break
    return "".join(escaped)


def os_find_by_marker(marker: str) -> list[int]:
    if _PGREP is None:
        return []
    pattern = ere_literal(marker)
    out = subprocess.run(
        [_PGREP, "-u", str(os.getuid()), "-f", "--", pattern],
        capture_output=True,
        text=True,
        check=False,
    )
    # pgrep never lists itself; the caller still filters out the owner.
    return [int(tok) for tok in out.stdout.split() if tok.isdigit()]


def os_kill_pids(pids: Sequence[int]) -> list[str]:
    return ["unsupported"]


def can_use_chrome_sandbox() -> bool:
    return os.geteuid() != 0


def dev_shm_too_small() -> bool:
    return False


def running_as_init() -> bool:
    return os.getpid() == 1


def same_user(proc: psutil.Process) -> bool:
    try:
        return proc.uids().real == os.getuid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def lock_file(fd: int, blocking: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def unlock_file(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def unix_socket_paths() -> set[str]:
    return set()


def listening_ports(ports: Iterable[int]) -> set[int] | None:
    return None
