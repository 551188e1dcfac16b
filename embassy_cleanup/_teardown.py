"""The six teardown stages, in order, and ``run_teardown``.

Each stage is scoped to one session (its :class:`ProcessTracker`, its ports,
its root dir), timed, recorded in the report, and runs even when an earlier
one failed: a stage catches its own errors, logs them at WARNING and moves
on.  If verification finds anything still there, stages 2-6 run again
within what is left of ``cleanup_timeout``.

1. ``quit``      ``driver.quit()`` within a share of the budget; skipped at
                 once when the browser is frozen or its DevTools endpoint
                 does not answer, so a hung browser cannot eat the budget.
2. ``tree-kill`` SIGTERM, a short grace, SIGKILL to everything discovered;
                 our own children are reaped.
3. ``ports``     only the session's ports (chromedriver's, DevTools'); a
                 listener that is not ours is left alone and noted.
4. ``os-kill``   the OS's own tool (``pgrep -f <session root>``) as a second
                 opinion; what it finds is identity-checked and killed.
5. ``profile``   the session root removed, never following symlinks.
6. ``verify``    nothing running, no zombie children, ports closed, dir
                 gone and staying gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from . import _platform
from ._ownership import OwnedProcess, ProcessTracker, find_listeners, root_in_args
from ._report import CleanupReport, Leftover, ProcessAction, Stage, StageResult

log = logging.getLogger("embassy_cleanup")

#: Share of ``cleanup_timeout`` that ``driver.quit()`` may use.
QUIT_SHARE = 0.4
#: How long a DevTools liveness probe may take before the browser counts as hung.
PROBE_TIMEOUT = 0.5
#: SIGTERM grace before SIGKILL when the quit stage did not end the tree.
TERM_GRACE = 0.5
#: How long the dir must stay gone when a process of ours was still running
#: at removal time (a late helper re-creates it ~10 ms after removal).
SETTLE_WINDOW = 0.2
#: Most passes of stages 2-6.
MAX_PASSES = 3


@dataclass
class TeardownTarget:
    """Everything a teardown needs about one session (and nothing else)."""

    session_id: str
    tracker: ProcessTracker
    root: str | None
    ports: set[int] = field(default_factory=set)
    driver: Any = None
    graceful: bool = True
    devtools_port: int | None = None


class _Clock:
    def __init__(self, budget: float, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.start = now()
        self.deadline = self.start + budget
        self.interrupted: list[BaseException] = []
        self.early_removal: _EarlyRemoval | None = None
        self.early_search: _Background[list[int]] | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.now())


class _StageRun:
    """Collects one stage's outcome; turns an exception into a recorded error."""

    def __init__(self, stage: Stage, clock: _Clock) -> None:
        self.stage = stage
        self.clock = clock
        self.t0 = clock.now()
        self.killed: list[ProcessAction] = []
        self.removed: list[str] = []
        self.survivors: list[ProcessAction] = []
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.skipped: str | None = None

    def result(self) -> StageResult:
        res = StageResult(
            stage=self.stage,
            duration_s=self.clock.now() - self.t0,
            killed=tuple(self.killed),
            removed=tuple(self.removed),
            survivors=tuple(self.survivors),
            skipped_reason=self.skipped,
            errors=tuple(self.errors),
            notes=tuple(self.notes),
        )
        log.debug("stage %s", res.summary())
        for err in res.errors:
            log.warning("stage %s: %s", self.stage.value, err)
        return res


def _run_stage(
    out: list[StageResult],
    stage: Stage,
    fn: Callable[..., Any],
    target: TeardownTarget,
    clock: _Clock,
    *args: Any,
) -> Any:
    """Run one stage body; record its result in ``out``; return what it returned.

    An exception is recorded and the teardown goes on.  A KeyboardInterrupt
    (a second Ctrl-C) or SystemExit is held in ``clock.interrupted`` so the
    remaining stages still run; ``run_teardown`` re-raises it at the end.
    """
    run = _StageRun(stage, clock)
    value = None
    try:
        value = fn(target, clock, run, *args)
    except Exception as err:  # a stage never stops the teardown
        run.errors.append(f"{type(err).__name__}: {err}")
    except BaseException as err:  # noqa: B036 - held, finished, then re-raised
        run.errors.append(f"interrupted by {type(err).__name__}; finishing the teardown first")
        clock.interrupted.append(err)
    out.append(run.result())
    return value


