"""Launch errors carry the evidence (issue 14): the last lines chromedriver
and the browser wrote, and a hint for a known cause.  Broken browsers are
small scripts written into tmp_path; the headed case runs real Chromium with
no X server."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, LaunchError
from embassy_cleanup._evidence import DRIVER_LOG_ENV, OUTPUT_FILE, OutputCapture
from tests import _helpers as h
from tests.faults import _fault_helpers as fh


@pytest.fixture
def empty_root():
    root = fh.short_dir("ev")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _launch_error(root: str, **kwargs) -> LaunchError:
    cleanup = ChromeUltraAggressiveCleanup(temp_root=root, watchdog=False, **kwargs)
    with pytest.raises(LaunchError) as info:
        cleanup.start()
    assert info.value.report is not None and info.value.report.ok, str(info.value.report)
    assert os.listdir(root) == [], "the session dir (and its output.log) was left"
    assert h.processes_under(root) == []
    return info.value


@pytest.mark.chrome
def test_browser_stderr_should_be_quoted_in_the_launch_error(empty_root, tmp_path):
    binary = fh.write_executable(str(tmp_path / "boom"), "#!/bin/sh\necho BOOM >&2\nexit 3\n")
    err = _launch_error(empty_root, binary=binary)
    assert err.component == "browser"
    assert "BOOM" in err.output
    assert "    | BOOM" in str(err).splitlines()
    assert "Starting ChromeDriver" not in str(err)  # the banner is noise
    assert "is it a Chrome or Chromium binary?" in err.hint


@pytest.mark.chrome
def test_headed_chrome_without_an_x_server_should_hint_at_virtual_display(empty_root, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    err = _launch_error(empty_root, headless=False)
    assert any("Missing X server or $DISPLAY" in line for line in err.output), err.output
    assert "virtual_display=True" in err.hint and "headless=True" in err.hint


@pytest.mark.chrome
@pytest.mark.parametrize(
    ("says", "hinted"),
    [
        (
            "/opt/chrome/chrome: error while loading shared libraries: libnss3.so: "
            "cannot open shared object file: No such file or directory",
            "a shared library is missing: libnss3.so",
        ),
        (
            "[1:1:0101/000000.000000:FATAL:zygote_host_impl_linux.cc(127)] No usable sandbox!",
            "Chrome's sandbox cannot start here",
        ),
        (
            "[1:1:0101/000000.000000:ERROR:platform_shared_memory_region_posix.cc(214)] "
            "Creating shared memory in /dev/shm/.org.chromium.Chromium.x failed: No space left on device",
            "/dev/shm is too small",
        ),
        (
            "[1:1:0101/000000.000000:ERROR:process_singleton_posix.cc(353)] The profile appears to be "
            "in use by another Chromium process (42) on another computer (h).",
            "another Chrome process holds the profile dir",
        ),
    ],
    ids=["shared-library", "sandbox", "dev-shm", "profile-in-use"],
)
def test_known_cause_should_add_its_hint(empty_root, tmp_path, says, hinted):
    script = f"#!/bin/sh\ncat >&2 <<'EOF'\n{says}\nEOF\nexit 1\n"
    binary = fh.write_executable(str(tmp_path / "chrome"), script)
    err = _launch_error(empty_root, binary=binary)
    assert says in err.output
    assert err.hint is not None and hinted in err.hint, err.hint


@pytest.mark.chrome
def test_driver_log_env_should_keep_chromedrivers_verbose_log_after_teardown(
    empty_root, tmp_path, monkeypatch
):
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setenv(DRIVER_LOG_ENV, str(logs))
    binary = fh.write_executable(str(tmp_path / "boom"), "#!/bin/sh\necho BOOM >&2\nexit 3\n")
    cleanup = ChromeUltraAggressiveCleanup(temp_root=empty_root, watchdog=False, binary=binary)
    with pytest.raises(LaunchError) as info:
        cleanup.start()
    kept = logs / f"chromedriver-{cleanup.session_id}.log"
    assert kept.exists(), os.listdir(logs)
    text = kept.read_text()
    assert "Launching chrome" in text and "BOOM" in text  # verbose, with the browser's stderr
    assert str(kept) in str(info.value) and "BOOM" in info.value.output
    assert os.listdir(empty_root) == []


def test_driver_log_env_in_a_missing_dir_should_raise_config_error(empty_root, tmp_path, monkeypatch):
    from embassy_cleanup import ConfigError

    monkeypatch.setenv(DRIVER_LOG_ENV, str(tmp_path / "no" / "such" / "cd.log"))
    cleanup = ChromeUltraAggressiveCleanup(temp_root=empty_root, watchdog=False)
    with pytest.raises(ConfigError) as info:
        cleanup.start()
    assert info.value.option == DRIVER_LOG_ENV and "does not exist" in str(info.value)
    assert os.listdir(empty_root) == []


def test_output_capture_should_bound_the_file_and_keep_the_last_lines(tmp_path):
    path = str(tmp_path / OUTPUT_FILE)
    capture = OutputCapture(path, limit=64 << 10)
    writer = (
        "import sys\n"
        "for i in range(50000): sys.stderr.write(f'console line {i}\\n')\n"
        "sys.stderr.write('the last words\\n')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=capture.writer, stderr=capture.writer)
    capture.close_writer()
    proc.wait(30)
    capture.session_closed(None)  # joins the reader: EOF once the writer exited
    size = os.path.getsize(path)
    assert 64 << 10 <= size < (64 << 10) + 200, size
    with open(path, encoding="utf-8") as fh_:
        assert fh_.read().endswith(f"[embassy_cleanup: output stops here, at {64 << 10} bytes]\n")
    assert capture.lines(2) == ["console line 49999", "the last words"]


def test_launch_error_should_pickle_with_its_evidence():
    err = LaunchError("Chrome did not start", path="/x", component="browser", output=["BOOM"], hint="h")
    back = pickle.loads(pickle.dumps(err))
    assert (back.component, back.output, back.hint, str(back)) == ("browser", ("BOOM",), "h", str(err))
    assert str(err) == (
        "Chrome did not start (path='/x', component='browser')\n"
        "  last output of chromedriver and the browser:\n"
        "    | BOOM\n"
        "  hint: h"
    )
