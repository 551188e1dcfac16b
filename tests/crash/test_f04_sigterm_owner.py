"""F4: the owner receives SIGTERM with Python's default handler.

The default action ends the process without running any ``finally`` block or
finalizer, so, as for SIGKILL, only the watchdog can clean up: target about
1 s, asserted bound 5 s, the measured time goes into the test output.
"""

from __future__ import annotations

import signal

import pytest

from tests.crash.conftest import alive

pytestmark = pytest.mark.chrome


def test_a_sigtermed_owner_leaves_nothing_of_its_session_and_its_watchdog_exits(crash, bystander):
    owner = crash.spawn()
    (session,) = owner.sessions
    assert session["watchdog_pid"] is not None
    assert owner.cmd("title 0")["title"] == "owner-0"

    crash.kill_owner_and_wait_gone(owner, signal.SIGTERM, "F4 SIGTERM -> session gone")

    assert crash.wait_exit(owner.watchdog), f"watchdog {owner.watchdog.pid} still running"
    log = owner.watchdog_log()
    assert f"watchdog: session {session['sid']}: ok" in log, log
    assert "Traceback" not in log, log
    # the default handler ran no teardown in the owner: the watchdog did it all
    assert f"session {session['sid']} cleaned" not in owner.stderr()
    bystander.assert_alive()


def test_one_watchdog_tears_down_both_sessions_of_a_sigtermed_owner(crash):
    owner = crash.spawn(sessions=2)
    first, second = owner.sessions
    assert first["watchdog_pid"] is not None
    assert first["watchdog_pid"] == second["watchdog_pid"] == owner.info["watchdog_pid"]

    crash.kill_owner_and_wait_gone(owner, signal.SIGTERM, "F4 SIGTERM -> both sessions gone")

    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    for s in (first, second):
        assert f"watchdog: session {s['sid']}: ok" in log, log


def test_a_session_closed_before_the_owner_is_sigtermed_leaves_the_watchdog_nothing_to_do(crash):
    owner = crash.spawn()
    (session,) = owner.sessions
    assert owner.cmd("close 0")["ok"]
    assert alive(owner.watchdog)
    assert crash.gone({session["root"]: crash.snapshot(session)})

    owner.kill(signal.SIGTERM)
    assert owner.wait(10) == -signal.SIGTERM

    assert crash.wait_exit(owner.watchdog), "the watchdog outlived its owner"
    log = owner.watchdog_log()
    assert "watchdog: session" not in log, log
    assert "Traceback" not in log, log
