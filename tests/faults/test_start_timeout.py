"""start_timeout (issue 14): a start that never becomes ready ends in a
LaunchError naming the component that was not ready, and leaves nothing.

Broken drivers and browsers are small scripts written into tmp_path.  The
only timing check is a generous one: the error must come well before
Selenium's own waits (33 s for the driver, chromedriver's 60 s for the
browser); the figures are in bench/ (``start_timeout_error``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, LaunchError
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

#: A browser or driver that starts and then never answers.
HANGS = "#!/bin/sh\nexec sleep 600\n"
#: Far below Selenium's and chromedriver's own waits (33 s, 60 s), far above START_TIMEOUT.
WELL_BEFORE_S = 20.0
START_TIMEOUT = 3


@pytest.fixture
def empty_root():
    root = fh.short_dir("st")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _start_should_fail(root: str, **kwargs) -> tuple[LaunchError, ChromeUltraAggressiveCleanup, float]:
    cleanup = ChromeUltraAggressiveCleanup(temp_root=root, watchdog=False, **kwargs)
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        cleanup.start()
    elapsed = time.monotonic() - t0
    err = info.value
    assert err.report is not None and err.report.ok, str(err.report)
    assert cleanup.root is None, "root names the session dir only while it exists"
    assert any(os.path.basename(p).endswith(cleanup.session_id) for p in err.report.removed), "no dir removed"
    assert os.listdir(root) == []
    assert h.processes_under(root) == [], "a process of the session survived"
    for pid in cleanup.pids:
        assert not h.pid_running(pid), f"pid {pid} ({cleanup.pids[pid]}) still runs"
    return err, cleanup, elapsed


@pytest.mark.chrome
def test_driver_that_exits_with_status_0_should_be_named_at_once(empty_root):
    err, _cleanup, elapsed = _start_should_fail(empty_root, driver_path="/bin/true", start_timeout=30)
    assert err.component == "driver"
    assert "'/bin/true' exited with status 0 before it listened" in str(err)
    assert "is it chromedriver?" in err.hint
    assert elapsed < WELL_BEFORE_S, f"took {elapsed:.1f} s for a driver that exited at once"


@pytest.mark.chrome
def test_driver_that_never_listens_should_fail_at_start_timeout(empty_root, tmp_path):
    driver = fh.write_executable(str(tmp_path / "hanging-driver"), HANGS)
    err, cleanup, elapsed = _start_should_fail(empty_root, driver_path=driver, start_timeout=START_TIMEOUT)
    assert err.component == "driver" and err.path == driver
    assert "did not listen on 127.0.0.1:" in str(err)
    assert f"within {START_TIMEOUT} s (start_timeout={START_TIMEOUT})" in str(err)
    # recorded the moment it exists: under its script's name, or as sleep once exec'd
    assert len(cleanup.pids) == 1 and set(cleanup.pids.values()) <= {"hanging-driver", "sleep"}, cleanup.pids
    assert START_TIMEOUT <= elapsed < WELL_BEFORE_S


@pytest.mark.chrome
def test_browser_that_never_opens_devtools_should_fail_at_start_timeout(empty_root, tmp_path):
    binary = fh.write_executable(str(tmp_path / "silent-chrome"), HANGS)
    err, cleanup, elapsed = _start_should_fail(empty_root, binary=binary, start_timeout=START_TIMEOUT)
    assert err.component == "browser" and err.path == binary
    assert f"Chrome did not open DevTools within {START_TIMEOUT} s" in str(err)
    names = sorted(cleanup.pids.values())
    assert "chromedriver" in names and {"silent-chrome", "sleep"} & set(names), names  # ours, ended
    assert START_TIMEOUT <= elapsed < WELL_BEFORE_S


@pytest.mark.chrome
def test_headless_shell_that_never_opens_devtools_should_fail_at_start_timeout(
    empty_root, tmp_path, monkeypatch
):
    shell = fh.write_executable(str(tmp_path / "silent-shell"), HANGS)
    monkeypatch.setenv("CHROME_HEADLESS_SHELL", shell)
    err, cleanup, elapsed = _start_should_fail(
        empty_root, preset="headless-shell", start_timeout=START_TIMEOUT
    )
    assert err.component == "shell" and err.path == shell
    assert f"opened no DevTools page within {START_TIMEOUT} s" in str(err)
    assert {"silent-shell", "sleep"} & set(cleanup.pids.values()), cleanup.pids
    assert START_TIMEOUT <= elapsed < WELL_BEFORE_S


class _GridThatNeverCreates:
    """Answers /status "ready", holds every new-session request open."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests = 0
        grid = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                body = json.dumps({"value": {"ready": True, "message": "ok", "nodes": []}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                grid.requests += 1
                grid.release.wait(60)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_grid_that_never_creates_the_session_should_fail_at_start_timeout():
    grid = _GridThatNeverCreates()
    try:
        cleanup = ChromeUltraAggressiveCleanup(
            remote_url=grid.url, watchdog=False, start_timeout=START_TIMEOUT
        )
        t0 = time.monotonic()
        with pytest.raises(LaunchError) as info:
            cleanup.start()
        elapsed = time.monotonic() - t0
    finally:
        grid.close()
    err = info.value
    assert err.component == "grid" and err.path == grid.url
    assert f"did not answer the new-session request within {START_TIMEOUT} s" in str(err)
    assert grid.requests == 1
    assert START_TIMEOUT <= elapsed < WELL_BEFORE_S
