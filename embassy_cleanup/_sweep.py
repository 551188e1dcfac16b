"""Sessions whose owner is gone: the stale sweep, ``reap_orphaned``, and the
watchdog's reaper for local sessions.

``sweep_stale()`` tears down the sessions in a temp dir whose owner lock can
be taken (the owner is dead): it holds the lock while it works (so two
sweepers never work on one session), kills by the session's markers and
removes the dir.  It skips anything that is not a directory we own (other
users' dirs in a shared /tmp, symlinks), and copes with records that are
missing, half-written or forged: a record only names candidates, and a
process is torn down only if the ownership rule of ``_ownership`` says it is
the session's.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable

import psutil

from . import _platform
from ._clock import REAL_CLOCK, Clock
from ._dirs import remove_tree
from ._ownership import ENV_MARKER, SESSION_IN_PATH, ProcessTracker, is_chrome_family
from ._records import YOUNG_ROOT_S, Candidate, Owner, dead_owner_lock, find_roots, load_record, session_id_of
from ._report import CleanupReport, Leftover, Stage, StageResult
from ._teardown import TeardownInterrupted, TeardownTarget, run_teardown
from ._watchdog import Reaper

log = logging.getLogger("embassy_cleanup")

#: The budget of one orphaned session's teardown.
REAP_BUDGET_S = 5.0
#: How long the watchdog waits for a dead owner's lock before acting anyway.
LOCK_WAIT_S = 1.0


def tracker_for(root: str, session_id: str, exclude: Iterable[int] = ()) -> tuple[ProcessTracker, list[str]]:
    """A tracker for a session we did not start in this process: markers from
    the dir name, the session's start from the record.  Also returns what was
    wrong with the record."""
    record, problems = load_record(root) if root else ({}, [])
    # The record's pids are not taken: a record may be forged, and every
    # process of the session is found by the ownership rule anyway.
    tracker = ProcessTracker(session_id, root, exclude=exclude, born_after=record.get("created", 0.0))
    return tracker, problems


def reap_orphaned(
    root: str | None,
    session_id: str,
    budget: float = REAP_BUDGET_S,
    exclude: Iterable[int] = (),
    clock: Clock = REAL_CLOCK,
) -> CleanupReport:
    """Tear down a session whose owner is gone: kill by markers, remove the dir.

    ``root`` may be None when the dir is already gone; the env marker still
    finds the processes.
    """
    if not session_id:
        raise ValueError("reap_orphaned needs a session id: an empty marker would match everything")
    root = root or None
    tracker, problems = tracker_for(root or "", session_id, exclude)
    record = load_record(root)[0] if root else {}
    target = TeardownTarget(
        session_id,
        tracker,
        root,
        ports=set(record.get("ports", [])),
        graceful=False,
        notes=tuple(f"record: {p}" for p in problems),
    )
    try:
        return run_teardown(target, budget, clock=clock)
    except TeardownInterrupted as held:  # finished; hand on the original Ctrl-C
        raise held.original from None


def _sessions_with_live_processes(cands: list[Candidate]) -> set[str]:
    """Which of these sessions still have a running process, in ONE pass over
    the process table (a sweep of hundreds of stale dirs must not scan it
    hundreds of times)."""
    wanted = {c.session_id for c in cands}
    createds = [load_record(c.root)[0].get("created") for c in cands]
    born_after = min(float(t) for t in createds) if createds and all(createds) else 0.0  # type: ignore[arg-type]
    found: set[str] = set()
    me = os.getpid()
    for row in _platform.process_table():
        if row.pid == me or row.zombie or _platform.born_before(row.create_time + 2.0, born_after):
            continue
        try:
            proc = psutil.Process(row.pid)
            if not _platform.same_user(proc):
                continue
            args = proc.cmdline()
        except psutil.Error:
            continue
        hit = next(
            (m.group(1) for a in args for m in [SESSION_IN_PATH.search(a)] if m and m.group(1) in wanted),
            None,
        )
        if hit is not None and not is_chrome_family(row.name):
            hit = None  # a bystander naming the root (see _ownership)
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
    t0 = time.monotonic()
    err = remove_tree(cand.root)
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


def _sweep_one(cand: Candidate, live: set[str], budget: float, exclude: Iterable[int]) -> CleanupReport:
    log.info("sweeping stale session %s (owner gone): %s", cand.session_id, cand.root)
    if cand.session_id in live:
        return reap_orphaned(cand.root, cand.session_id, budget, exclude)
    return _remove_only(cand)


def sweep_stale(
    temp_root: str | None = None, budget: float = REAP_BUDGET_S, exclude: Iterable[int] = ()
) -> list[CleanupReport]:
    """Tear down every session in ``temp_root`` whose owner is dead.

    A live owner's session is never touched: its lock is held.  Safe to run
    from several processes at once.  Returns one report per session swept.
    Sessions with processes still running get the full staged teardown; for
    the rest (most of them, after a reboot) only the dir is removed, after a
    single scan of the process table for the whole sweep.
    """
    now = time.time()
    reports: list[CleanupReport] = []
    with _LockSet() as locks:
        for cand in find_roots(temp_root):
            owner = locks.take(cand.root)
            if owner is Owner.ALIVE:
                continue
            if owner is not Owner.DEAD:  # no lock, or one that is not a live owner's regular file
                try:
                    age = now - os.lstat(cand.root).st_mtime
                except OSError:
                    continue
                if age < YOUNG_ROOT_S:
                    continue  # probably being created right now
            locks.cands.append(cand)
        live = _sessions_with_live_processes(locks.cands) if locks.cands else set()
        for cand in locks.cands:
            try:
                reports.append(_sweep_one(cand, live, budget, exclude))
            except Exception as err:  # one bad session never aborts the sweep
                log.warning("sweeping %s failed: %s", cand.root, err)
    return reports


class _LockSet:
    """Dead owners' locks taken during one sweep, all released at its end."""

    def __init__(self) -> None:
        self._held: list[Any] = []
        self.cands: list[Candidate] = []

    def take(self, root: str) -> Owner:
        ctx = dead_owner_lock(root)
        owner = ctx.__enter__()
        if owner is Owner.DEAD:
            self._held.append(ctx)
        else:
            ctx.__exit__(None, None, None)
        return owner

    def __enter__(self) -> _LockSet:
        return self

    def __exit__(self, *exc: Any) -> None:
        for ctx in self._held:
            ctx.__exit__(None, None, None)


# -- the watchdog's reaper for local sessions ---------------------------------------
def parse_local(body: Any) -> str:
    """The session root of a local session's watchdog record."""
    root = body.get("root") if isinstance(body, dict) else None
    if not isinstance(root, str) or not os.path.isabs(root) or session_id_of(root) is None:
        raise ValueError(f"a local session's record needs its absolute session root, got {root!r}")
    return root


def reap_local(sid: str, root: str, exclude: set[int], clock: Clock = REAL_CLOCK) -> str:
    """After the owner died: wait briefly for its lock (the kernel drops it as
    the owner exits), then tear the session down."""
    if session_id_of(root) != sid:
        return f"refused: {root!r} is not session {sid}'s root"
    deadline = clock.now() + LOCK_WAIT_S
    while True:
        with dead_owner_lock(root) as owner:
            if owner is not Owner.ALIVE or clock.now() >= deadline:
                report = reap_orphaned(root, sid, REAP_BUDGET_S, exclude, clock)
                return f"{'ok' if report.ok else 'LEFTOVERS'}\n{report}"
        clock.sleep(0.01)


LOCAL_REAPER = Reaper(parse=parse_local, reap=reap_local)
