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
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import psutil

from . import _platform
from ._clock import REAL_CLOCK, Background, Bounded, Budget, Clock
from ._dirs import SINGLETON_FILES, KnownEmptyDir, remove_singleton_dir, remove_tree
from ._ownership import OwnedProcess, ProcessTracker, carries_root, find_listeners
from ._report import CleanupReport, Leftover, ProcessAction, Stage, StageResult
from ._webdriver import CommandGuard, first_line, quit_within

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

# Report texts a caller (or a test) may match: skip reasons and notes, as
# str.format templates where a part varies.  Other notes are free text.
SKIP_NOT_GRACEFUL = "graceful=False"
SKIP_NOTHING_RUNNING = "nothing of the session is running"
SKIP_BUSY = (
    "chromedriver is busy with {busy} pending command(s) of this driver: quit() would wait behind them"
)
NOTE_QUIT_RETURNED = "driver.quit() returned; {ended} of {total} process(es) ended"
NOTE_PORT_NOT_OURS = "port {port} held by {who}, not ours: left alone"
NOTE_PGREP_EARLY = "pgrep ran early, during the tree-kill"
NOTE_REMOVED_EARLY = "removed early, during the tree-kill"
NOTE_EARLY_REMOVAL_FAILED = "early removal: {error}; trying again"
NOTE_RECREATED = "the dir was re-created during the early removal; removing again"
NOTE_NOTHING_LEFT = "nothing of the session left"


@dataclass
class TeardownTarget:
    """Everything a teardown needs about one session (and nothing else).

    The fields after ``devtools_port`` are what some kinds of session add:

    * ``kept_note``: says in the profile stage that a profile dir is kept on
      purpose (an adopted driver's user-chosen ``--user-data-dir``), and why;
      ``no_dir_reason`` is why there is no dir at all;
    * ``singleton_dir``: Chromium's singleton dir in the temp dir, removed once
      nothing of the session runs and only while it holds nothing but the
      singleton files;
    * ``empty_dirs``: empty dirs known by identity (an adopted chromedriver's
      second scoped dir), removed like the singleton dir, and only while each
      is still that dir and still empty;
    * ``term_grace``: with no quit, SIGTERM the tree first and wait this long
      (the watchdog gives an adopted browser the chance to save a kept profile);
    * ``notes``: what the kind wants said in the verify stage (what adoption
      found and could not know);
    * ``commands``: the guard on the driver's commands (see ``_webdriver``).
    """

    session_id: str
    tracker: ProcessTracker
    root: str | None
    ports: set[int] = field(default_factory=set)
    driver: Any = None
    graceful: bool = True
    devtools_port: int | None = None
    kept_note: str | None = None
    no_dir_reason: str = "the session created no dir"
    singleton_dir: str | None = None
    empty_dirs: tuple[KnownEmptyDir, ...] = ()
    term_grace: float = 0.0
    notes: tuple[str, ...] = ()
    commands: CommandGuard | None = None


class TeardownRun:
    """One teardown in progress: the target, its budget, and what stages hand on."""

    def __init__(self, target: TeardownTarget, budget: Budget) -> None:
        self.target = target
        self.budget = budget
        self.clock = budget.clock
        self.passes = 0
        self.grace = 0.0  # the tree-kill's SIGTERM grace in this pass
        self.settle = False  # whether verification waits for the dir to stay gone
        self.interrupted: list[BaseException] = []
        self.early_removal: _EarlyRemoval | None = None
        self.early_search: Background[list[int]] | None = None


class StageRun:
    """Collects one stage's outcome; turns an exception into a recorded error."""

    def __init__(self, stage: Stage, clock: Clock) -> None:
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


#: A stage body: ``fn(teardown, stage_run)``; what it returns is handed back.
StageFn = Callable[[TeardownRun, StageRun], Any]


@dataclass(frozen=True)
class Plan:
    """What one kind of session tears down and how: for each stage, the body
    that runs it or the reason it is skipped; and how many passes of stages
    2-6 verification may ask for."""

    stages: Mapping[Stage, Union[StageFn, str]]
    max_passes: int = MAX_PASSES


def _run_stage(out: list[StageResult], stage: Stage, plan: Plan, t: TeardownRun) -> Any:
    """Run one stage of ``plan``; record its result in ``out``; return what it returned.

    An exception is recorded and the teardown goes on.  A KeyboardInterrupt
    (a second Ctrl-C) or SystemExit is held in ``t.interrupted`` so the
    remaining stages still run; ``run_teardown`` re-raises it at the end.
    """
    body = plan.stages[stage]
    run = StageRun(stage, t.clock)
    if isinstance(body, str):
        run.skipped = body
        out.append(run.result())
        return None
    value = None
    try:
        value = body(t, run)
    except Exception as err:  # a stage never stops the teardown
        run.errors.append(f"{type(err).__name__}: {err}")
    except BaseException as err:  # noqa: B036 - held, finished, then re-raised
        run.errors.append(f"interrupted by {type(err).__name__}; finishing the teardown first")
        t.interrupted.append(err)
    out.append(run.result())
    return value


