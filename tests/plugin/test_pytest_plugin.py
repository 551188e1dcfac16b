"""The pytest plugin, run in child pytests (``pytester.runpytest_subprocess``).

Each child runs with ``TMPDIR`` set to a dir of its own under this run's
sessions dir: chromedriver's temp profiles and the fixture's session dirs
land there, every process the child starts carries it in its environment,
and the leak guard (and each test's own clean-up) finds what a child left
by that dir, never by name.
"""

from __future__ import annotations

import os
import textwrap

import pytest

from embassy_cleanup.pytest_plugin import LEAK_HEADLINE, TEST_MARKER
from tests.plugin._child import read_note, still_running

pytest_plugins = ["pytester"]

#: A plain webdriver.Chrome() as users write it, with the flags this sandbox needs.
PLAIN = """
import os, shutil
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

LEAKED = []  # a driver kept alive and never quit: the usual leak


def plain_chrome():
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


def note(name, value):
    with open(os.path.join(os.environ["PLUGIN_TEST_NOTES"], name), "w") as fh:
        fh.write(value)
"""

LEAKY = """
def test_leaks():
    driver = plain_chrome()
    LEAKED.append(driver)
    note("profile", driver.capabilities["chrome"]["userDataDir"])
    note("chromedriver", str(driver.service.process.pid))
"""

CLEAN = """
def test_quits():
    driver = plain_chrome()
    try:
        driver.get("data:text/html,<title>clean</title>")
        assert driver.title == "clean"
    finally:
        driver.quit()
"""


@pytest.mark.chrome
def test_leak_check_should_fail_the_leaking_test_by_name_and_pass_the_clean_one(pytester, child_tmp):
    pytester.makepyfile(
        test_child=PLAIN
        + LEAKY
        + CLEAN
        + textwrap.dedent(
            """
            import pytest

            @pytest.fixture(scope="module")
            def shared_driver():
                driver = plain_chrome()
                yield driver
                driver.quit()

            def test_uses_a_module_scoped_driver(shared_driver):
                assert shared_driver.title is not None

            def test_runs_after_the_module_scoped_driver_started(shared_driver):
                assert shared_driver.title is not None
            """
        )
    )

    result = pytester.runpytest_subprocess("--chrome-leak-check", "-p", "no:cacheprovider", timeout=150)

    out = result.stdout.str()
    result.assert_outcomes(passed=4, errors=1)
    profile = read_note(child_tmp, "profile")
    driver_pid = read_note(child_tmp, "chromedriver")
    assert "ERROR at teardown of test_leaks" in out
    assert f"{LEAK_HEADLINE}: test_child.py::test_leaks left " in out
    assert f"pid {driver_pid} chromedriver (carries {TEST_MARKER}" in out
    assert f"chromium (carries {TEST_MARKER}, --user-data-dir={profile})" in out or (
        f"chromium (descends from the test process, --user-data-dir={profile})" in out
    )
    assert f"dir {profile} (chromedriver temp profile)" in out
    assert "The leak check killed them and removed those dirs" in out
    for name in ("test_quits", "test_uses_a_module_scoped_driver", "test_runs_after"):
        assert f"ERROR at teardown of {name}" not in out
    # the check cleaned up after the leaking test itself
    assert not os.path.lexists(profile)
    assert still_running(child_tmp) == []


CRASHED = """
import psutil


def test_killed_browser_never_quit():
    driver = plain_chrome()
    note("profile", driver.capabilities["chrome"]["userDataDir"])
    chromedriver = psutil.Process(driver.service.process.pid)
    tree = chromedriver.children(recursive=True) + [chromedriver]
    for proc in tree:
        proc.kill()
    driver.service.process.wait(10)
    psutil.wait_procs(tree, timeout=10)
"""


@pytest.mark.chrome
def test_leak_check_should_flag_a_temp_profile_left_after_its_processes_died(pytester, child_tmp):
    pytester.makepyfile(test_child=PLAIN + CRASHED + CLEAN)

    result = pytester.runpytest_subprocess("--chrome-leak-check", "-p", "no:cacheprovider", timeout=150)

    out = result.stdout.str()
    result.assert_outcomes(passed=2, errors=1)
    profile = read_note(child_tmp, "profile")
    assert "ERROR at teardown of test_killed_browser_never_quit" in out
    assert f"dir {profile} (chromedriver temp profile, no process left)" in out
    assert "ERROR at teardown of test_quits" not in out  # a clean quit() leaves only Chromium's litter
    assert not os.path.lexists(profile)
    # every per-test TMPDIR went away with the run (the singleton dirs a clean quit leaves included)
    assert [n for n in os.listdir(child_tmp) if n.startswith("elc-")] == []
    assert still_running(child_tmp) == []


