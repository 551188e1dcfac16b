"""A signal whose handler tears a session down, delivered inside each locked
section on the teardown path, never hangs and the teardown finishes (issue 13,
item 7).  Deterministic: a lock stub raises the signal right after it is
acquired, so the handler runs while the interrupted code holds the lock.

The locks on the teardown path are reentrant, and each section guards its
data against a handler that runs inside it (the lifecycle's run-once window,
the tracker's snapshots, the watchdog client's queue of messages sent from a
handler).  A hang fails the test through ``faulthandler`` instead of hanging
the suite.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from typing import Any, ClassVar

import pytest

from embassy_cleanup import Stage, _watchdog
from embassy_cleanup._lifecycle import Lifecycle
from embassy_cleanup._ownership import ENV_MARKER, ProcessTracker
from embassy_cleanup._teardown import LOCAL_PLAN, TeardownTarget
from tests.unit.conftest import clean_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_RealRLock = threading.RLock


class SignallingLock:
    """An RLock that raises SIGUSR1 in this thread right after its ``arm``-th acquire."""

    def __init__(self) -> None:
        self._lock = _RealRLock()
        self.arm = 0  # 0: disarmed; N: signal on the N-th acquire from now
        self.fired = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got and self.arm:
            self.arm -= 1
            if self.arm == 0:
                self.fired += 1
                signal.raise_signal(signal.SIGUSR1)  # the handler runs here, lock held
        return got

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()


@pytest.fixture
def no_hang():
    faulthandler.dump_traceback_later(60, exit=True)  # a deadlock kills the run, loudly
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def on_sigusr1():
    """``on_sigusr1(fn)`` installs ``fn`` as the SIGUSR1 handler for this test."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda fn: signal.signal(signal.SIGUSR1, lambda signum, frame: fn())
    signal.signal(signal.SIGUSR1, previous)


def build(monkeypatch, factory):
    """Build ``factory()`` with every RLock it creates replaced by a SignallingLock."""
    locks: list[SignallingLock] = []

    def make() -> SignallingLock:
        locks.append(SignallingLock())
        return locks[-1]

    with monkeypatch.context() as m:
        m.setattr(threading, "RLock", make)
        obj = factory()
    return obj, locks


class LocalSleeperKind:
    """A kind whose session is one marked sleeper (the env marker), torn down
    by the real six stages."""

    kind: ClassVar[str] = "local"

    def __init__(self, tracker: ProcessTracker) -> None:
        self.target = TeardownTarget("sigtest", tracker, None, graceful=False)
        self.released = 0

    def plan(self):
        return self.target, LOCAL_PLAN

    def watchdog_record(self):
        return None

    def release(self) -> None:
        self.released += 1

    def forget_in_child(self) -> None:
        pass


def marked_sleeper(spawn, session_id: str):
    return spawn(env=clean_env(**{ENV_MARKER: session_id}))


def test_a_handler_that_tears_down_inside_the_lifecycle_window_finishes_it_once(
    monkeypatch, no_hang, on_sigusr1, spawn
):
    sleeper = marked_sleeper(spawn, "sigtest")
    kind = LocalSleeperKind(ProcessTracker("sigtest", "", born_after=0.0))
    lc, locks = build(monkeypatch, lambda: Lifecycle("sigtest", kind, 5.0, watchdog=False))
    from_handler: list[Any] = []
    on_sigusr1(lambda: from_handler.append(lc.teardown()))
    locks[0].arm = 1  # the first acquire: teardown()'s own, before it marks itself running

    report = lc.teardown()

    assert locks[0].fired == 1 and len(from_handler) == 1
    assert from_handler[0] is report, "the handler and the interrupted call must share one teardown"
    assert report.ok and sleeper.poll() is not None
    assert kind.released == 1, "released twice: the teardown ran twice"


def test_a_handler_that_tears_down_while_running_teardown_holds_the_lock_returns_at_once(
    monkeypatch, no_hang, on_sigusr1, spawn
):
    marked_sleeper(spawn, "sigtest")
    kind = LocalSleeperKind(ProcessTracker("sigtest", "", born_after=0.0))
    lc, _locks = build(monkeypatch, lambda: Lifecycle("sigtest", kind, 5.0, watchdog=False))
    from_handler: list[Any] = []
    on_sigusr1(lambda: from_handler.append(lc.teardown()))
    ports = LOCAL_PLAN.stages[Stage.PORTS]

    def ports_then_signal(t, run):
        signal.raise_signal(signal.SIGUSR1)  # mid-teardown, in the thread running it
        return ports(t, run)

    monkeypatch.setitem(LOCAL_PLAN.stages, Stage.PORTS, ports_then_signal)
    report = lc.teardown()

    assert from_handler == [None], "a re-entered call returns None at once; the outer call finishes"
    assert report.ok


@pytest.mark.parametrize("section", ["record", "discover"])
def test_a_handler_that_tears_down_inside_a_tracker_section_finishes_and_nothing_hangs(
    monkeypatch, no_hang, on_sigusr1, spawn, section
):
    sleeper = marked_sleeper(spawn, "sigtest")
    tracker, locks = build(monkeypatch, lambda: ProcessTracker("sigtest", "", born_after=0.0))
    kind = LocalSleeperKind(tracker)
    lc = Lifecycle("sigtest", kind, 5.0, watchdog=False)
    from_handler: list[Any] = []
    on_sigusr1(lambda: from_handler.append(lc.teardown()))
    # discover() takes the lock first for its snapshot, then record() for the results
    locks[0].arm = 1 if section == "discover" else 2

    found = tracker.discover()  # the interrupted call

    assert locks[0].fired == 1 and len(from_handler) == 1
    assert from_handler[0] is not None and from_handler[0].ok, from_handler
    assert sleeper.poll() is not None
    assert isinstance(found, dict)
    assert lc.teardown() is from_handler[0]


def test_a_handler_that_sends_to_the_watchdog_inside_a_send_is_queued_and_nothing_hangs(
    monkeypatch, no_hang, on_sigusr1, tmp_path
):
    log = tmp_path / "watchdog.log"
    monkeypatch.setenv("EMBASSY_CLEANUP_WATCHDOG_LOG", str(log))
    client, locks = build(monkeypatch, _watchdog.WatchdogClient)
    # An unknown kind: the watchdog refuses it and says so in its log, which
    # proves the message queued by the handler was written, whole.
    on_sigusr1(lambda: client.send({"v": 1, "op": "add", "sid": "from-handler", "kind": "bogus", "body": {}}))
    locks[0].arm = 1
    try:
        pid = client.send({"v": 1, "op": "add", "sid": "outer", "kind": "local", "body": {"root": "/x"}})
        assert locks[0].fired == 1
        assert client.send({"v": 1, "op": "remove", "sid": "outer"}) == pid, "the same watchdog serves on"
    finally:
        proc = client.proc
        client.close()  # EOF: it reads everything, reaps nothing (no valid local root) and exits
        if proc is not None:
            proc.wait(30)
    assert "refused a message: unknown kind 'bogus'" in log.read_text()
