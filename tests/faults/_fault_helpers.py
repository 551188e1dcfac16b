"""Helpers for the real-Chrome stage and fault tests.

* :func:`snapshot` records what a running session consists of, found by the
  session's own marker (its root dir on the command line, or in ``TMPDIR``
  for chromedriver), independently of what the library recorded;
* :func:`assert_session_gone` checks that none of it is left, holding each
  process by ``(pid, create time)``: ``pid_max`` may be small (32768 in some
  containers) and other people run Chrome here, so a bare PID may already
  belong to someone else;
* :func:`replace_stage` injects a fault into the first N runs of a stage of
  the local plan (``_teardown.LOCAL_PLAN``, which local and adopted sessions
  run) and lets the later runs through; :func:`wrap_stage` replaces a stage's
  body for the whole test; :func:`replace_first_calls` does the same for any
  function;
* :func:`start_listener` starts a process that is not the session's and
  listens on a given port;
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import psutil

from embassy_cleanup import CleanupReport, Outcome, Stage, StageResult, _teardown
from embassy_cleanup._ownership import OwnedProcess, ProcessTracker
from tests import _helpers as h

#: The local plan's stage bodies, by stage.  The plan is read when a teardown
#: runs, so a body replaced here (``monkeypatch.setitem``) is what the next
#: teardown of a local or adopted session in this process runs.
LOCAL_STAGES = _teardown.LOCAL_PLAN.stages


@dataclass
class Snapshot:
    """The running processes, root dir and ports of one session."""

    procs: dict[int, psutil.Process]
    root: str
    ports: set[int] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)  # read while they ran
    ppids: dict[int, int] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return sorted(self.procs)

    def name(self, pid: int) -> str:
        return self.names.get(pid, "?")

    @property
    def chromedriver(self) -> int:
        found = [pid for pid in self.procs if self.name(pid) == "chromedriver"]
        assert len(found) == 1, f"expected one chromedriver among {self.procs}, found {found}"
        return found[0]

    @property
    def browser(self) -> dict[int, psutil.Process]:
        """Every Chrome process of the session (all but chromedriver)."""
        drv = self.chromedriver
        return {pid: p for pid, p in self.procs.items() if pid != drv}

    @property
    def main_browser(self) -> int:
        """The Chrome process chromedriver started (its child)."""
        drv = self.chromedriver
        found = [pid for pid in self.browser if self.ppids.get(pid) == drv]
        assert len(found) == 1, f"expected one browser process under chromedriver {drv}, found {found}"
        return found[0]


#: How long a process set must stay unchanged to count as settled.
SETTLE_S = 0.3


def wait_stable(sample: Callable[[], Any], window: float = SETTLE_S, timeout: float = 5.0) -> Any:
    """Poll ``sample()`` until it returns the same value for ``window``
    seconds (or ``timeout`` passes); return the last value."""
    end = time.monotonic() + timeout
    last = sample()
    since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.02)
        now = sample()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= window:
            break
    return last


def snapshot(cleanup: Any, settle: bool = False) -> Snapshot:
    """What ``cleanup`` (a started session) consists of right now.

    Right after start-up Chrome still runs short-lived intermediates that
    exit by themselves; ``settle=True`` first waits until the session's
    process set stops changing, for tests that check what happened to each
    process.
    """
    root = cleanup.root
    assert root, "the session has no root dir"
    if settle:
        wait_stable(lambda: {p.pid for p in h.processes_under(root)})
    procs = {p.pid: p for p in h.processes_under(root)}
    # chromedriver carries the marker in its environment only; look it up by
    # the PID the library recorded, in case its environ is unreadable.
    for pid, name in cleanup.pids.items():
        if name == "chromedriver" and pid not in procs and h.pid_running(pid):
            procs[pid] = psutil.Process(pid)
    names, ppids = {}, {}
    for pid, proc in list(procs.items()):
        try:
            with proc.oneshot():
                names[pid], ppids[pid] = proc.name(), proc.ppid()
        except psutil.Error:  # exited meanwhile: not part of the running session
            del procs[pid]
    return Snapshot(procs=procs, root=root, ports=set(cleanup.ports), names=names, ppids=ppids)


def is_alive(proc: psutil.Process) -> bool:
    """That very process (pid and create time) runs and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def suspend(procs: Iterable[psutil.Process]) -> None:
    """SIGSTOP each process (identity-checked by psutil); one that has
    exited meanwhile is skipped."""
    for proc in procs:
        try:
            proc.suspend()
        except psutil.NoSuchProcess:
            pass


def assert_session_gone(snap: Snapshot) -> None:
    """No process, dir or listening port of the snapshot is left."""
    running = [f"{pid} {snap.name(pid)}" for pid, p in snap.procs.items() if is_alive(p)]
    assert not running, f"processes of the session still running: {running}"
    h.assert_gone((), [snap.root], snap.ports)


def stages_of(report: CleanupReport, stage: Stage | str) -> list[StageResult]:
    """Every result of ``stage``, in the order they ran (one per pass)."""
    wanted = Stage(stage)
    return [s for s in report.stages if s.stage is wanted]


def outcomes(results: Iterable[StageResult]) -> dict[int, Outcome]:
    """pid -> outcome over the ``killed`` lists of ``results``."""
    return {a.pid: a.outcome for s in results for a in s.killed}