# -- stage 1 ------------------------------------------------------------
def _unresponsive_reason(t: TeardownRun, procs: dict[int, OwnedProcess]) -> str | None:
    target = t.target
    for p in Bounded(list(procs.values()), t.budget):
        try:
            if psutil.Process(p.pid).status() == psutil.STATUS_STOPPED and p.is_running():
                return f"browser frozen (pid {p.pid} {p.name} is stopped)"
        except psutil.Error:
            continue
    if target.devtools_port is not None:
        url = f"http://127.0.0.1:{target.devtools_port}/json/version"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:  # noqa: S310
                resp.read(1)
        except Exception as err:
            return f"DevTools endpoint did not answer in {PROBE_TIMEOUT} s ({type(err).__name__})"
    return None


def stage_quit(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    if target.driver is None:
        run.skipped = "no WebDriver to quit (its owner is gone, or start-up did not get that far)"
        return
    if not target.graceful:
        run.skipped = SKIP_NOT_GRACEFUL
        return
    procs = target.tracker.discover(t.budget)  # record the whole tree while markers are readable
    if not any(p.is_running() for p in procs.values()):
        run.skipped = SKIP_NOTHING_RUNNING
        return
    busy = target.commands.pending() if target.commands is not None else 0
    reason = SKIP_BUSY.format(busy=busy) if busy else _unresponsive_reason(t, procs)
    if reason is not None:
        run.skipped = reason
        return
    share = t.budget.share(QUIT_SHARE)
    call = quit_within(target.driver, share)
    if not call.done:
        run.errors.append(f"driver.quit() did not return within {share:.2f} s; forcing")
    elif call.error is not None:  # a failed quit: no grace for what it left
        run.errors.append(f"driver.quit() raised {first_line(call.error)}")
    else:
        ended = sum(1 for p in procs.values() if not p.is_running())
        run.notes.append(NOTE_QUIT_RETURNED.format(ended=ended, total=len(procs)))


# -- stage 2 ------------------------------------------------------------
def stage_kill_tree(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    t.early_search = None  # a search an earlier pass left unused is stale
    if t.grace > 0 and target.driver is None:
        run.notes.append(f"SIGTERM first, {t.grace} s grace, then SIGKILL")
    for _ in range(MAX_PASSES):  # a forking tree can spawn while we kill
        procs = [p for p in target.tracker.discover(t.budget).values() if p.is_running()]
        if not procs:
            break
        kill_wait = max(0.05, t.budget.remaining() - 0.1)
        while_dying = _early_removal_starter(t) if t.grace <= 0 else None
        actions, survivors = target.tracker.kill_tree(
            procs,
            min(t.grace, t.budget.remaining() / 2),
            kill_wait,
            while_dying,
            group_kill=True,
            budget=t.budget,
        )
        run.killed += actions
        run.survivors = survivors
        if survivors or t.budget.expired():
            break
    target.tracker.reap(budget=t.budget)
    if not run.survivors:  # nothing of ours runs: the dir can go while the next stages run
        _early_removal_starter(t)()
    if not run.killed:
        run.notes.append("nothing left running")


# -- stage 3 ------------------------------------------------------------
def stage_ports(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    if not target.ports:
        run.skipped = "the session recorded no ports"
        return
    listeners = find_listeners(target.ports)
    if not listeners:
        run.notes.append(f"ports {sorted(target.ports)} closed")
        return
    ours = target.tracker.discover(t.budget)
    to_kill = []
    for lst in listeners:
        if lst.pid is not None and lst.pid in ours:
            to_kill.append(ours[lst.pid])
        else:
            who = f"pid {lst.pid}" if lst.pid is not None else "another user's process"
            run.notes.append(NOTE_PORT_NOT_OURS.format(port=lst.port, who=who))
    if to_kill:
        actions, survivors = target.tracker.kill_tree(to_kill, 0, t.budget.remaining(), budget=t.budget)
        run.killed += actions
        run.survivors += survivors


# -- stage 4 ------------------------------------------------------------
def stage_os_kill(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    if not target.root:  # never search or delete with an empty marker
        run.skipped = "no session marker to search for"
        return
    if _platform.PLATFORM == "windows":
        pids = [p.pid for p in target.tracker.processes() if p.is_running()]
        run.errors += _platform.os_kill_pids(pids)
        run.notes.append(f"taskkill /F /T on {len(pids)} recorded pid(s)")
        return
    if not _platform.HAVE_PGREP:
        run.skipped = "pgrep is not installed (Debian package procps)"
        return
    excluded = target.tracker.excluded
    found = []
    early, t.early_search = t.early_search, None
    searched = early.result(t.budget.remaining()).value if early is not None else None
    if searched is not None:
        run.notes.append(NOTE_PGREP_EARLY)
    listed = Bounded(searched if searched is not None else _platform.os_find_by_marker(target.root), t.budget)
    for pid in listed:
        if pid in excluded:  # self-match: a shell or Python whose argv carries the marker
            continue
        try:
            proc = psutil.Process(pid)
            if not _platform.same_user(proc):
                continue
            if not carries_root(proc, target.root):
                continue  # changed since pgrep saw it, or a bystander naming the root
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue  # exited since pgrep saw it
            found.append(OwnedProcess(pid, proc.create_time(), proc.name(), "os-tool"))
        except psutil.Error:
            continue
    if listed.left:
        run.errors.append(f"the budget ran out before {listed.left} process(es) pgrep listed were examined")
    if not found:
        run.notes.append("pgrep found nothing of the session")
        return
    actions, survivors = target.tracker.kill_tree(found, 0, t.budget.remaining(), budget=t.budget)
    run.killed += actions
    run.survivors += survivors


# -- stage 5 ------------------------------------------------------------
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
            self.error = remove_tree(root)
        except Exception as err:  # recorded; the profile stage tries again
            self.error = f"{type(err).__name__}: {err}"


def _early_removal_starter(t: TeardownRun) -> Callable[[], None]:
    """The ``while_dying`` callback of a forced tree-kill: start removing the
    session dir, and the os-kill stage's ``pgrep``, while the killed
    processes exit (once per teardown).  Every SIGKILL has been sent, so
    neither can race a process that is still doing work: what pgrep sees
    that has exited by the os-kill stage is skipped there, and what it could
    not see yet, verification finds."""

    def start() -> None:
        root = t.target.root
        if not root:  # never search or delete with an empty marker
            return
        # pgrep first: it runs in a process of its own, alongside the removal.
        if t.early_search is None and _platform.PLATFORM != "windows" and _platform.HAVE_PGREP:
            t.early_search = Background("embassy-cleanup-pgrep", lambda: _platform.os_find_by_marker(root))
        if t.early_removal is None:
            t.early_removal = _EarlyRemoval(root)

    return start


def _remove_litter(t: TeardownRun, run: StageRun) -> None:
    """Chromium's singleton dir and the known empty dirs go once nothing of
    the session runs (a running browser would re-create its socket; a running
    chromedriver removes its own scoped dirs)."""
    target = t.target
    paths = ([target.singleton_dir] if target.singleton_dir else []) + [d.path for d in target.empty_dirs]
    if not paths:
        return
    if any(p.is_running() for p in target.tracker.processes()):
        run.notes.append(f"{', '.join(paths)} kept: a process of the session still runs")
        return
    outcomes = [remove_singleton_dir(target.singleton_dir)] if target.singleton_dir else []
    outcomes += [d.remove() for d in target.empty_dirs]
    for path, (done, problem) in zip(paths, outcomes):
        if done:
            run.removed.append(path)
        elif problem is not None:
            run.notes.append(problem)


def stage_profile(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    if target.kept_note is not None:
        run.notes.append(target.kept_note)
    _remove_litter(t, run)
    if not target.root:  # never search or delete with an empty marker
        if target.kept_note is None and not run.removed:
            run.skipped = target.no_dir_reason
        return
    early, t.early_removal = t.early_removal, None
    if early is not None:
        if early.existed and not os.path.lexists(target.root):
            run.removed.append(target.root)
            run.notes.append(NOTE_REMOVED_EARLY)
            return
        if early.error:
            run.notes.append(NOTE_EARLY_REMOVAL_FAILED.format(error=early.error))
        elif early.existed:
            run.notes.append(NOTE_RECREATED)
    if not os.path.lexists(target.root):
        run.notes.append("session dir already gone")
        return
    err = remove_tree(target.root)
    if err is None:
        run.removed.append(target.root)
    else:
        run.errors.append(err)


# -- stage 6 ------------------------------------------------------------
def _singleton_left(path: str | None) -> bool:
    """A singleton dir still there that is ours to remove (nothing else in it)."""
    if path is None:
        return False
    try:
        return set(os.listdir(path)) <= SINGLETON_FILES
    except OSError:
        return False


def stage_verify(t: TeardownRun, run: StageRun) -> list[Leftover]:
    target = t.target

    def check() -> list[Leftover]:
        left: list[Leftover] = []
        procs = target.tracker.discover(t.budget)
        if target.tracker.unexamined:
            unseen = target.tracker.unexamined
            left.append(
                Leftover("unverified", f"the budget ran out before {unseen} process(es) were examined")
            )
        for p in procs.values():
            if p.is_running():
                left.append(Leftover("process", f"{p.name} (via {p.via})", p.pid))
        target.tracker.reap(budget=t.budget)
        for z in target.tracker.zombie_children(t.budget):
            left.append(Leftover("zombie", z.name, z.pid))
        # Only a running process holds a socket open: with none of ours left,
        # none of the session's ports can be held by us (saves a socket-table read).
        if left:
            for lst in find_listeners(target.ports):
                if lst.pid is not None and lst.pid in procs:
                    left.append(Leftover("port", str(lst.port), lst.pid))
        for path in (target.root, target.singleton_dir):
            if path is not None and os.path.lexists(path) and (path == target.root or _singleton_left(path)):
                left.append(Leftover("dir", path))
        left += [Leftover("dir", d.path) for d in target.empty_dirs if d.still_there()]
        return left

    left = check()
    if not left and t.settle:
        window = min(SETTLE_WINDOW, t.budget.remaining())
        end = t.clock.now() + window
        while not left and t.clock.now() < end:
            t.clock.sleep(min(0.02, max(0.0, end - t.clock.now())))
            left = check()
        run.notes.append(f"settled {window * 1000:.0f} ms")
    if left:
        run.notes.append("found " + ", ".join(str(lo) for lo in left))
    else:
        run.notes.append(NOTE_NOTHING_LEFT)
    run.notes.extend(target.notes)
    return left


#: The six stages of a session whose processes run on this machine.
LOCAL_PLAN = Plan(
    {
        Stage.QUIT: stage_quit,
        Stage.KILL_TREE: stage_kill_tree,
        Stage.PORTS: stage_ports,
        Stage.OS_KILL: stage_os_kill,
        Stage.PROFILE: stage_profile,
        Stage.VERIFY: stage_verify,
    }
)
#: What runs again when verification finds something left.
_PASS = (Stage.KILL_TREE, Stage.PORTS, Stage.OS_KILL, Stage.PROFILE)


class TeardownInterrupted(BaseException):
    """A KeyboardInterrupt/SystemExit arrived during teardown.  The teardown
    was finished first; ``report`` is its report, ``original`` the exception
    to re-raise."""

    def __init__(self, report: CleanupReport, original: BaseException) -> None:
        super().__init__(original)
        self.report = report
        self.original = original


def run_teardown(
    target: TeardownTarget, budget: float, plan: Plan = LOCAL_PLAN, clock: Clock = REAL_CLOCK
) -> CleanupReport:
    """Run ``plan``'s stages against ``target`` within ``budget`` seconds.

    Stage 1 once, then stages 2-6 until verification finds nothing, up to
    ``plan.max_passes`` times within the budget.  Raises
    :class:`TeardownInterrupted` (after finishing) if a KeyboardInterrupt or
    SystemExit arrived meanwhile.
    """
    t = TeardownRun(target, Budget(budget, clock))
    stages: list[StageResult] = []
    _run_stage(stages, Stage.QUIT, plan, t)
    quit_ok = stages[-1].skipped_reason is None and not stages[-1].errors
    t.grace = TERM_GRACE if target.graceful and quit_ok else target.term_grace

    leftovers: list[Leftover] = []
    while True:
        t.passes += 1
        for stage in _PASS:
            _run_stage(stages, stage, plan, t)
        # Only a live process of ours can re-create the dir: wait for it to
        # stay gone only if one was still running when it was removed.
        t.settle = t.passes > 1 or any(p.is_running() for p in target.tracker.processes())
        found = _run_stage(stages, Stage.VERIFY, plan, t)
        # a verify stage that itself failed proves nothing: count that as a leftover
        leftovers = found if found is not None else [Leftover("unverified", stages[-1].errors[0])]
        if not leftovers or t.passes >= plan.max_passes or t.budget.expired():
            break
        t.grace = 0.0  # another pass: no more politeness
        log.info(
            "session %s: verification found %d leftover(s); another pass", target.session_id, len(leftovers)
        )

    report = CleanupReport(
        session_id=target.session_id,
        stages=tuple(stages),
        leftovers=tuple(leftovers),
        duration_s=t.budget.elapsed(),
        passes=t.passes,
    )
    if report.ok:
        log.info(
            "session %s cleaned in %.0f ms: %d process(es) signalled, %d path(s) removed",
            target.session_id,
            report.duration_s * 1000,
            sum(1 for a in report.killed if a.outcome.signalled),
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
    if t.interrupted:
        raise TeardownInterrupted(report, t.interrupted[0])
    return report
