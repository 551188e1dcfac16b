"""F1: the ``with`` block ends normally: full teardown, the report says ok."""

from __future__ import annotations

import os
import threading

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def test_normal_exit_should_tear_down_everything_and_report_ok(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>f1</title>")
        assert driver.title == "f1"
        snap = fh.snapshot(cleanup)
        assert len(snap.browser) >= 4, f"expected a browser and its helpers, got {snap.names}"
    report = cleanup.report
    assert report.ok, str(report)
    assert report.passes == 1, str(report)
    assert [s.stage for s in report.stages] == list(Stage)
    assert report.errors == (), str(report)
    assert cleanup.driver is None
    fh.assert_session_gone(snap)


def _footprint() -> tuple[int, int, int]:
    me = psutil.Process()
    return len(os.listdir("/proc/self/fd")), threading.active_count(), len(me.children())


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "forced"])
def test_repeated_sessions_should_not_grow_the_owners_fds_threads_or_children(
    session_kwargs, bystander, graceful
):
    # forced: quit() is skipped, so nothing of selenium's closes the HTTP
    # connection or chromedriver's pipes but the teardown itself
    def one_session() -> None:
        cleanup = ChromeUltraAggressiveCleanup(graceful=graceful, **session_kwargs)
        with cleanup:
            snap = fh.snapshot(cleanup)
        assert cleanup.report.ok, str(cleanup.report)
        fh.assert_session_gone(snap)

    one_session()  # warm-up: imports, the watchdog, selenium's pools
    before = _footprint()
    for _ in range(2):
        one_session()
    after = _footprint()
    assert after == before, f"(fds, threads, children) grew from {before} to {after}"
