"""F13: leftovers of an earlier crashed run (dead owner) are swept by
``sweep_stale()`` and at the next session start; a live owner's session is
never swept.

The crashed run is an owner started with ``watchdog=False`` and SIGKILLed:
nothing cleans up after it, so its chromedriver, Chrome and session dir stay
(the same thing a SIGKILLed watchdog or a reboot leaves).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, sweep_stale
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def _crashed_run(crash):
    """An owner without watchdog, SIGKILLed: returns (session, snapshot) of
    what it left running."""
    owner = crash.spawn(watchdog=False, name="crashed")
    assert owner.info["watchdog_pid"] is None, "watchdog=False must not start a watchdog"
    (session,) = owner.sessions
    snap = crash.snapshot(session)
    assert len(crash.running(snap)) >= 5
    owner.kill(signal.SIGKILL)
    assert owner.wait(10) == -signal.SIGKILL
    # the precondition: with no watchdog, it outlives the owner (a helper or
    # two may come and go by itself; chromedriver and the browser stay)
    assert len(crash.running(snap)) >= 5, "leftovers died by themselves; the test proves nothing"
    assert os.path.isdir(session["root"])
    snap.update(crash.snapshot(session))
    return session, snap


def _live_owner(crash):
    owner = crash.spawn(watchdog=False, name="live")
    (session,) = owner.sessions
    # Taken now, while every command line is readable: a killed process must
    # still count later.
    snap = h.steady(crash.snapshot(session))
    assert len(crash.running(snap)) >= 4, "too few steady processes to prove anything"
    return owner, session, snap


def _assert_untouched(crash, owner, session, snap, reports=()):
    lost = crash.lost(snap)
    killed = {a.pid for r in reports for a in r.killed}
    assert not lost, f"a live owner's session lost processes: {h.named(lost)}; the sweep killed " + (
        h.named(sorted(killed & set(lost))) or "none of them"
    )
    assert os.path.isdir(session["root"]) and os.path.exists(os.path.join(session["root"], "session.json"))
    assert owner.cmd("title 0")["title"] == "owner-0"


def test_leftovers_of_a_crashed_run_are_swept_by_sweep_stale(crash, bystander):
    session, snap = _crashed_run(crash)

    t0 = time.monotonic()
    reports = sweep_stale(h.SESSIONS_ROOT)
    crash.record("F13 sweep_stale of a crashed run", time.monotonic() - t0)

    assert [r.session_id for r in reports] == [session["sid"]]
    assert reports[0].ok, str(reports[0])
    assert crash.gone({session["root"]: snap}), crash.leftovers({session["root"]: snap})
    assert sweep_stale(h.SESSIONS_ROOT) == [], "a second sweep found something again"
    bystander.assert_alive()


def test_leftovers_of_a_crashed_run_are_swept_when_the_next_session_starts(crash, session_kwargs):
    session, snap = _crashed_run(crash)

    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        # the sweep runs as the session starts, before its Chrome does
        assert crash.gone({session["root"]: snap}), crash.leftovers({session["root"]: snap})
        driver.get("data:text/html,<title>next</title>")
        assert driver.title == "next"
    assert cleanup.report.ok, str(cleanup.report)


def test_a_live_owners_session_survives_sweep_stale_and_a_new_session_start(crash, session_kwargs):
    owner, session, snap = _live_owner(crash)
    dead, dead_snap = _crashed_run(crash)

    # the sweep takes the dead owner's session, and only that one
    reports = sweep_stale(h.SESSIONS_ROOT)
    assert [r.session_id for r in reports] == [dead["sid"]]
    assert crash.gone({dead["root"]: dead_snap})
    _assert_untouched(crash, owner, session, snap, reports)

    # so does a new session starting in the same temp dir
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>other</title>")
        _assert_untouched(crash, owner, session, snap)
    assert cleanup.report.ok, str(cleanup.report)
    _assert_untouched(crash, owner, session, snap)

    # the live owner still closes its session itself, cleanly
    closed = owner.cmd("close 0")
    assert closed["ok"], closed["report"]
    owner.send("exit")
    assert owner.wait(30) == 0, owner.stderr()
    assert crash.gone({session["root"]: snap})