# -- stage 1 ------------------------------------------------------------
def _unresponsive_reason(target: TeardownTarget, procs: dict[int, OwnedProcess]) -> str | None:
    for p in procs.values():
        try:
            import psutil

            if psutil.Process(p.pid).status() == psutil.STATUS_STOPPED and p.is_running():
                return f"browser frozen (pid {p.pid} {p.name} is stopped)"
        except Exception:
            continue
    if target.devtools_port is not None:
        url = f"http://127.0.0.1:{target.devtools_port}/json/version"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:  # noqa: S310
                resp.read(1)
        except Exception as err:
            return f"DevTools endpoint did not answer in {PROBE_TIMEOUT} s ({type(err).__name__})"
    return None


def stage_quit(target: TeardownTarget, clock: _Clock, run: _StageRun) -> None:
    if target.driver is None:
        run.skipped = "no WebDriver to quit (its owner is gone, or start-up did not get that far)"
        return
    if not target.graceful:
        run.skipped = "graceful=False"
        return
    procs = target.tracker.discover()  # record the whole tree while markers are readable
    if not any(p.is_running() for p in procs.values()):
        run.skipped = "nothing of the session is running"
        return
    reason = _unresponsive_reason(target, procs)
    if reason is not None:
        run.skipped = reason
        return
    share = min(clock.remaining(), (clock.deadline - clock.start) * QUIT_SHARE)
    done = threading.Event()
    failure: list[BaseException] = []

    def quit_driver() -> None:
        try:
            target.driver.quit()
        except BaseException as err:  # noqa: BLE001 - reported, never raised here
            failure.append(err)
        finally:
            done.set()

    worker = threading.Thread(target=quit_driver, name="embassy-cleanup-quit", daemon=True)
    worker.start()
    if not done.wait(share):
        run.errors.append(f"driver.quit() did not return within {share:.2f} s; forcing")
    elif failure:
        first = str(failure[0]).strip().splitlines()
        run.notes.append(f"quit raised {type(failure[0]).__name__}: {first[0] if first else ''}")
    else:
        ended = sum(1 for p in procs.values() if not p.is_running())
        run.notes.append(f"driver.quit() returned; {ended} of {len(procs)} process(es) ended")


# -- stage 2 ------------------------------------------------------------
def stage_kill_tree(target: TeardownTarget, clock: _Clock, run: _StageRun, grace: float) -> None:
    clock.early_search = None  # a search an earlier pass left unused is stale
    for _ in range(MAX_PASSES):  # a forking tree can spawn while we kill
        procs = [p for p in target.tracker.discover().values() if p.is_running()]
        if not procs:
            break
        kill_wait = max(0.05, clock.remaining() - 0.1)
        while_dying = _early_removal_starter(target, clock) if grace <= 0 else None
        actions, survivors = target.tracker.kill_tree(
            procs, min(grace, clock.remaining() / 2), kill_wait, while_dying, group_kill=True
        )
        run.killed += actions
        run.survivors = survivors
        if survivors or clock.remaining() <= 0:
            break
    target.tracker.reap()
    if not run.survivors:  # nothing of ours runs: the dir can go while the next stages run
        _early_removal_starter(target, clock)()
    if not run.killed:
        run.notes.append("nothing left running")


# -- stage 3 ------------------------------------------------------------
def stage_ports(target: TeardownTarget, clock: _Clock, run: _StageRun) -> None:
    if not target.ports:
        run.skipped = "the session recorded no ports"
        return
    listeners = find_listeners(target.ports)
    if not listeners:
        run.notes.append(f"ports {sorted(target.ports)} closed")
        return
    ours = target.tracker.discover()
    to_kill = []
    for lst in listeners:
        if lst.pid is not None and lst.pid in ours:
            to_kill.append(ours[lst.pid])
        else:
            who = f"pid {lst.pid}" if lst.pid is not None else "another user's process"
            run.notes.append(f"port {lst.port} held by {who}, not ours: left alone")
    if to_kill:
        actions, survivors = target.tracker.kill_tree(to_kill, 0, clock.remaining())
        run.killed += actions
        run.survivors += survivors


