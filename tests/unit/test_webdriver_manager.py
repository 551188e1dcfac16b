"""The webdriver-manager fallback of driver resolution, with no network.

Each scenario runs in a child interpreter whose ``HOME`` is a temp dir, so
webdriver-manager's cache is ``$HOME/.wdm`` there (its documented default)
and can be pre-filled with a fake chromedriver.  The child refuses every
socket connection, so a test that passes proves that nothing was fetched.
Nothing here starts Chrome; the browser is a script that prints a version.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from embassy_cleanup import _launcher
from tests import _helpers as h

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("webdriver_manager") is None,
        reason="webdriver-manager is not installed (the dev and webdriver-manager extras)",
    ),
    pytest.mark.skipif(sys.platform == "win32", reason="the fake browser and driver are POSIX shell scripts"),
]

#: The child: no network, Selenium Manager finds nothing, then resolve_driver().
CHILD = textwrap.dedent(
    """
    import json, logging, socket, sys

    ATTEMPTS = []

    def no_network(*args, **kwargs):
        ATTEMPTS.append(args[1:] or args)
        raise OSError("network disabled by the test")

    socket.socket.connect = no_network
    socket.create_connection = no_network
    socket.getaddrinfo = no_network

    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def offline(self, args):
        raise RuntimeError("Selenium Manager disabled by the test")

    SeleniumManager.binary_paths = offline
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

    from embassy_cleanup import DriverNotFoundError, _launcher

    try:
        path, source = _launcher.resolve_driver(None, sys.argv[1])
        out = {"path": path, "source": source}
    except DriverNotFoundError as err:
        out = {"tried": err.tried}
    print(json.dumps({**out, "connects": len(ATTEMPTS)}))
    """
)


def script(path, text: str) -> str:
    path.write_text(f"#!/bin/sh\necho '{text}'\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def home(tmp_path):
    """A HOME for the child, a bin dir with no chromedriver, a fake Chromium."""
    (tmp_path / "home").mkdir()
    (tmp_path / "bin").mkdir()
    browser = script(tmp_path / "bin" / "chromium", "Chromium 131.0.6778.85 built on Debian GNU/Linux 12")
    return tmp_path, browser


@pytest.fixture(scope="module")
def os_type(tmp_path_factory) -> str:
    """webdriver-manager's name for this OS (``linux64``), asked in a child:
    importing webdriver-manager here would load a .env into this process."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from webdriver_manager.core.os_manager import OperationSystemManager as M\n"
            "print(M().get_os_type())",
        ],
        cwd=tmp_path_factory.mktemp("wdm-os"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def prefill_cache(home_dir, os_type: str, browser_build: str, driver_version: str, driver_text: str) -> str:
    """Put a fake chromedriver into webdriver-manager's cache, as its own
    install() leaves it: the binary under drivers/ and a drivers.json entry
    keyed ``<os>_chromedriver_<driver version>_for_<browser build>``, dated
    today (webdriver-manager trusts a cache entry for one day)."""
    where = home_dir / ".wdm" / "drivers" / "chromedriver" / os_type / driver_version
    where.mkdir(parents=True)
    driver = script(where / "chromedriver", driver_text)
    key = f"{os_type}_chromedriver_{driver_version}_for_{browser_build}"
    entry = {"timestamp": datetime.date.today().strftime("%d/%m/%Y"), "binary_path": driver}
    (home_dir / ".wdm" / "drivers.json").write_text(json.dumps({key: entry}))
    return driver


def run_child(tmp_path, browser: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WDM_", "PYTEST_XDIST"))}
    env.pop(_launcher.DRIVER_ENV, None)
    env.update(HOME=str(tmp_path / "home"), PATH=str(tmp_path / "bin"), PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, browser],
        cwd=tmp_path,  # webdriver-manager reads a .env from here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_webdriver_manager_should_return_the_cached_driver_of_the_chromium_build_without_network(
    home, os_type
):
    tmp_path, browser = home
    driver = prefill_cache(
        tmp_path / "home", os_type, "131.0.6778", "131.0.6778.87", "ChromeDriver 131.0.6778.87 (fake)"
    )

    result, log = run_child(tmp_path, browser)

    assert result == {
        "path": driver,
        "source": "webdriver-manager, ChromeDriver 131.0.6778.87 for chromium 131.0.6778",
        "connects": 0,
    }
    assert (
        "webdriver-manager: asking for the chromedriver for chromium 131.0.6778 "
        f"(from {browser} --version: 'Chromium 131.0.6778.85 built on Debian GNU/Linux 12')"
    ) in log
    assert f"webdriver-manager: got {driver} (ChromeDriver 131.0.6778.87)" in log
    assert "major versions differ" not in log


def test_webdriver_manager_should_not_take_a_cached_driver_of_another_browser_build(home, os_type):
    tmp_path, browser = home
    # The build Google's latest release would match, not our Chromium's: must not be used.
    prefill_cache(
        tmp_path / "home", os_type, "156.0.8078", "156.0.8078.114", "ChromeDriver 156.0.8078.114 (fake)"
    )

    result, log = run_child(tmp_path, browser)

    source, outcome = result["tried"][-1]
    assert source == "webdriver-manager"
    assert outcome.startswith(
        f"asked for the chromedriver for chromium 131.0.6778 (from {browser} --version: "
        "'Chromium 131.0.6778.85 built on Debian GNU/Linux 12'): "
    )
    assert outcome.endswith("Could not reach host. Are you offline?")  # webdriver-manager's words
    assert result["connects"] > 0  # it did try to look the 131.0.6778 driver up
    assert f"webdriver-manager: {outcome}" in log  # logged at WARNING
    # nothing was downloaded next to the fake
    versions = os.listdir(tmp_path / "home" / ".wdm" / "drivers" / "chromedriver" / os_type)
    assert versions == ["156.0.8078.114"]


def test_webdriver_manager_should_warn_when_the_cached_driver_is_of_another_major_version(home, os_type):
    tmp_path, browser = home
    prefill_cache(
        tmp_path / "home", os_type, "131.0.6778", "131.0.6778.87", "ChromeDriver 130.0.6723.1 (fake)"
    )

    result, log = run_child(tmp_path, browser)

    assert result["source"] == "webdriver-manager, ChromeDriver 130.0.6723.1 for chromium 131.0.6778"
    assert "the major versions differ" in log


@pytest.mark.parametrize(
    ("printed", "kind", "build", "full"),
    [
        (
            "Chromium 156.0.8078.114 built on Debian GNU/Linux 12 (bookworm)",
            "chromium",
            "156.0.8078",
            "156.0.8078.114",
        ),
        ("Chromium 120.0.6099.224 snap", "chromium", "120.0.6099", "120.0.6099.224"),
        ("Google Chrome 120.0.6099.109 ", "google-chrome", "120.0.6099", "120.0.6099.109"),
        ("Google Chrome for Testing 121.0.6167.85", "google-chrome", "121.0.6167", "121.0.6167.85"),
    ],
)
def test_read_browser_version_should_tell_chromium_from_google_chrome(tmp_path, printed, kind, build, full):
    binary = script(tmp_path / "browser", printed)

    version = _launcher.read_browser_version(binary)

    assert version == _launcher.BrowserVersion(kind, build, full, printed.strip())


def test_read_browser_version_should_give_none_for_a_binary_that_prints_no_version(tmp_path):
    assert _launcher.read_browser_version(script(tmp_path / "browser", "hello")) is None
    assert _launcher.read_browser_version(str(tmp_path / "missing")) is None


@pytest.mark.skipif(h.CHROMIUM is None or "chromium" not in h.CHROMIUM, reason="Chromium is not installed")
def test_read_browser_version_should_read_the_installed_chromium():
    printed = subprocess.run(
        [h.CHROMIUM, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout

    version = _launcher.read_browser_version(h.CHROMIUM)

    assert version is not None and version.kind == _launcher.WDM_CHROMIUM
    assert version.full in printed and printed.startswith("Chromium ")
