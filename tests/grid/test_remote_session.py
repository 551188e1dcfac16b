"""Remote sessions on a real Selenium Grid 4 (issue #8, client side).

Every test runs against the session-scoped ``grid``; the Grid leak guard
checks after each test that it lists no session and runs no chromedriver or
Chrome, and the suite's leak guard that nothing was created locally.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, ConfigError, LaunchError, Stage
from embassy_cleanup._remote import DELETED, NOTE_DELETE, NOTE_NO_QUIT, NOTE_QUIT_RETURNED, REMOTE_SKIP
from tests import _helpers as h
from tests.grid import _grid
from tests.grid.conftest import record_timing

pytestmark = [pytest.mark.chrome, pytest.mark.grid]

LOCAL_STAGES = (Stage.KILL_TREE, Stage.PORTS, Stage.OS_KILL, Stage.PROFILE)
PAGE = "data:text/html,<title>remote</title><p>remote</p>"


def assert_remote_report_ok(report, rsid: str) -> None:
    assert report.ok, str(report)
    for stage in LOCAL_STAGES:
        assert report.stage(stage).skipped_reason == REMOTE_SKIP, str(report)
    verify = report.stage(Stage.VERIFY)
    assert any(rsid in n and "slot free" in n for n in verify.notes), str(report)


def browser_process(grid: _grid.GridServer, driver) -> psutil.Process:
    """The Chrome browser process of a remote session, held by identity: the
    pid the session reports (``goog:processID``), checked to be one the Grid
    started (carries the Grid's marker) and to use the session's profile."""
    pid = driver.capabilities["goog:processID"]
    udd = driver.capabilities["chrome"]["userDataDir"]
    proc = psutil.Process(pid)
    assert proc.pid in {p.pid for p in grid.processes()}, f"pid {pid} is not one the Grid started"
    assert f"--user-data-dir={udd}" in proc.cmdline()
    return proc


def test_a_remote_session_runs_on_the_grid_and_frees_its_slot_at_exit(grid, remote_kwargs):
    before = set(os.listdir(h.SESSIONS_ROOT))
    cleanup = ChromeUltraAggressiveCleanup(**remote_kwargs)
    t0 = time.monotonic()
    with cleanup as driver:
        record_timing(f"remote session started in {time.monotonic() - t0:.2f} s")
        rsid = driver.session_id
        assert rsid in grid.sessions()
        assert grid.sessions()[rsid]["capabilities"]["embassy_cleanup:session"] == cleanup.session_id
        driver.get(PAGE)
        assert driver.title == "remote"
        browser = browser_process(grid, driver)
        assert cleanup.root is None and cleanup.pids == {}, "a remote session has nothing local"
        assert set(os.listdir(h.SESSIONS_ROOT)) == before, "a remote session creates no local dir"
    assert_remote_report_ok(cleanup.report, rsid)
    assert NOTE_QUIT_RETURNED in cleanup.report.stage(Stage.QUIT).notes
    assert rsid not in grid.sessions()
    assert h.wait_until(lambda: not browser.is_running(), timeout=10), "the Grid's Chrome outlived it"


def test_an_exception_in_the_block_propagates_and_the_remote_session_is_deleted(grid, remote_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**remote_kwargs)
    with pytest.raises(ZeroDivisionError):
        with cleanup as driver:
            rsid = driver.session_id
            driver.get(PAGE)
            1 / 0  # noqa: B018
    assert_remote_report_ok(cleanup.report, rsid)
    assert rsid not in grid.sessions()


def test_a_failing_quit_falls_back_to_delete_through_the_grid(grid, remote_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**remote_kwargs)
    driver = cleanup.start()
    rsid = driver.session_id

    def broken_quit():
        raise RuntimeError("injected: quit failed")

    driver.quit = broken_quit  # the real session stays open on the Grid
    report = cleanup.close()
    quit_stage = report.stage(Stage.QUIT)
    # a quit that raised is an error of the stage; the DELETE fallback then ends the session
    assert [e for e in quit_stage.errors if "RuntimeError: injected: quit failed" in e], str(report)
    assert NOTE_DELETE.format(rsid=rsid, outcome=DELETED) in quit_stage.notes, str(report)
    assert_remote_report_ok(report, rsid)


def test_graceful_false_deletes_the_remote_session_without_quit(grid, remote_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **remote_kwargs)
    with cleanup as driver:
        rsid = driver.session_id
    notes = cleanup.report.stage(Stage.QUIT).notes
    assert NOTE_NO_QUIT in notes and NOTE_DELETE.format(rsid=rsid, outcome=DELETED) in notes
    assert_remote_report_ok(cleanup.report, rsid)


def test_a_frozen_remote_browser_is_torn_down_within_the_budget(grid, remote_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**dict(remote_kwargs, cleanup_timeout=6))
    driver = cleanup.start()
    rsid = driver.session_id
    browser = browser_process(grid, driver)
    browser.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        report = cleanup.close()
        took = time.monotonic() - t0
        assert took < 6 + 1.0, f"teardown took {took:.2f} s with cleanup_timeout=6"
        assert_remote_report_ok(report, rsid)
        assert h.wait_until(lambda: not browser.is_running(), timeout=10)
    finally:
        if browser.is_running():
            browser.send_signal(signal.SIGCONT)
            browser.kill()


def test_a_frozen_chromedriver_on_the_node_cannot_make_teardown_hang(grid, remote_kwargs):
    """The worst remote case: the node's chromedriver is stopped, so quit and
    DELETE both hang inside the Grid.  Teardown must still return within its
    budget and say the session is still listed; after SIGCONT the Grid
    finishes the DELETE it was given and frees the slot."""
    cleanup = ChromeUltraAggressiveCleanup(**dict(remote_kwargs, cleanup_timeout=4))
    driver = cleanup.start()
    rsid = driver.session_id
    chromedriver = browser_process(grid, driver).parent()
    assert chromedriver is not None and chromedriver.pid in {p.pid for p in grid.processes()}
    chromedriver.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        report = cleanup.close()
        took = time.monotonic() - t0
        assert took < 4 + 1.0, f"teardown took {took:.2f} s with cleanup_timeout=4"
        assert not report.ok
        assert [lo.kind for lo in report.leftovers] == ["remote-session"], str(report)
        assert report.stage(Stage.QUIT).errors, str(report)
    finally:
        chromedriver.send_signal(signal.SIGCONT)
    # the Grid itself then completes the deletion: the leak guard checks the slot
    assert h.wait_until(lambda: rsid not in grid.sessions(), timeout=30), grid.log()


def test_an_unreachable_grid_is_a_clear_launch_error_and_nothing_is_left_locally(grid):
    with _closed_port() as port:
        url = f"http://127.0.0.1:{port}"
        before = set(os.listdir(h.SESSIONS_ROOT))
        t0 = time.monotonic()
        cleanup = ChromeUltraAggressiveCleanup(remote_url=url, temp_root=h.SESSIONS_ROOT)
        with pytest.raises(LaunchError) as info:
            cleanup.start()
        assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert f"Selenium Grid at {url!r} (from remote_url=) is not reachable" in msg
    assert "ConnectionRefusedError" in msg and "start the Grid or fix remote_url=" in msg
    assert info.value.report is not None and info.value.report.ok
    assert set(os.listdir(h.SESSIONS_ROOT)) == before
    assert cleanup.driver is None


class _closed_port:
    """A port on 127.0.0.1 that nothing listens on (bound, not listening)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "kwargs, option, text",
    [
        ({"remote_url": "ftp://grid:4444"}, "remote_url", "is not an http(s) URL of a Selenium Grid"),
        ({"remote_url": "http://"}, "remote_url", "is not an http(s) URL of a Selenium Grid"),
        ({"remote_url": "http://grid:99999"}, "remote_url", "Port out of range"),
        ({"remote_url": "http://grid:4444/?x=1"}, "remote_url", "must not carry a query"),
        (
            {"remote_url": "http://grid:4444", "driver_path": "/usr/bin/chromedriver"},
            "driver_path",
            "chromedriver runs on the Grid node",
        ),
        ({"remote_url": "http://grid:4444", "env": {"A": "b"}}, "env", "the Grid node's"),
    ],
)
def test_bad_remote_options_are_rejected_before_anything_starts(kwargs, option, text):
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(**kwargs)
    assert info.value.option == option
    assert text in str(info.value)


def test_remote_url_must_be_a_string():
    with pytest.raises(TypeError, match="remote_url must be a string"):
        ChromeUltraAggressiveCleanup(remote_url=4444)
