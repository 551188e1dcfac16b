"""F5 for ChromePool: the owner of an open pool is SIGKILLed.

The pool holds one browser checked out and one idle; both are sessions
registered with the owner's watchdog, which tears both down.
"""

from __future__ import annotations

import signal

import pytest

pytestmark = pytest.mark.chrome


def test_a_sigkilled_owner_with_an_open_pool_leaves_nothing_of_any_of_its_browsers(crash, bystander):
    owner = crash.spawn(sessions=2, extra=["--pool"])
    in_use, idle = owner.sessions
    assert in_use["in_use"] and not idle["in_use"]
    assert in_use["watchdog_pid"] == idle["watchdog_pid"] == owner.info["watchdog_pid"] is not None
    assert owner.cmd("title 0")["title"] == "owner-0"

    crash.kill_owner_and_wait_gone(owner, signal.SIGKILL, "F5 SIGKILL with a pool open -> all gone")

    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    for s in (in_use, idle):
        assert f"watchdog: session {s['sid']}: ok" in log, log
    bystander.assert_alive()