def noop_stage(t: _teardown.TeardownRun, run: _teardown.StageRun, *args: Any) -> None:
    """A stage body that does nothing (the fault: this stage missed everything)."""
    run.notes.append("neutralised by the test")


def wrap_stage(monkeypatch: Any, stage: Stage, wrap: Callable[[Any], Any]) -> None:
    """Run ``wrap(original_body)`` instead of ``stage``'s body of the local plan."""
    monkeypatch.setitem(LOCAL_STAGES, stage, wrap(LOCAL_STAGES[stage]))


def replace_stage(
    monkeypatch: Any, stage: Stage, replacement: Callable[..., Any], times: int = 1
) -> list[tuple[Any, ...]]:
    """Make the first ``times`` runs of ``stage`` (local plan) run ``replacement``
    instead; later runs reach the original.  Returns the list of runs."""
    return replace_first_calls(monkeypatch, LOCAL_STAGES, stage, replacement, times)


def replace_first_calls(
    monkeypatch: Any, owner: Any, name: Any, replacement: Callable[..., Any], times: int = 1
) -> list[tuple[Any, ...]]:
    """Make the first ``times`` calls of ``owner.name`` (or ``owner[name]`` when
    ``owner`` is a dict, such as :data:`LOCAL_STAGES`) call ``replacement``
    instead; later calls reach the original.  Returns the list of calls."""
    is_dict = isinstance(owner, dict)
    original = owner[name] if is_dict else getattr(owner, name)
    calls: list[tuple[Any, ...]] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) <= times:
            return replacement(*args, **kwargs)
        return original(*args, **kwargs)

    if is_dict:
        monkeypatch.setitem(owner, name, wrapper)
    else:
        monkeypatch.setattr(owner, name, wrapper)
    return calls


def count_calls(monkeypatch: Any, owner: Any, name: str) -> list[tuple[Any, ...]]:
    """Count the calls of ``owner.name`` (still calling it)."""
    original = getattr(owner, name)
    calls: list[tuple[Any, ...]] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "s.listen()\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)


def start_listener(port: int) -> subprocess.Popen[bytes]:
    """A process that is not any session's, listening on ``port``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != b"up":
        stop(proc)
        raise AssertionError(f"listener on port {port} did not start (exit {proc.returncode})")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a process this test started (by its own handle)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except ChildProcessError:  # already reaped by someone else's waitpid(pid)
        pass
    if proc.stdout is not None:
        proc.stdout.close()


def short_dir(prefix: str) -> str:
    """A new, empty dir under the run dir with a name short enough for
    ``temp_root`` (at most 29 characters in all, see ``_launcher``)."""
    for n in range(1000):
        path = os.path.join(h.RUN_ROOT, f"{prefix}{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"no free dir name {prefix}N under {h.RUN_ROOT}")


def write_executable(path: str, text: str) -> str:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)
    os.chmod(path, 0o755)
    return path


#: A helper that keeps re-creating ``<root>/profile/late`` (F14): it carries
#: the session's env marker, so discovery finds it unless a test hides it.
LATE_HELPER = (
    "import os, sys, time\n"
    "late = os.path.join(sys.argv[1], 'profile', 'late')\n"
    "print('up', flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        os.makedirs(late, exist_ok=True)\n"
    "    except OSError:\n"
    "        pass\n"
    "    time.sleep(0.005)\n"
)


def start_late_helper(session_id: str, root: str) -> subprocess.Popen[bytes]:
    """Start LATE_HELPER for the session (``root``), and return once it has
    created its dir."""
    helper = subprocess.Popen(
        [sys.executable, "-c", LATE_HELPER, root],
        env=dict(os.environ, EMBASSY_CLEANUP_SESSION=session_id),
        stdout=subprocess.PIPE,
    )
    assert helper.stdout is not None and helper.stdout.readline().strip() == b"up"
    assert h.wait_until(lambda: os.path.isdir(os.path.join(root, "profile", "late")), timeout=5)
    return helper


def hide_from_discovery(monkeypatch: Any, pid: int, *, until: Stage, starts: bool) -> None:
    """Discovery neither sees nor records ``pid``, and the tracker's record does
    not list it, until the first run of the local plan's stage ``until``
    starts (``starts=True``) or has finished (``starts=False``)."""
    hidden = [True]
    discover = ProcessTracker.discover
    record = ProcessTracker.record
    processes = ProcessTracker.processes
    stage = LOCAL_STAGES[until]

    def discover_hiding(self: ProcessTracker, *args: Any, **kwargs: Any) -> Any:
        found = discover(self, *args, **kwargs)
        if hidden[0]:
            found.pop(pid, None)
        return found

    def record_hiding(self: ProcessTracker, procs: Iterable[OwnedProcess]) -> None:
        record(self, [p for p in procs if not (hidden[0] and p.pid == pid)])

    def processes_hiding(self: ProcessTracker) -> tuple[OwnedProcess, ...]:
        return tuple(p for p in processes(self) if not (hidden[0] and p.pid == pid))

    def stage_revealing(*args: Any) -> Any:
        if starts:
            hidden[0] = False
        try:
            return stage(*args)
        finally:
            hidden[0] = False

    monkeypatch.setattr(ProcessTracker, "discover", discover_hiding)
    monkeypatch.setattr(ProcessTracker, "record", record_hiding)
    monkeypatch.setattr(ProcessTracker, "processes", processes_hiding)
    monkeypatch.setitem(LOCAL_STAGES, until, stage_revealing)
