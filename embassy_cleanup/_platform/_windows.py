"""Windows backend.

Not exercised in CI (no Windows runner); kept small and reviewed by hand.
Windows has no signals: "terminate" and "kill" are both TerminateProcess,
and ``taskkill /F /T /PID`` is the OS's own tree-kill.  Identity is still
checked with the create time before every call, but ``taskkill`` runs as a
separate program, so a PID could in theory be reused between the check and
the kill; that window is documented in docs/architecture.md.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from typing import Any, Iterable, Sequence

import psutil

from ._types import ProcRow, SignalResult, same_birth

HAVE_PROCESS_GROUPS = False
#: Longest usable AF_UNIX socket path (sun_path less its NUL byte).
UNIX_SOCKET_PATH_MAX: int | None = None
HAVE_PIDFD = False
HAVE_PGREP = False
_TASKKILL = shutil.which("taskkill")


def signal_process(pid: int, create_time: float, force: bool) -> SignalResult:
    try:
        proc = psutil.Process(pid)
        if not same_birth(proc.create_time(), create_time):
            return SignalResult.REUSED
        proc.kill() if force else proc.terminate()
    except psutil.NoSuchProcess:
        return SignalResult.GONE
    except psutil.AccessDenied:
        return SignalResult.DENIED
    return SignalResult.SENT


def kill_group(pid: int, create_time: float) -> SignalResult:
    return SignalResult.DENIED  # no process groups here


def is_running(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return same_birth(proc.create_time(), create_time) and proc.is_running()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def wait_gone(procs: Sequence[tuple[int, float]], timeout: float) -> set[int]:
    deadline = time.monotonic() + max(0.0, timeout)
    alive = dict(procs)
    while True:
        alive = {p: ct for p, ct in alive.items() if is_running(p, ct)}
        if not alive or time.monotonic() >= deadline:
            return set(alive)
        time.sleep(0.02)


def create_time_offset() -> float:
    """Seconds to add to a create time to compare it with a file's times:
    none here, the OS reports create times to the microsecond."""
    return 0.0


def process_table() -> list[ProcRow]:
    rows = []
    for proc in psutil.process_iter(["ppid", "create_time", "name"]):
        info = proc.info
        if info["create_time"] is not None:
            rows.append(
                ProcRow(proc.pid, info["ppid"] or 0, None, info["create_time"], info["name"] or "?", False)
            )
    return rows


def reap_child(pid: int) -> bool:
    return False  # Windows has no zombies to collect


def new_session_popen_kw() -> dict[str, Any]:
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]


def process_group_of(pid: int) -> int | None:
    return None


def os_find_by_marker(marker: str) -> list[int]:
    return []


def os_kill_pids(pids: Sequence[int]) -> list[str]:
    if _TASKKILL is None:
        return ["taskkill not found"]
    errors = []
    for pid in pids:
        out = subprocess.run(
            [_TASKKILL, "/F", "/T", "/PID", str(pid)], capture_output=True, text=True, check=False
        )
        if out.returncode not in (0, 128):  # 128: no such process
            errors.append(f"taskkill {pid}: {out.stderr.strip() or out.returncode}")
    return errors


def can_use_chrome_sandbox() -> bool:
    return True


def dev_shm_too_small() -> bool:
    return False


def running_as_init() -> bool:
    return False


def same_user(proc: psutil.Process) -> bool:
    try:
        return (proc.username() or "").split("\\")[-1] == getpass.getuser()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def lock_file(fd: int, blocking: bool) -> bool:
    import msvcrt

    try:
        msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


def unlock_file(fd: int) -> None:
    import msvcrt

    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]


def unix_socket_paths() -> set[str]:
    return set()


def listening_ports(ports: Iterable[int]) -> set[int] | None:
    return None