# -- stage 4 ------------------------------------------------------------
def stage_os_kill(target: TeardownTarget, clock: _Clock, run: _StageRun) -> None:
    import psutil

    if not target.root:  # never search or delete with an empty marker
        run.skipped = "no session marker to search for"
        return
    if _platform.PLATFORM == "windows":
        pids = [p.pid for p in target.tracker.recorded.values() if p.is_running()]
        run.errors += _platform.os_kill_pids(pids)
        run.notes.append(f"taskkill /F /T on {len(pids)} recorded pid(s)")
        return
    if not _platform.HAVE_PGREP:
        run.skipped = "pgrep is not installed (Debian package procps)"
        return
    excluded = target.tracker.excluded
    found = []
    early, clock.early_search = clock.early_search, None
    searched = early.result(clock.remaining()) if early is not None else None
    if searched is not None:
        run.notes.append("pgrep ran early, during the tree-kill")
    for pid in searched if searched is not None else _platform.os_find_by_marker(target.root):
        if pid in excluded:  # self-match: a shell or Python whose argv carries the marker
            continue
        try:
            proc = psutil.Process(pid)
            if not _platform.same_user(proc):
                continue
            if not root_in_args(target.root, proc.cmdline()):
                continue  # pgrep matched something that changed since
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue  # exited since pgrep saw it
            found.append(OwnedProcess(pid, proc.create_time(), proc.name(), "os-tool"))
        except psutil.Error:
            continue
    if not found:
        run.notes.append("pgrep found nothing of the session")
        return
    actions, survivors = target.tracker.kill_tree(found, 0, clock.remaining())
    run.killed += actions
    run.survivors += survivors


# -- stage 5 ------------------------------------------------------------
def _remove_tree(path: str, attempts: int = 5) -> str | None:
    """Remove ``path`` without following symlinks; retry while files appear.

    Returns None on success or the last error.
    """
    last: str | None = None
    for _ in range(attempts):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):  # a link where our dir was: remove the link only
            os.unlink(path)
            return None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return f"{path!r} is owned by uid {st.st_uid}, not us: left alone"
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as err:  # ENOTEMPTY when a late writer adds files
            last = f"{type(err).__name__}: {err}"
    return last if os.path.lexists(path) else None


T = TypeVar("T")


