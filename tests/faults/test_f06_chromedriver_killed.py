"""F6: chromedriver is killed mid-session, then the block exits: Chrome and
its helpers are still found and killed."""

from __future__ import annotations

import os
import signal

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Outcome
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def test_browser_should_be_found_and_killed_after_chromedriver_was_sigkilled(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
        drv = snap.chromedriver
        assert cleanup.pids.get(drv) == "chromedriver"
        os.kill(drv, signal.SIGKILL)
        assert h.wait_until(lambda: not h.pid_running(drv), timeout=5)
        # the browser outlives its parent: this is what teardown must find
        alive = [pid for pid, p in snap.browser.items() if fh.is_alive(p)]
        assert snap.main_browser in alive
    report = cleanup.report
    signalled = {a.pid: a.outcome for a in report.killed}
    # neither the browser nor its crashpad handlers exit with chromedriver:
    # teardown must have found them.  (Some helpers do exit by themselves once
    # chromedriver's DevTools connection is gone: for those, "all gone" below.)
    must_find = [snap.main_browser] + [p for p in alive if snap.name(p).startswith("chrome_crashpad")]
    missed = {f"{p} {snap.name(p)}": signalled.get(p) for p in must_find}
    missed = {k: v for k, v in missed.items() if v not in (Outcome.TERMINATED, Outcome.KILLED)}
    assert not missed, f"not found and killed: {missed}\n{report}"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)
