"""virtual_display=True (issue 14): headed Chrome in an Xvfb the session
starts on a free display, owns, tears down with the same six stages and
verifies gone; the socket file a killed Xvfb leaves in /tmp goes too."""

from __future__ import annotations

import os
import shutil

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, ConfigError, LaunchError
from tests import _helpers as h

HAVE_XVFB = shutil.which("Xvfb") is not None


def _xvfb_of(cleanup: ChromeUltraAggressiveCleanup) -> psutil.Process:
    pids = [pid for pid, name in cleanup.pids.items() if name == "Xvfb"]
    assert len(pids) == 1, f"Xvfb was not recorded: {cleanup.pids}"
    return psutil.Process(pids[0])


def _display_of(xvfb: psutil.Process) -> str:
    env = xvfb.environ()
    assert env.get("EMBASSY_CLEANUP_SESSION"), "Xvfb does not carry the session's marker"
    return xvfb.cmdline()[xvfb.cmdline().index("-displayfd") + 1]


@pytest.mark.chrome
@pytest.mark.skipif(not HAVE_XVFB, reason="xvfb is not installed")
@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "forced"])
def test_headed_chrome_should_run_in_an_owned_xvfb_that_is_torn_down(session_kwargs, monkeypatch, graceful):
    monkeypatch.delenv("DISPLAY", raising=False)  # as on a server: no X server of its own
    cleanup = ChromeUltraAggressiveCleanup(
        headless=False, virtual_display=True, graceful=graceful, **session_kwargs
    )
    with cleanup as driver:
        driver.get("data:text/html,<title>headed</title>")
        assert driver.title == "headed"
        assert "Headless" not in driver.execute_script("return navigator.userAgent")
        xvfb = _xvfb_of(cleanup)
        number = None
        for pid, name in cleanup.pids.items():
            if name == "chromedriver":
                number = psutil.Process(pid).environ()["DISPLAY"]
        assert number is not None and number.startswith(":"), "chromedriver got no DISPLAY"
        socket_path = f"/tmp/.X11-unix/X{number[1:]}"
        had_socket = os.path.exists(socket_path)
        assert _display_of(xvfb) != "", "Xvfb was not given -displayfd"
        xvfb_ident = (xvfb.pid, xvfb.create_time())
    report = cleanup.report
    assert report.ok, str(report)
    assert not h.pid_running(*xvfb_ident), "Xvfb survived the teardown"
    killed = {a.pid: a.via for a in report.stage("tree-kill").killed}
    assert killed.get(xvfb_ident[0]) == "started", f"tree-kill did not end Xvfb as ours: {killed}"
    if had_socket:
        assert not os.path.exists(socket_path), f"{socket_path} was left behind"


def test_virtual_display_without_xvfb_should_raise_config_error_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Xvfb on it
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(headless=False, virtual_display=True)
    assert info.value.option == "virtual_display"
    assert "Debian package xvfb" in str(info.value) and "apt-get install xvfb" in str(info.value)


def test_virtual_display_with_headless_should_raise_config_error():
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(headless=True, virtual_display=True)
    assert info.value.option == "virtual_display" and "headless=False" in str(info.value)


@pytest.mark.chrome
def test_xvfb_that_exits_should_raise_launch_error_quoting_it(session_kwargs, monkeypatch, tmp_path):
    fake = tmp_path / "Xvfb"
    fake.write_text("#!/bin/sh\necho '(EE) Fatal server error: (EE) no screens found' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cleanup = ChromeUltraAggressiveCleanup(headless=False, virtual_display=True, **session_kwargs)
    with pytest.raises(LaunchError) as info:
        cleanup.start()
    err = info.value
    assert err.component == "display" and err.path == str(fake)
    assert "exited with status 1 before it opened a display" in str(err)
    assert "(EE) Fatal server error: (EE) no screens found" in err.output
    assert err.report is not None and err.report.ok, str(err.report)
    assert list(cleanup.pids.values()) == ["Xvfb"]
