"""F9: the chromedriver path is wrong or not executable: a clear error
before anything starts, and nothing left (no session dir, no process)."""

from __future__ import annotations

import os
import shutil

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, DriverNotFoundError, _platform
from embassy_cleanup._ownership import ProcessTracker
from tests.faults import _fault_helpers as fh


@pytest.fixture
def empty_root():
    """A fresh, short temp_root under the run dir, removed afterwards."""
    root = fh.short_dir("f9")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _enter_should_fail(empty_root: str, **kwargs) -> DriverNotFoundError:
    children = _children()
    cleanup = ChromeUltraAggressiveCleanup(temp_root=empty_root, **kwargs)
    with pytest.raises(DriverNotFoundError) as info:
        with cleanup:
            pytest.fail("the with block ran although chromedriver is unusable")
    assert os.listdir(empty_root) == [], "a session dir was created"
    assert cleanup.pids == {} and cleanup.root is None
    assert _children() <= children, "a process was started"
    return info.value


def test_missing_driver_path_should_fail_before_anything_starts(empty_root, tmp_path):
    missing = str(tmp_path / "no-such-chromedriver")
    err = _enter_should_fail(empty_root, driver_path=missing)
    assert missing in str(err) and "driver_path=" in str(err)
    assert "not found" in str(err)
    assert isinstance(err, FileNotFoundError)


def test_non_executable_driver_path_should_fail_before_anything_starts(empty_root, tmp_path):
    not_exec = tmp_path / "chromedriver"
    not_exec.write_text("#!/bin/sh\nexit 0\n")
    not_exec.chmod(0o644)
    err = _enter_should_fail(empty_root, driver_path=str(not_exec))
    assert str(not_exec) in str(err) and "driver_path=" in str(err)
    assert "not an executable file" in str(err)


def test_directory_as_driver_path_should_fail_before_anything_starts(empty_root, tmp_path):
    err = _enter_should_fail(empty_root, driver_path=str(tmp_path))
    assert str(tmp_path) in str(err) and "not an executable file" in str(err)


def test_missing_chromedriver_path_env_should_fail_naming_the_variable(empty_root, tmp_path, monkeypatch):
    missing = str(tmp_path / "no-such-chromedriver")
    monkeypatch.setenv("CHROMEDRIVER_PATH", missing)
    err = _enter_should_fail(empty_root)
    assert missing in str(err) and "CHROMEDRIVER_PATH" in str(err)


def test_close_after_a_failed_start_should_signal_nothing(empty_root, tmp_path, monkeypatch):
    # the try/start/finally/close pattern: start() failed before the session
    # had a root, so nothing is the session's.  Signals are intercepted: a
    # regression here must not take the machine down with it.
    signalled = []
    monkeypatch.setattr(
        ProcessTracker, "kill_tree", lambda self, procs, *a, **kw: (signalled.extend(procs), ([], []))[1]
    )
    monkeypatch.setattr(_platform, "signal_process", lambda pid, *a: signalled.append(pid))
    cleanup = ChromeUltraAggressiveCleanup(temp_root=empty_root, driver_path=str(tmp_path / "missing"))
    try:
        with pytest.raises(DriverNotFoundError):
            cleanup.start()
    finally:
        report = cleanup.close()
    assert signalled == []
    assert report.killed == () and report.removed == ()
    assert cleanup.close() is report
    assert os.listdir(empty_root) == []
