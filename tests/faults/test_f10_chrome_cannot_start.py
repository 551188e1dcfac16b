"""F10: Chrome cannot start (bad binary, bad flag) or the options are bad:
a clear error; chromedriver killed; the session dir removed; for bad
options, nothing created at all."""

from __future__ import annotations

import os
import shutil

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, ConfigError, LaunchError, _launcher
from tests import _helpers as h
from tests.faults import _fault_helpers as fh


@pytest.fixture
def empty_root():
    """A fresh, short temp_root under the run dir, removed afterwards."""
    root = fh.short_dir("f10")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _launch_should_fail(root: str, **kwargs) -> tuple[LaunchError, ChromeUltraAggressiveCleanup]:
    cleanup = ChromeUltraAggressiveCleanup(temp_root=root, **kwargs)
    with pytest.raises(LaunchError) as info:
        with cleanup:
            pytest.fail("the with block ran although Chrome cannot start")
    err = info.value
    drivers = [pid for pid, name in cleanup.pids.items() if name == "chromedriver"]
    assert len(drivers) == 1, f"chromedriver was not recorded: {cleanup.pids}"
    assert not h.pid_running(drivers[0]), "chromedriver still runs"
    assert err.report is not None and err.report is cleanup.report
    assert err.report.ok, str(err.report)
    assert cleanup.root is None, "root names the session dir only while it exists"
    assert any(p.endswith(cleanup.session_id) for p in err.report.removed), "the session dir was not removed"
    assert os.listdir(root) == []
    assert h.processes_under(root) == []
    return err, cleanup


@pytest.mark.chrome
@pytest.mark.usefixtures("bystander")
@pytest.mark.parametrize(
    "script",
    ["#!/bin/sh\nexit 1\n", "#!/bin/sh\necho 'not a browser'\nexit 0\n"],
    ids=["exits-1", "not-chrome"],
)
def test_binary_that_exits_at_once_should_raise_launch_error_and_leave_nothing(
    empty_root, tmp_path, bystander, script
):
    binary = fh.write_executable(str(tmp_path / "fake-chrome"), script)
    err, _cleanup = _launch_should_fail(empty_root, binary=binary)
    assert binary in str(err) and "Chrome did not start" in str(err)
    assert err.path == binary


@pytest.mark.chrome
@pytest.mark.usefixtures("bystander")
def test_flag_that_makes_chrome_exit_should_raise_launch_error_and_leave_nothing(empty_root, bystander):
    # --version prints the version and exits: Chrome never opens DevTools
    err, _cleanup = _launch_should_fail(empty_root, extra_args=["--version"])
    assert "Chrome did not start" in str(err) and "extra_args" in str(err)


def test_temp_root_that_is_a_file_should_raise_config_error(tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(temp_root=str(a_file))
    assert info.value.option == "temp_root"
    assert str(a_file) in str(info.value) and "not an existing directory" in str(info.value)
    assert a_file.read_text() == ""


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory in which a new dir cannot be created, even by root."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o500)
        yield str(path)
        path.chmod(0o700)
        return
    # root ignores permission bits; sysfs refuses mkdir to everyone
    probe = "/sys/embassy-cleanup-probe"
    try:
        os.mkdir(probe)
    except OSError:
        yield "/sys"
    else:
        os.rmdir(probe)
        pytest.skip("running as root and /sys accepts mkdir: no unwritable directory available")


def test_unwritable_temp_root_should_raise_launch_error_before_anything_starts(unwritable_dir):
    children = _children()
    cleanup = ChromeUltraAggressiveCleanup(temp_root=unwritable_dir)
    with pytest.raises(LaunchError) as info:
        cleanup.start()
    assert repr(unwritable_dir) in str(info.value) and "temp_root=" in str(info.value)
    assert info.value.path == unwritable_dir
    assert cleanup.pids == {} and cleanup.root is None
    assert _children() <= children, "a process was started"


def _dir_of_length(length: int) -> str:
    head = os.path.join(h.RUN_ROOT, "")
    assert len(head) < length, f"the run dir {h.RUN_ROOT!r} is too long for this test"
    path = head + "d" * (length - len(head))
    os.makedirs(path, exist_ok=True)
    return path


def test_too_long_temp_root_should_raise_config_error_naming_the_limit():
    longest = _launcher.max_temp_root_length()
    assert longest == 29  # 107-byte sun_path less the session's socket path under it
    too_long = _dir_of_length(longest + 1)
    children = _children()
    cleanup = ChromeUltraAggressiveCleanup(temp_root=too_long)
    with pytest.raises(ConfigError) as info:
        cleanup.start()
    err = info.value
    assert err.option == "temp_root"
    assert f"at most {longest} characters" in str(err) and "107-byte" in str(err)
    assert os.listdir(too_long) == []
    assert _children() <= children, "a process was started"


@pytest.mark.chrome
def test_temp_root_of_exactly_the_limit_should_start_chrome():
    at_limit = _dir_of_length(_launcher.max_temp_root_length())
    cleanup = ChromeUltraAggressiveCleanup(temp_root=at_limit)
    try:
        with cleanup as driver:
            snap = fh.snapshot(cleanup)
            assert driver.current_url
        assert cleanup.report.ok, str(cleanup.report)
        fh.assert_session_gone(snap)
    finally:
        for proc in h.processes_under(at_limit):  # not under SESSIONS_ROOT: the leak guard cannot see it
            h.kill_all([proc])
        shutil.rmtree(at_limit, ignore_errors=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"cleanup_timeout": 0}, ConfigError, "cleanup_timeout"),
        ({"cleanup_timeout": -1}, ConfigError, "cleanup_timeout"),
        ({"cleanup_timeout": float("nan")}, ConfigError, "cleanup_timeout"),
        ({"cleanup_timeout": "10"}, TypeError, "cleanup_timeout"),
        ({"cleanup_timeout": True}, TypeError, "cleanup_timeout"),
        ({"preset": "nope"}, ConfigError, "preset"),
        ({"extra_args": "--foo"}, TypeError, "extra_args"),
        ({"extra_args": ["foo"]}, ConfigError, "extra_args"),
        ({"extra_args": ["--user-data-dir=/x"]}, ConfigError, "--user-data-dir"),
        ({"headless": "yes"}, TypeError, "headless"),
        ({"start_timeout": 0}, ConfigError, "start_timeout"),
        ({"start_timeout": float("inf")}, ConfigError, "start_timeout"),
        ({"start_timeout": "30"}, TypeError, "start_timeout"),
        ({"virtual_display": 1}, TypeError, "virtual_display"),
        ({"extra_args": ["--remote-debugging-port=9222"]}, ConfigError, "--remote-debugging-port"),
        ({"extra_args": ["--remote-debugging-pipe"]}, ConfigError, "--remote-debugging-pipe"),
        ({"env": {"A": 1}}, TypeError, "env"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_bad_option_should_raise_naming_it_and_create_nothing(empty_root, kwargs, error, named):
    children = _children()
    with pytest.raises(error) as info:
        ChromeUltraAggressiveCleanup(temp_root=empty_root, **kwargs)
    assert named in str(info.value)
    if isinstance(info.value, ConfigError):
        assert info.value.option == next(iter(kwargs))
    assert os.listdir(empty_root) == []
    assert _children() <= children
