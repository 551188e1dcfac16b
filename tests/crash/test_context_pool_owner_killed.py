"""F5 for ChromePool(isolation="context"): the owner is SIGKILLed while jobs
hold contexts open.  The browser (with its attached chromedrivers, which carry
its session's markers) is registered with the owner's watchdog, which tears it
all down: nothing of the browser, its lanes or its contexts' dirs is left."""

from __future__ import annotations

import os
import signal

import pytest

pytestmark = pytest.mark.chrome


def test_a_sigkilled_owner_with_contexts_open_leaves_nothing(crash, bystander):
    owner = crash.spawn(sessions=2, extra=["--contexts"])
    (browser,) = owner.sessions
    assert len(browser["contexts"]) == 2
    assert owner.cmd("title 1")["title"] == "owner-1"

    crash.kill_owner_and_wait_gone(owner, signal.SIGKILL, "F5 SIGKILL with contexts open -> all gone")

    assert crash.wait_exit(owner.watchdog)
    assert f"watchdog: session {browser['sid']}: ok" in owner.watchdog_log()
    assert not os.path.lexists(browser["root"])
    bystander.assert_alive()
