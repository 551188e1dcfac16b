"""F7: the main Chrome process is killed mid-session: its orphaned helpers
are found and killed.

After the browser dies, its helpers go on their own, sooner or later: the
zygotes and their children die with it (Chrome sets ``PR_SET_PDEATHSIG``
on them), the crashpad handlers (re-parented to init long ago) exit when
their client is gone.  Which of them is still there when the block exits
is a race.  The second test removes the race for the crashpad handlers:
every helper is stopped first (a hung helper never notices its browser
died; SIGKILL from the kernel still ends the zygotes), so the crashpad
handlers are orphans that teardown itself must find and kill.
"""

from __future__ import annotations

import os
import signal

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Outcome
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def test_session_should_leave_nothing_after_the_browser_was_sigkilled(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
        main = snap.main_browser
        os.kill(main, signal.SIGKILL)
        assert h.wait_until(lambda: not fh.is_alive(snap.procs[main]), timeout=5)
    report = cleanup.report
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_hung_orphaned_helpers_should_be_found_and_killed_after_the_browser_was_sigkilled(
    session_kwargs, bystander
):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
        main = snap.main_browser
        helpers = {pid: p for pid, p in snap.browser.items() if pid != main}
        crashpad = [pid for pid in helpers if snap.name(pid).startswith("chrome_crashpad")]
        assert crashpad, f"no crashpad handler in the session: {snap.names}"
        assert all(snap.ppids[pid] != main for pid in crashpad)  # orphans from the start
        fh.suspend(helpers.values())
        os.kill(main, signal.SIGKILL)
        assert h.wait_until(lambda: not fh.is_alive(snap.procs[main]), timeout=5)
        assert all(fh.is_alive(helpers[pid]) for pid in crashpad)
    report = cleanup.report
    signalled = fh.outcomes(report.stages)
    not_killed = {f"{pid} {snap.name(pid)}": signalled.get(pid) for pid in crashpad}
    not_killed = {k: v for k, v in not_killed.items() if v != Outcome.KILLED}
    assert not not_killed, f"orphaned crashpad handlers not killed: {not_killed}\n{report}"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)
