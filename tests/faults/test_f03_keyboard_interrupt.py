"""F3: KeyboardInterrupt (SIGINT) inside the block: full teardown, and the
KeyboardInterrupt propagates."""

from __future__ import annotations

import os
import signal

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def test_keyboard_interrupt_raised_in_the_block_should_propagate_after_teardown(session_kwargs, bystander):
    raised = KeyboardInterrupt()
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with pytest.raises(KeyboardInterrupt) as info:
        with cleanup:
            snap = fh.snapshot(cleanup)
            raise raised
    assert info.value is raised
    assert cleanup.report is not None, "teardown did not run"
    assert cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)


def test_real_sigint_with_the_default_handler_should_propagate_after_teardown(session_kwargs, bystander):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    interrupted_in_block = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with cleanup:
                snap = fh.snapshot(cleanup)
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    h.wait_until(lambda: False, timeout=5)  # the handler raises in here
                except KeyboardInterrupt:
                    interrupted_in_block.append(True)
                    raise
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted_in_block, "SIGINT did not interrupt the block"
    assert cleanup.report is not None, "teardown did not run"
    assert cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)


def test_second_sigint_during_teardown_should_not_abort_the_teardown(session_kwargs, bystander, monkeypatch):
    original = fh.LOCAL_STAGES[Stage.PORTS]

    def ports_interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # the default handler raises in here
        h.wait_until(lambda: False, timeout=2)
        return original(*args)

    fh.replace_stage(monkeypatch, Stage.PORTS, ports_interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    try:
        with pytest.raises(KeyboardInterrupt):
            with cleanup:
                snap = fh.snapshot(cleanup)
        assert cleanup.report is not None, "teardown was aborted by the KeyboardInterrupt"
        assert cleanup.report.ok, str(cleanup.report)
        fh.assert_session_gone(snap)
    finally:
        signal.signal(signal.SIGINT, previous)
        cleanup.close()  # finish what an aborted teardown left, for the leak guard
