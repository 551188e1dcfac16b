"""Fixtures for the unit tests of the process layer: real processes, no Chrome.

* ``process_tree()`` starts ``tests/_tree.py`` (see its docstring for the
  shape of the tree) and returns a :class:`Tree`;
* ``spawn()`` starts one lone sleeper that belongs to no tree;
* ``signal_calls`` records every ``_platform.signal_process`` call (the real
  function still runs).

At the end of the test, whatever happened, every PID these fixtures recorded
is SIGKILLed by PID with psutil holding its identity (PID plus create time:
a reused PID is never hit), never by name, and the test process's own
children are reaped.  The tree's orphans are re-parented to init, so init
reaps them (or, in a container whose PID 1 does not reap, they stay zombies
that nothing can signal); the fixture waits until none of them runs.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from embassy_cleanup import _platform
from embassy_cleanup._ownership import ENV_MARKER, ROOT_PREFIX
from tests import _helpers as h

TREE_SCRIPT = str(Path(__file__).resolve().parents[1] / "_tree.py")
#: A lone sleeper: says "ready" on stdout once running, then sleeps.
SLEEPER = "import sys, time\nsys.stdout.write('ready\\n')\nsys.stdout.flush()\ntime.sleep(300)\n"
_START_TIMEOUT = 30


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without our session marker, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != ENV_MARKER}
    env.update(extra)
    return env


@dataclass
class Tree:
    """A running tests/_tree.py: its Popen, its markers, and every process."""

    popen: subprocess.Popen
    marker: str  # the session root path: on the command line of root and orphan_cmdline
    session_id: str  # EMBASSY_CLEANUP_SESSION of orphan_env
    kinds: dict[int, str]  # pid -> kind, the root included
    procs: dict[int, psutil.Process]  # pid -> identity, taken when the tree was ready

    @property
    def pids(self) -> set[int]:
        return set(self.kinds)

    @property
    def root(self) -> int:
        return self.popen.pid

    def pid_of(self, kind: str) -> int:
        (pid,) = [p for p, k in self.kinds.items() if k == kind]
        return pid

    def create_time(self, pid: int) -> float:
        return self.procs[pid].create_time()

    def running(self) -> list[int]:
        return sorted(pid for pid, p in self.procs.items() if h.pid_running(pid, p.create_time()))


def _kill_processes(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()  # psutil raises NoSuchProcess instead of hitting a reused PID
        except psutil.Error:
            pass


def _read_line(popen: subprocess.Popen, timeout: float) -> bytes:
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], timeout)
    return popen.stdout.readline() if ready else b""


@pytest.fixture
def process_tree():
    """A factory: ``process_tree()`` starts one tree and returns its :class:`Tree`."""
    trees: list[Tree] = []
    started: list[tuple[subprocess.Popen, str]] = []

    def start() -> Tree:
        session_id = secrets.token_hex(6)
        marker = os.path.join(h.SESSIONS_ROOT, f"{ROOT_PREFIX}{session_id}")
        # TMPDIR under the run dir lets the suite's leak guard see these too.
        popen = subprocess.Popen(
            [sys.executable, "-S", TREE_SCRIPT, marker, session_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=clean_env(TMPDIR=marker),
            start_new_session=True,
        )
        started.append((popen, marker))
        line = _read_line(popen, _START_TIMEOUT)
        if not line:
            raise RuntimeError(f"tests/_tree.py did not report its tree (exit status {popen.poll()})")
        info = json.loads(line)
        assert info["root"] == popen.pid
        kinds = {int(pid): kind for pid, kind in info["pids"].items()}
        procs = {}
        for pid in kinds:
            procs[pid] = psutil.Process(pid)  # every process is ready and sleeping: no reuse yet
        tree = Tree(popen, marker, session_id, kinds, procs)
        trees.append(tree)
        return tree

    try:
        yield start
    finally:
        for tree in trees:
            _kill_processes([p for pid, p in tree.procs.items() if pid != tree.root])
        for popen, marker in started:
            if popen.poll() is None:
                popen.kill()  # Popen polls first: never signals a reaped PID
            popen.wait()
            if popen.stdout is not None:
                popen.stdout.close()
            # A tree that failed before reporting: its group, then anything carrying its marker.
            if not any(t.popen is popen for t in trees):
                try:
                    os.killpg(popen.pid, signal.SIGKILL)  # the group our own child led
                except (ProcessLookupError, PermissionError):
                    pass
                h.kill_all(h.processes_under(marker))
        for tree in trees:
            assert h.wait_until(lambda t=tree: not t.running(), timeout=10), (
                f"tree processes still running after SIGKILL: {tree.running()}"
            )


@pytest.fixture
def spawn():
    """A factory: ``spawn(*argv, env=...)`` starts a lone sleeper (its own
    session, not part of any tree) with ``argv`` appended to its command line
    and returns its ``Popen`` once it runs."""
    started: list[subprocess.Popen] = []

    def start(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        popen = subprocess.Popen(
            [sys.executable, "-S", "-c", SLEEPER, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env if env is not None else clean_env(),
            start_new_session=True,
        )
        started.append(popen)
        assert _read_line(popen, _START_TIMEOUT) == b"ready\n"
        return popen

    try:
        yield start
    finally:
        for popen in started:
            if popen.poll() is None:
                popen.kill()  # our own child: its PID cannot be reused before we reap it
            popen.wait()
            if popen.stdout is not None:
                popen.stdout.close()


@pytest.fixture
def signal_calls(monkeypatch):
    """Every ``(pid, force, result)`` passed to ``_platform.signal_process``."""
    calls: list[tuple[int, bool, _platform.SignalResult]] = []
    real = _platform.signal_process

    def spy(pid: int, create_time: float, force: bool) -> _platform.SignalResult:
        result = real(pid, create_time, force)
        calls.append((pid, force, result))
        return result

    monkeypatch.setattr(_platform, "signal_process", spy)
    return calls
