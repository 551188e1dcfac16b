"""``--chrome-artifacts``: what a failed test leaves for its author, in child pytests."""

from __future__ import annotations

import os
import shutil
import tempfile
import types

import pytest

from embassy_cleanup import pytest_plugin as plugin
from embassy_cleanup.pytest_plugin import artifact_stem
from tests import _helpers as h
from tests.plugin._child import still_running

pytest_plugins = ["pytester"]

PAGE = (
    "data:text/html,<title>artifact</title><p>artifact-page</p>"
    "<script>console.log('artifact-log');console.error('artifact-error')</script>"
)

FAILING = f"""
import pytest

PAGE = {PAGE!r}


def test_fails_with_a_driver(chrome_driver):
    chrome_driver.get(PAGE)
    assert chrome_driver.title == "another title"


@pytest.mark.parametrize("case", ["a/b c"])
def test_fails_with_a_pooled_driver(pooled_driver, case):
    pooled_driver.get(PAGE)
    pooled_driver.execute_script("console.warn('pooled-warning')")
    raise RuntimeError("pooled failure")


def test_passes(chrome_driver):
    chrome_driver.get(PAGE)


def test_fails_without_a_driver():
    assert False
"""


def test_artifact_stem_should_keep_nodeids_apart_and_make_them_safe_file_names():
    assert artifact_stem("tests/test_x.py::test_a[1]") == "tests_test_x.py__test_a_1"
    assert artifact_stem("t.py::test_b[a/b c]") == "t.py__test_b_a_b_c"
    long_a, long_b = "t.py::test_" + "a" * 300, "t.py::test_" + "a" * 299 + "b"
    assert len(artifact_stem(long_a)) == 160
    assert artifact_stem(long_a) != artifact_stem(long_b)


@pytest.mark.chrome
@pytest.mark.parametrize("isolation", ["browser", "context"])  # pooled_driver: a reset browser, or a context
def test_artifacts_should_be_saved_for_failed_tests_that_held_a_chrome_fixture_only(
    pytester, child_tmp, isolation
):
    pytester.makepyfile(test_child=FAILING)
    out_dir = os.path.join(child_tmp, "artifacts")

    result = pytester.runpytest_subprocess(
        f"--chrome-artifacts={out_dir}",
        f"--chrome-isolation={isolation}",
        "--chrome-leak-check",
        "-p",
        "no:cacheprovider",
        timeout=150,
    )

    result.assert_outcomes(passed=1, failed=3)
    direct = os.path.join(out_dir, "test_child.py__test_fails_with_a_driver")
    pooled = os.path.join(out_dir, "test_child.py__test_fails_with_a_pooled_driver_a_b_c")
    expected = sorted(base + ext for base in (direct, pooled) for ext in (".png", ".html", ".console.log"))
    assert sorted(os.path.join(out_dir, n) for n in os.listdir(out_dir)) == expected
    for base in (direct, pooled):
        with open(base + ".png", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        with open(base + ".html", encoding="utf-8") as fh:
            assert "artifact-page" in fh.read()
        with open(base + ".console.log", encoding="utf-8") as fh:
            console = fh.read()
        # every console call of the page, whether chromedriver kept them all
        # (goog:loggingPrefs reached the session) or the page hook saw them
        assert "artifact-log" in console and "artifact-error" in console, console
    with open(pooled + ".console.log", encoding="utf-8") as fh:
        assert "pooled-warning" in fh.read()
    out = result.stdout.str()
    assert f"screenshot: {direct}.png" in out and f"console log: {pooled}.console.log" in out
    assert "chrome leak check" not in out  # the pool's browser is not blamed on the test that started it
    assert still_running(child_tmp) == []


@pytest.mark.chrome
def test_artifacts_should_name_what_could_not_be_saved_and_keep_the_tests_own_failure(pytester, child_tmp):
    pytester.makeini("[pytest]\nembassy_cleanup_artifacts = saved\n")
    pytester.makepyfile(
        test_child="""
        def test_browser_gone(chrome_session):
            for proc in chrome_session.pids:  # the browser and chromedriver die mid-test
                try:
                    __import__("os").kill(proc, 9)
                except ProcessLookupError:
                    pass
            assert False, "the test's own failure"
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)

    out = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "the test's own failure" in out
    assert "screenshot: not saved (" in out and "page source: not saved (" in out
    assert os.path.isdir(pytester.path / "saved")  # relative to the ini file's dir
    assert still_running(child_tmp) == []


@pytest.fixture
def plain_chrome():
    """Start a plain webdriver.Chrome (not ours), with or without
    goog:loggingPrefs, its profile and TMPDIR under this run's sessions dir;
    quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started = []

    def start(logging_prefs: bool):
        root = tempfile.mkdtemp(prefix="plain-", dir=h.SESSIONS_ROOT)
        opts = webdriver.ChromeOptions()
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            f"--user-data-dir={root}/p",
        ):
            opts.add_argument(flag)
        if logging_prefs:
            opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(h.CHROMEDRIVER, env={**os.environ, "TMPDIR": root})
        started.append((None, root))
        driver = webdriver.Chrome(options=opts, service=service)
        started[-1] = (driver, root)
        return driver

    yield start
    for driver, root in started:
        if driver is not None:
            driver.quit()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.chrome
@pytest.mark.parametrize("logging_prefs", [True, False], ids=["logging-prefs", "chromedriver-default"])
def test_console_log_should_hold_every_console_call_with_or_without_logging_prefs(
    plain_chrome, logging_prefs
):
    driver = plain_chrome(logging_prefs)
    config = types.SimpleNamespace(stash=pytest.Stash())
    config.stash[plugin._CONSOLES] = {}
    driver.execute_script("console.warn('before the test got the driver')")

    console = plugin._prepare_console(config, driver)
    driver.get(PAGE)
    text = plugin.console_text(plugin.Held("chrome_driver", driver, console))

    # with the capability get_log has it all; without, the page hook fills in
    assert console == plugin.Console(full=logging_prefs, hooked=not logging_prefs)
    assert config.stash[plugin._CONSOLES] == {driver.session_id: console}  # probed once per browser
    assert "artifact-log" in text and "artifact-error" in text
    assert plugin._PROBE not in text and "before the test" not in text
    if logging_prefs:
        assert text.startswith('# driver.get_log("browser"): every console entry')
        assert "embassy_cleanup's hook" not in text
    else:
        assert text.startswith('# driver.get_log("browser"): warnings and errors only')
        assert "# console calls and uncaught errors in the current page (embassy_cleanup's hook)\n" in text
