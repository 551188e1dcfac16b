"""F5: the owner is SIGKILLed (stand-in for the OOM killer) mid-session.

Nothing of the owner's sessions may outlive it: its watchdog sees the pipe
close and tears every registered session down; target about 1 s, asserted
bound 5 s, the measured time goes into the test output.
"""

from __future__ import annotations

import signal

import psutil
import pytest

from tests.crash.conftest import alive

pytestmark = pytest.mark.chrome


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "worker-thread"])
def test_a_sigkilled_owner_leaves_nothing_of_its_session_and_its_watchdog_exits(crash, bystander, thread):
    owner = crash.spawn(thread=thread)
    (session,) = owner.sessions
    assert owner.info["watchdog_pid"] is not None
    assert session["watchdog_pid"] == owner.info["watchdog_pid"]
    assert owner.cmd("title 0")["title"] == "owner-0"

    crash.kill_owner_and_wait_gone(
        owner, signal.SIGKILL, f"F5 SIGKILL -> session gone ({'worker' if thread else 'main'} thread)"
    )

    assert crash.wait_exit(owner.watchdog), f"watchdog {owner.watchdog.pid} still running"
    log = owner.watchdog_log()
    assert f"watchdog: session {session['sid']}: ok" in log, log
    assert "Traceback" not in log, log
    bystander.assert_alive()


def test_one_watchdog_tears_down_both_sessions_of_a_sigkilled_owner(crash):
    owner = crash.spawn(sessions=2)
    first, second = owner.sessions
    assert first["watchdog_pid"] is not None
    assert first["watchdog_pid"] == second["watchdog_pid"] == owner.info["watchdog_pid"]
    # the owner runs exactly one process that is not a session's: the watchdog
    session_pids = {int(p) for s in owner.sessions for p in s["pids"]}
    others = [c.pid for c in psutil.Process(owner.pid).children() if c.pid not in session_pids]
    assert others == [owner.info["watchdog_pid"]]

    crash.kill_owner_and_wait_gone(owner, signal.SIGKILL, "F5 SIGKILL -> both sessions gone")

    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    for s in (first, second):
        assert f"watchdog: session {s['sid']}: ok" in log, log


def test_a_session_closed_before_the_owner_is_sigkilled_leaves_the_watchdog_nothing_to_do(crash):
    owner = crash.spawn()
    (session,) = owner.sessions
    closed = owner.cmd("close 0")
    assert closed["ok"], closed["report"]
    assert owner.info["watchdog_pid"] not in closed["killed"]
    assert alive(owner.watchdog), "closing a session must not end (or kill) the shared watchdog"
    assert crash.gone({session["root"]: crash.snapshot(session)})

    owner.kill(signal.SIGKILL)
    assert owner.wait(10) == -signal.SIGKILL

    assert crash.wait_exit(owner.watchdog), "the watchdog outlived its owner"
    log = owner.watchdog_log()
    assert "watchdog: session" not in log, log
    assert "Traceback" not in log, log


def test_closing_one_of_two_sessions_keeps_the_watchdog_guarding_the_other(crash):
    owner = crash.spawn(sessions=2)
    first, second = owner.sessions
    assert owner.cmd("close 0")["ok"]
    assert alive(owner.watchdog)
    assert owner.cmd("title 1")["title"] == "owner-1"

    crash.kill_owner_and_wait_gone(
        owner, signal.SIGKILL, "F5 SIGKILL -> remaining session gone", sessions=[second]
    )

    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    assert f"watchdog: session {second['sid']}: ok" in log, log
    assert first["sid"] not in log, "the watchdog acted on a session that was already closed"


def test_the_watchdog_exits_when_its_owner_exits_normally_with_no_session_open(crash):
    owner = crash.spawn()
    assert owner.cmd("close 0")["ok"]
    assert alive(owner.watchdog)

    owner.send("exit")
    assert owner.wait(30) == 0, owner.stderr()

    assert crash.wait_exit(owner.watchdog), f"watchdog {owner.watchdog.pid} leaked after a clean exit"
    log = owner.watchdog_log()
    assert "watchdog: session" not in log, log
    assert "Traceback" not in log, log