class _Background(Generic[T]):
    """One call run in a daemon thread; ``result()`` waits for it (None when
    it failed or did not finish in time: the caller then does it itself)."""

    def __init__(self, name: str, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._value: T | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except Exception as err:
            log.debug("background %s: %s", self._thread.name, err)

    def result(self, timeout: float) -> T | None:
        self._thread.join(timeout)
        return None if self._thread.is_alive() else self._value


class _EarlyRemoval:
    """The session dir's removal, done as soon as every process of the
    session has been sent SIGKILL, while the kernel tears them down (tens of
    ms for a Chrome tree), before the wait for their exit.

    It runs in the calling thread: in a second thread, its Python code holds
    the GIL between system calls and the waiting thread, woken by each exit,
    queues for the GIL for up to the 5 ms switch interval each time; measured,
    that made the wait two to three times longer than the removal saved.

    A SIGKILLed process runs no more user code, but a system call it was in
    may still complete (a file created mid-removal): the profile stage looks
    again and removes whatever is still there, and verification checks the
    dir again.  See docs/architecture.md, "Fast teardown".
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.error: str | None = None
        self.existed = os.path.lexists(root)
        try:
            self.error = _remove_tree(root)
        except Exception as err:  # recorded; the profile stage tries again
            self.error = f"{type(err).__name__}: {err}"

    def join(self, timeout: float) -> bool:
        return True


def _early_removal_starter(target: TeardownTarget, clock: _Clock) -> Callable[[], None]:
    """The ``while_dying`` callback of a forced tree-kill: start removing the
    session dir, and the os-kill stage's ``pgrep``, while the killed
    processes exit (once per teardown).  Every SIGKILL has been sent, so
    neither can race a process that is still doing work: what pgrep sees
    that has exited by the os-kill stage is skipped there, and what it could
    not see yet, verification finds."""

    def start() -> None:
        if not target.root:  # never search or delete with an empty marker
            return
        root = target.root
        if clock.early_removal is None:
            clock.early_removal = _EarlyRemoval(root)
        if clock.early_search is None and _platform.PLATFORM != "windows" and _platform.HAVE_PGREP:
            clock.early_search = _Background(
                "embassy-cleanup-pgrep", lambda: _platform.os_find_by_marker(root)
            )

    return start


def stage_profile(target: TeardownTarget, clock: _Clock, run: _StageRun) -> None:
    if not target.root:  # never search or delete with an empty marker
        run.skipped = "the session created no dir"
        return
    early, clock.early_removal = clock.early_removal, None
    if early is not None:
        if not early.join(clock.remaining()):
            run.errors.append(f"removing {early.root!r} did not finish within the budget")
            return
        if early.existed and not os.path.lexists(target.root):
            run.removed.append(target.root)
            run.notes.append("removed early, during the tree-kill")
            return
        if early.error:
            run.notes.append(f"early removal: {early.error}; trying again")
        elif early.existed:
            run.notes.append("the dir was re-created during the early removal; removing again")
    if not os.path.lexists(target.root):
        run.notes.append("session dir already gone")
        return
    err = _remove_tree(target.root)
    if err is None:
        run.removed.append(target.root)
    else:
        run.errors.append(err)


# -- stage 6 ------------------------------------------------------------
def stage_verify(target: TeardownTarget, clock: _Clock, run: _StageRun, settle: bool) -> list[Leftover]:
    def check() -> list[Leftover]:
        left: list[Leftover] = []
        procs = target.tracker.discover()
        for p in procs.values():
            if p.is_running():
                left.append(Leftover("process", f"{p.name} (via {p.via})", p.pid))
        target.tracker.reap()
        for z in target.tracker.zombie_children():
            left.append(Leftover("zombie", z.name, z.pid))
        # Only a running process holds a socket open: with none of ours left,
        # none of the session's ports can be held by us (saves a socket-table read).
        if left:
            for lst in find_listeners(target.ports):
                if lst.pid is not None and lst.pid in procs:
                    left.append(Leftover("port", str(lst.port), lst.pid))
        if target.root is not None and os.path.lexists(target.root):
            left.append(Leftover("dir", target.root))
        return left

    left = check()
    if not left and settle:
        window = min(SETTLE_WINDOW, clock.remaining())
        end = clock.now() + window
        while not left and clock.now() < end:
            time.sleep(min(0.02, max(0.0, end - clock.now())))
            left = check()
        run.notes.append(f"settled {window * 1000:.0f} ms")
    if left:
        run.notes.append("found " + ", ".join(str(lo) for lo in left))
    else:
        run.notes.append("nothing of the session left")
    return left


class TeardownInterrupted(BaseException):
    """A KeyboardInterrupt/SystemExit arrived during teardown.  The teardown
    was finished first; ``report`` is its report, ``original`` the exception
    to re-raise."""

    def __init__(self, report: CleanupReport, original: BaseException) -> None:
        super().__init__(original)
        self.report = report
        self.original = original


class TeardownOnce:
    """Runs one teardown once, in the process that started what it tears down.

    The lifecycle rules every owner of a teardown shares (a session, an
    adopted driver):

    * only in the owner process: a ``fork()``-ed child inherits the object,
      and its exit (finalizers, signal handlers) must not tear down its
      parent's browser (``teardown()`` returns None there);
    * once: ``__exit__``, ``close()``, a signal handler or a finalizer may all
      call it; later calls return the same report, a call from another thread
      waits for the running one's report, and a call re-entered from a signal
      handler in the running thread returns None at once;
    * a KeyboardInterrupt/SystemExit held by the stages is re-raised only
      after the report exists and the hooks ran.

    Subclasses provide ``session_id`` and :meth:`_run` (the stages; may raise
    :class:`TeardownInterrupted`), and may refine :meth:`_finish`.  ``hooks``
    hold objects with ``.session_closed(state)`` (see ``_watchdog``).
    """

    session_id: str

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.report: CleanupReport | None = None
        self.hooks: list[Any] = []
        self._lock = threading.Lock()
        self._running_in: int | None = None

    def _run(self) -> CleanupReport:
        raise NotImplementedError

    def _finish(self, report: CleanupReport) -> CleanupReport:
        """After the stages, before the hooks: what the subclass adds."""
        return report

    def finalize_unclosed(self, what: str, fix: str) -> None:
        """For a finalizer: an owner dropped without ``close()`` warns
        (``ResourceWarning``, naming ``what`` and the ``fix``) and is still
        torn down, even when a warnings filter turns the warning into an error."""
        if self.report is not None or os.getpid() != self.owner_pid:
            return
        try:
            warnings.warn(
                f"{what} was not closed; tearing it down now ({fix})", ResourceWarning, stacklevel=3
            )
        finally:
            self.teardown()

    def teardown(self) -> CleanupReport | None:
        """Run the teardown once; return its report (see the class docstring)."""
        if os.getpid() != self.owner_pid:
            return None
        if not self._lock.acquire(blocking=False):
            if self._running_in == threading.get_ident():
                return None  # re-entered from a signal handler: the outer call finishes
            with self._lock:  # another thread is tearing down: wait for its report
                return self.report
        try:
            if self.report is not None:
                return self.report
            self._running_in = threading.get_ident()
            interrupted: BaseException | None = None
            try:
                report = self._run()
            except TeardownInterrupted as held:  # finished; re-raised below
                report, interrupted = held.report, held.original
            self.report = self._finish(report)
            for hook in self.hooks:
                try:
                    hook.session_closed(self)
                except Exception as err:  # never let bookkeeping hide the report
                    log.warning("%s: %s", self.session_id, err)
            if interrupted is not None:
                raise interrupted
            return self.report
        finally:
            self._running_in = None
            self._lock.release()


def run_teardown(
    target: TeardownTarget, budget: float, now: Callable[[], float] = time.monotonic
) -> CleanupReport:
    """Run the six stages against ``target`` within ``budget`` seconds.

    Raises :class:`TeardownInterrupted` (after finishing) if a
    KeyboardInterrupt or SystemExit arrived meanwhile.
    """
    clock = _Clock(budget, now)
    stages: list[StageResult] = []
    _run_stage(stages, Stage.QUIT, stage_quit, target, clock)
    quit_ok = stages[-1].skipped_reason is None and not stages[-1].errors
    grace = TERM_GRACE if target.graceful and quit_ok else 0.0

    leftovers: list[Leftover] = []
    passes = 0
    while True:
        passes += 1
        _run_stage(stages, Stage.KILL_TREE, stage_kill_tree, target, clock, grace)
        _run_stage(stages, Stage.PORTS, stage_ports, target, clock)
        _run_stage(stages, Stage.OS_KILL, stage_os_kill, target, clock)
        _run_stage(stages, Stage.PROFILE, stage_profile, target, clock)
        # Only a live process of ours can re-create the dir: wait for it to
        # stay gone only if one was still running when it was removed.
        settle = passes > 1 or any(p.is_running() for p in list(target.tracker.recorded.values()))
        found = _run_stage(stages, Stage.VERIFY, stage_verify, target, clock, settle)
        # a verify stage that itself failed proves nothing: count that as a leftover
        leftovers = found if found is not None else [Leftover("unverified", stages[-1].errors[0])]
        if not leftovers or passes >= MAX_PASSES or clock.remaining() <= 0:
            break
        grace = 0.0  # another pass: no more politeness
        log.info(
            "session %s: verification found %d leftover(s); another pass",
            target.session_id,
            len(leftovers),
        )

    report = CleanupReport(
        session_id=target.session_id,
        stages=tuple(stages),
        leftovers=tuple(leftovers),
        duration_s=clock.now() - clock.start,
        passes=passes,
    )
    killed = sum(1 for a in report.killed if a.outcome in ("terminated", "killed"))
    if report.ok:
        log.info(
            "session %s cleaned in %.0f ms: %d process(es) signalled, %d path(s) removed",
            target.session_id,
            report.duration_s * 1000,
            killed,
            len(report.removed),
        )
    else:
        log.warning(
            "session %s: %d leftover(s) after %.0f ms: %s",
            target.session_id,
            len(leftovers),
            report.duration_s * 1000,
            ", ".join(str(lo) for lo in leftovers),
        )
    if clock.interrupted:
        raise TeardownInterrupted(report, clock.interrupted[0])
    return report
