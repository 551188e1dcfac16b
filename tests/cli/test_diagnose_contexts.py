"""``embassy-cleanup diagnose`` knows browser contexts (issue 15): a pooled
browser in context mode shows how many contexts it has open, from the
contexts' dirs in its session root (``<root>/contexts/<id>``), in the text
table and in the JSON (``sessions[].contexts``).

The pool runs in this test's process (its owner is alive: the session is
``live``), or in an owner that is SIGKILLed without a watchdog (the session is
orphaned, its dir stale, and its contexts listed as they were); ``diagnose``
runs as the real entry point, scoped to the pool's dir.  A browser-mode
session shows ``contexts`` null.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from embassy_cleanup import ChromePool
from embassy_cleanup._dirs import CONTEXTS_DIR
from tests import _helpers as h
from tests.cli import diagnose, run_cli

pytestmark = pytest.mark.chrome

CONTEXT_ID = re.compile(r"^[0-9a-f]{12}$")


def _session(data, sid):
    (entry,) = [s for s in data["sessions"] if s["session_id"] == sid]
    return entry


def test_diagnose_should_show_the_open_contexts_of_a_pooled_browser(tdir):
    with ChromePool(
        max_size=1,
        isolation="context",
        contexts_per_browser=2,
        idle_timeout=None,
        temp_root=tdir,
        cleanup_timeout=10,
    ) as pool:
        first, second = pool.session(), pool.session()
        d1 = first.__enter__()
        try:
            d2 = second.__enter__()
            try:
                d1.get("data:text/html,<title>one</title>")
                d2.get("data:text/html,<title>two</title>")
                browser = pool.session_of(d1)
                assert browser is not None and pool.session_of(d2) is browser
                on_disk = sorted(os.listdir(os.path.join(browser.root, CONTEXTS_DIR)))
                assert len(on_disk) == 2, on_disk

                data = diagnose(tdir, expect=0)
                entry = _session(data, browser.session_id)
                assert entry["owner_alive"] is True
                assert entry["contexts"] == on_disk
                assert all(CONTEXT_ID.match(c) for c in entry["contexts"])

                text = run_cli("diagnose", "--temp-dir", tdir, "--no-memory", "--no-tree")
                assert text.returncode == 0, text.stdout + text.stderr
                (row,) = [line for line in text.stdout.splitlines() if browser.session_id in line]
                assert re.search(r"\blive\s+\d+\s+2 open\s+" + re.escape(browser.root) + "$", row), row
            finally:
                second.__exit__(None, None, None)
            # One context returned: its dir went with its teardown, the other stays.
            data = diagnose(tdir, expect=0)
            left = _session(data, browser.session_id)["contexts"]
            assert len(left) == 1 and left[0] in on_disk, (left, on_disk)
        finally:
            first.__exit__(None, None, None)
        data = diagnose(tdir, expect=0)
        assert _session(data, browser.session_id)["contexts"] == []
    assert all(r.ok for r in pool.context_reports()), [str(r) for r in pool.context_reports()]


def test_diagnose_should_show_no_contexts_for_a_browser_mode_session(tdir):
    with ChromePool(max_size=1, idle_timeout=None, temp_root=tdir, cleanup_timeout=10) as pool:
        with pool.session() as driver:
            browser = pool.session_of(driver)
            assert browser is not None
            data = diagnose(tdir, expect=0)
            assert _session(data, browser.session_id)["contexts"] is None
            text = run_cli("diagnose", "--temp-dir", tdir, "--no-memory", "--no-tree")
            (row,) = [line for line in text.stdout.splitlines() if browser.session_id in line]
            assert re.search(r"\blive\s+\d+\s+-\s+" + re.escape(browser.root) + "$", row), row


def test_diagnose_should_show_the_contexts_a_sigkilled_owner_left_open(crash, tdir):
    # watchdog=False: nothing cleans up after the owner, as after a reboot
    owner = crash.spawn(sessions=2, extra=["--contexts"], watchdog=False, temp_root=tdir, name="ctx")
    (browser,) = owner.sessions
    assert len(browser["contexts"]) == 2
    owner.kill(signal.SIGKILL)
    assert owner.wait(10) == -signal.SIGKILL

    data = diagnose(tdir, expect=1)
    entry = _session(data, browser["sid"])
    assert entry["owner_alive"] is False
    assert entry["contexts"] == browser["contexts"]
    assert browser["root"] in [d["path"] for d in data["stale_dirs"]]

    # clean tears the orphaned browser down, its lanes and contexts' dirs with it
    out = run_cli("clean", "--temp-dir", tdir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not os.path.lexists(browser["root"])
    assert not h.processes_under(browser["root"])
