"""Ownership records and the stale sweep.

Each session root holds ``session.json`` (owner pid and create time, session
id, pids, ports) and ``owner.lock``, which the owner keeps locked
(``flock``) for the session's whole life.  The kernel drops that lock the
moment the owner dies, however it dies, so liveness is decided without
looking at PIDs at all, and PID reuse cannot fool it: a session whose lock
can be taken has no live owner.

``sweep_stale()`` tears down such sessions: it holds the lock while it
works (so two sweepers never work on one session), kills by the session's
markers and removes the dir.  It skips anything that is not a directory we
own (other users' dirs in a shared /tmp, symlinks), and copes with records
that are missing or half-written (the markers come from the dir name).
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from . import _platform
from ._ownership import ENV_MARKER, ROOT_PREFIX, OwnedProcess, ProcessTracker
from ._report import CleanupReport

log = logging.getLogger("embassy_cleanup")

RECORD_NAME = "session.json"
LOCK_NAME = "owner.lock"
#: A root with no lock file yet may be a session being created right now;
#: only one older than this is treated as a crash leftover.
YOUNG_ROOT_S = 30.0

_SID_RE = re.compile(re.escape(ROOT_PREFIX) + r"([0-9a-f]{12})")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class OwnerLock:
    """The owner's lock on one session root, held until :meth:`release`.

    ``owner.lock`` appears already locked: the lock is taken on a private
    temp file that is then hard-linked into place, so a sweep can never find
    the file unlocked while its session is starting.
    """

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        tmp = os.path.join(root, f".{LOCK_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        try:
            if not _platform.lock_file(fd, blocking=False):  # pragma: no cover - a fresh file
                raise RuntimeError(f"{tmp} is locked by another process")
            os.link(tmp, self.path)
        except FileExistsError:
            # There is one already (a released or crashed owner's): take it
            # if nobody holds it.
            os.close(fd)
            fd = os.open(self.path, os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC)
            if not _platform.lock_file(fd, blocking=False):
                os.close(fd)
                raise RuntimeError(f"{self.path} is locked by another process") from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        self.fd: int | None = fd

    def forget(self) -> None:
        """Close this copy of the fd without unlocking (a fork()ed child's copy:
        the parent's lock stays held)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def release(self) -> None:
        """Unlock and close: the owner is done with the session."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                _platform.unlock_file(fd)  # explicit: a stray fork()ed copy must not hold it
            finally:
                os.close(fd)


def write_record(root: str, data: dict[str, Any]) -> None:
    """Write ``session.json`` atomically (a reader never sees half of it)."""
    tmp = os.path.join(root, f".{RECORD_NAME}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, os.path.join(root, RECORD_NAME))


def read_record(root: str) -> dict[str, Any]:
    """The record, or ``{}`` when it is missing, unreadable or half-written."""
    try:
        fd = os.open(os.path.join(root, RECORD_NAME), os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def session_id_of(root: str) -> str | None:
    name = os.path.basename(root.rstrip(os.sep))
    if not name.startswith(ROOT_PREFIX):
        return None
    sid = name[len(ROOT_PREFIX) :]
    return sid if sid and all(c in "0123456789abcdef" for c in sid) else None


@dataclass(frozen=True)
class Candidate:
    """A session root of ours found in a temp dir."""

    root: str
    session_id: str


def find_roots(temp_root: str | None = None) -> list[Candidate]:
    """Session roots in ``temp_root`` that are real dirs owned by us."""
    base = temp_root if temp_root is not None else tempfile.gettempdir()
    out = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in names:
        if not name.startswith(ROOT_PREFIX):
            continue
        root = os.path.join(base, name)
        sid = session_id_of(root)
        if sid is None:
            continue
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # symlinks included: never followed
            continue
        if uid is not None and st.st_uid != uid:  # another user's: not ours to judge
            continue
        out.append(Candidate(root, sid))
    return out


def try_lock_dead_owner(root: str) -> int | None | bool:
    """Take the owner lock of ``root`` if its owner is dead.

    Returns the locked fd (caller closes it), ``False`` when the owner is
    alive (the lock is held), or ``None`` when there is no lock file (a
    session being created, or one that crashed before locking).
    """
    try:
        fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return False  # a symlink (ELOOP) or unreadable: not ours to touch
    if not _platform.lock_file(fd, blocking=False):
        os.close(fd)
        return False
    # Another sweeper may have locked, swept and deleted this file between our
    # open() and our lock: then we hold a lock on a file that is gone.
    try:
        st, now = os.fstat(fd), os.lstat(os.path.join(root, LOCK_NAME))
        same = st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return False
    return fd


def tracker_for(root: str, session_id: str, exclude: Iterable[int] = ()) -> ProcessTracker:
    """A tracker for a session we did not start in this process: markers from
    the dir name, recorded pids (with create times) from the record."""
    record = read_record(root) if root else {}
    created = record.get("created")
    born_after = float(created) if isinstance(created, (int, float)) and created > 0 else 0.0
    tracker = ProcessTracker(session_id, root, exclude=exclude, born_after=born_after)
    procs = []
    for item in record.get("pids", []):
        try:
            procs.append(OwnedProcess(int(item[0]), float(item[1]), str(item[2]), "recorded"))
        except (TypeError, ValueError, IndexError):
            continue
    tracker.record(procs)
    return tracker


def reap_orphaned(
    root: str | None, session_id: str, budget: float = 5.0, exclude: Iterable[int] = ()
) -> CleanupReport:
    """Tear down a session whose owner is gone: kill by markers, remove the dir.

    ``root`` may be None when the dir is already gone; the env marker and the
    recorded pids still find the processes.
    """
    from ._teardown import TeardownInterrupted, TeardownTarget, run_teardown

    if not session_id:
        raise ValueError("reap_orphaned needs a session id: an empty marker would match everything")
    root = root or None
    record = read_record(root) if root else {}
    tracker = tracker_for(root or "", session_id, exclude)
    ports = {int(p) for p in record.get("ports", []) if isinstance(p, int)}
    target = TeardownTarget(session_id, tracker, root, ports=ports, graceful=False)
    try:
        return run_teardown(target, budget)
    except TeardownInterrupted as held:  # finished; hand on the original Ctrl-C
        raise held.original from None


def _sessions_with_live_processes(cands: list[Candidate]) -> set[str]:
    """Which of these sessions still have a running process, in ONE pass over
    the process table (a sweep of hundreds of stale dirs must not scan it
    hundreds of times)."""
    import psutil

    wanted = {c.session_id for c in cands}
    born_after = 0.0
    createds = [read_record(c.root).get("created") for c in cands]
    if createds and all(isinstance(t, (int, float)) and t > 0 for t in createds):
        born_after = min(float(t) for t in createds)  # type: ignore[arg-type]
    found: set[str] = set()
    me = os.getpid()
    for proc in psutil.process_iter(["create_time", "status"]):
        info = proc.info
        if proc.pid == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (info["create_time"] or 0.0) + 2.0 < born_after or not _platform.same_user(proc):
            continue
        try:
            args = proc.cmdline()
        except psutil.Error:
            continue
        hit = next(
            (m.group(1) for a in args for m in [_SID_RE.search(a)] if m and m.group(1) in wanted), None
        )
        if hit is None:
            try:
                sid = proc.environ().get(ENV_MARKER)
            except Exception:  # psutil errors, garbled environ areas
                sid = None
            hit = sid if sid in wanted else None
        if hit is not None:
            found.add(hit)
    return found


def _remove_only(cand: Candidate) -> CleanupReport:
    """The report of a stale session with nothing left running: only its dir
    goes (the one process scan of the sweep found none of its processes)."""
    from ._report import Leftover, Stage, StageResult
    from ._teardown import _remove_tree

    t0 = time.monotonic()
    err = _remove_tree(cand.root)
    took = time.monotonic() - t0
    nothing = "no process of the session was running (one scan for the whole sweep)"
    stages = [
        StageResult(Stage.QUIT, 0.0, skipped_reason="its owner is gone"),
        StageResult(Stage.KILL_TREE, 0.0, notes=(nothing,)),
        StageResult(Stage.PORTS, 0.0, skipped_reason=nothing),
        StageResult(Stage.OS_KILL, 0.0, skipped_reason=nothing),
        StageResult(
            Stage.PROFILE, took, removed=(cand.root,) if err is None else (), errors=(err,) if err else ()
        ),
        StageResult(Stage.VERIFY, 0.0, notes=("dir gone" if err is None else "dir still there",)),
    ]
    left = () if err is None and not os.path.lexists(cand.root) else (Leftover("dir", cand.root),)
    return CleanupReport(cand.session_id, tuple(stages), left, took)


def sweep_stale(
    temp_root: str | None = None, budget: float = 5.0, exclude: Iterable[int] = ()
) -> list[CleanupReport]:
    """Tear down every session in ``temp_root`` whose owner is dead.

    A live owner's session is never touched: its lock is held.  Safe to run
    from several processes at once.  Returns one report per session swept.
    Sessions with processes still running get the full staged teardown; for
    the rest (most of them, after a reboot) only the dir is removed, after a
    single scan of the process table for the whole sweep.
    """
    now = time.time()
    locked: list[tuple[Candidate, int | None]] = []
    for cand in find_roots(temp_root):
        lock = try_lock_dead_owner(cand.root)
        if lock is False:
            continue
        if lock is None:
            try:
                age = now - os.lstat(cand.root).st_mtime
            except OSError:
                continue
            if age < YOUNG_ROOT_S:
                continue  # probably being created right now
        locked.append((cand, lock))
    reports = []
    try:
        live = _sessions_with_live_processes([c for c, _ in locked]) if locked else set()
        for cand, _lock in locked:
            log.info("sweeping stale session %s (owner gone): %s", cand.session_id, cand.root)
            if cand.session_id in live:
                reports.append(reap_orphaned(cand.root, cand.session_id, budget, exclude))
            else:
                reports.append(_remove_only(cand))
    finally:
        for _cand, lock in locked:
            if lock is not None:
                os.close(lock)
    return reports
