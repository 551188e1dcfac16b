"""F15: teardown runs twice, from a signal handler, or from garbage
collection: idempotent, no error, no second kill."""

from __future__ import annotations

import gc
import os
import signal

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage, _lifecycle
from embassy_cleanup._lifecycle import live_sessions
from embassy_cleanup._ownership import ProcessTracker
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


@pytest.fixture
def sigusr1():
    """Install a SIGUSR1 handler for the test; the previous one comes back."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, previous)


def test_close_after_the_with_block_should_return_the_same_report_and_kill_nothing(
    session_kwargs, bystander, monkeypatch
):
    teardowns = fh.count_calls(monkeypatch, _lifecycle, "run_teardown")
    kills = fh.count_calls(monkeypatch, ProcessTracker, "kill_tree")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    kills_after_exit = len(kills)
    assert cleanup.close() is report
    assert cleanup.close() is report
    assert len(teardowns) == 1
    assert len(kills) == kills_after_exit, "a second close() signalled again"
    assert len(fh.stages_of(report, Stage.KILL_TREE)) == report.passes == 1, str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_start_then_close_twice_should_tear_down_once(session_kwargs, bystander, monkeypatch):
    teardowns = fh.count_calls(monkeypatch, _lifecycle, "run_teardown")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    cleanup.start()
    snap = fh.snapshot(cleanup)
    first = cleanup.close()
    assert cleanup.close() is first
    assert len(teardowns) == 1
    assert first.ok, str(first)
    assert "closed" in repr(cleanup)
    fh.assert_session_gone(snap)


def test_close_from_a_signal_handler_should_tear_down_once(session_kwargs, bystander, monkeypatch, sigusr1):
    teardowns = fh.count_calls(monkeypatch, _lifecycle, "run_teardown")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    from_handler = []
    sigusr1(lambda signum, frame: from_handler.append(cleanup.close()))
    with cleanup:
        snap = fh.snapshot(cleanup)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert from_handler, "the handler did not run inside the block"
        fh.assert_session_gone(snap)  # torn down while still inside the block
    assert from_handler == [cleanup.report]
    assert from_handler[0] is cleanup.report
    assert len(teardowns) == 1
    assert cleanup.report.ok, str(cleanup.report)


def test_close_from_a_signal_handler_during_teardown_should_return_at_once(
    session_kwargs, bystander, monkeypatch, sigusr1
):
    teardowns = fh.count_calls(monkeypatch, _lifecycle, "run_teardown")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    from_handler = []
    sigusr1(lambda signum, frame: from_handler.append(cleanup.close()))
    fh.wrap_stage(monkeypatch, Stage.PORTS, _interrupt_with_sigusr1)
    with cleanup:
        snap = fh.snapshot(cleanup)
    assert len(from_handler) == 1, "the handler did not run during teardown"
    inner = from_handler[0]
    assert inner is not cleanup.report
    assert inner.passes == 0 and inner.stages == (), "the re-entered call ran stages itself"
    assert len(teardowns) == 1
    report = cleanup.report
    assert [s.stage for s in report.stages] == list(Stage), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_close_re_entered_during_teardown_should_not_report_ok(
    session_kwargs, bystander, monkeypatch, sigusr1
):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    from_handler = []
    sigusr1(lambda signum, frame: from_handler.append(cleanup.close()))
    fh.wrap_stage(monkeypatch, Stage.PORTS, _interrupt_with_sigusr1)
    with cleanup:
        snap = fh.snapshot(cleanup)
    fh.assert_session_gone(snap)
    if len(from_handler) != 1:
        pytest.fail("the handler did not run during teardown")
    assert not from_handler[0].ok, "a report of a teardown still running claims ok"


def _interrupt_with_sigusr1(stage):
    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs right here, mid-teardown
        return stage(*args)

    return interrupted


def test_garbage_collected_session_should_warn_and_hand_its_teardown_to_the_watchdog(
    session_kwargs, bystander
):
    """The finalizer runs inside garbage collection, wherever the last reference
    went: it warns, then hands the session to the watchdog, which tears it down
    from its record; the finalizer itself does not block on the teardown."""
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    driver = cleanup.start()
    snap = fh.snapshot(cleanup)
    session_id = cleanup.session_id
    del driver
    with pytest.warns(ResourceWarning, match=f"session {session_id} was not closed") as caught:
        del cleanup
        gc.collect()
    assert caught[0].filename == __file__, "the warning must point at the line that dropped the session"
    assert session_id not in {lc.session_id for lc in live_sessions()}
    assert h.wait_until(lambda: not any(fh.is_alive(p) for p in snap.procs.values()), timeout=10)
    assert h.wait_until(lambda: not os.path.lexists(snap.root), timeout=5)
    # the watchdog works asynchronously: the ports close with the processes' exit
    assert h.wait_until(lambda: not any(h.port_listening(p) for p in snap.ports), timeout=10), snap.ports
    fh.assert_session_gone(snap)


def test_garbage_collected_session_without_a_watchdog_is_torn_down_in_place(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(watchdog=False, **session_kwargs)
    cleanup.start()
    snap = fh.snapshot(cleanup)
    with pytest.warns(ResourceWarning, match="was not closed"):
        del cleanup
        gc.collect()
    fh.assert_session_gone(snap)