@pytest.mark.chrome
def test_leak_check_should_be_off_by_default(pytester, child_tmp):
    pytester.makepyfile(test_child=PLAIN + LEAKY)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)

    result.assert_outcomes(passed=1)
    assert LEAK_HEADLINE not in result.stdout.str()
    # child_tmp kills what the child left, by its marker


@pytest.mark.chrome
def test_leak_check_should_be_turned_on_by_the_ini_option_and_keep_leaks_when_asked(pytester, child_tmp):
    pytester.makeini("[pytest]\nchrome_leak_check = true\nchrome_leak_keep = true\n")
    pytester.makepyfile(
        test_child=PLAIN
        + LEAKY
        + textwrap.dedent(
            """
            def test_the_leak_is_still_there_and_not_this_tests():
                assert LEAKED[0].service.process.poll() is None
                assert os.path.isdir(LEAKED[0].capabilities["chrome"]["userDataDir"])
            """
        )
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)

    out = result.stdout.str()
    result.assert_outcomes(passed=2, errors=1)
    assert f"{LEAK_HEADLINE}: test_child.py::test_leaks left " in out
    assert "They were left in place (chrome_leak_keep)." in out
    assert "ERROR at teardown of test_the_leak_is_still_there" not in out
    # child_tmp kills what the child kept, by its marker


@pytest.mark.chrome
def test_chrome_driver_fixture_should_use_the_ini_and_command_line_options(pytester, child_tmp):
    pytester.makeini("[pytest]\nembassy_cleanup_preset = minimal\nembassy_cleanup_headless = false\n")
    pytester.makepyfile(
        test_child="""
        import psutil
        import pytest

        def test_fixture(chrome_driver, chrome_session):
            assert chrome_session.options.preset == "minimal"      # from the ini
            assert chrome_session.options.headless is True         # --chrome-headless beats the ini
            assert chrome_session.options.cleanup_timeout == 7.0
            chrome_driver.get("data:text/html,<title>fixture</title>")
            assert chrome_driver.title == "fixture"
            browser = psutil.Process(chrome_driver.capabilities["goog:processID"]).cmdline()
            assert "--headless=new" in browser and "--renderer-process-limit=1" in browser  # minimal
            with open("root", "w") as fh:
                fh.write(chrome_session.root)

        @pytest.mark.embassy_cleanup(preset="stock")
        def test_marker_overrides(chrome_session):
            assert chrome_session.options.preset == "stock"
        """
    )

    result = pytester.runpytest_subprocess(
        "--chrome-headless",
        "--chrome-cleanup-timeout=7",
        "--chrome-leak-check",
        "-p",
        "no:cacheprovider",
        timeout=150,
    )

    result.assert_outcomes(passed=2)
    root = (pytester.path / "root").read_text()
    assert root.startswith(child_tmp + os.sep)
    assert not os.path.lexists(root)
    assert still_running(child_tmp) == []


def test_plugin_should_be_loaded_through_the_pytest11_entry_point(request):
    # If this fails, the package was installed before setup.cfg declared the entry point:
    # run `sh scripts/bootstrap.sh` (or `pip install -e .`) again.
    plugin = request.config.pluginmanager.get_plugin("embassy_cleanup")

    assert plugin is not None and plugin.__name__ == "embassy_cleanup.pytest_plugin"
    assert request.config.pluginmanager.get_plugin("embassy_cleanup-leak-check") is None  # off by default


def test_a_bad_option_value_should_stop_the_run_with_its_source(pytester):
    pytester.makeini("[pytest]\nembassy_cleanup_preset = huge\n")
    pytester.makepyfile(test_child="def test_nothing():\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*invalid Chrome preset 'huge' from the ini option embassy_cleanup_preset; choose one of stock*"]
    )


def test_a_bad_timeout_on_the_command_line_should_name_the_flag(pytester):
    pytester.makepyfile(test_child="def test_nothing():\n    pass\n")

    result = pytester.runpytest_subprocess(
        "--chrome-cleanup-timeout=soon", "-p", "no:cacheprovider", timeout=150
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid number of seconds 'soon' from --chrome-cleanup-timeout*"])
