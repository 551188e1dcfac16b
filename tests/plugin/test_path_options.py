"""``--chrome-binary``/``--chrome-driver-path`` and their ini options, in child pytests."""

from __future__ import annotations

import os

import pytest

from tests import _helpers as h
from tests.plugin._child import read_note, still_running

pytest_plugins = ["pytester"]


def wrapper(path, real: str, note: str) -> str:
    """An executable that notes it ran, then becomes ``real`` (same PID)."""
    path.write_text(f'#!/bin/sh\necho "$0" >> "$PLUGIN_TEST_NOTES/{note}"\nexec {real} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.chrome
def test_fixtures_should_start_the_binary_and_driver_given_on_the_command_line_and_in_the_ini(
    pytester, child_tmp
):
    (pytester.path / "bin").mkdir()
    (pytester.path / "conf").mkdir()
    binary = wrapper(pytester.path / "bin" / "my-chromium", h.CHROMIUM, "binary")
    driver = wrapper(pytester.path / "bin" / "my-chromedriver", h.CHROMEDRIVER, "driver")
    # the ini's path is relative to the ini file's dir, the flag's to where pytest runs
    (pytester.path / "conf" / "pytest.ini").write_text(
        "[pytest]\nembassy_cleanup_driver_path = ../bin/my-chromedriver\n"
    )
    pytester.makepyfile(
        test_child=f"""
        def test_session(chrome_session):
            assert chrome_session.options.binary == {binary!r}
            assert chrome_session.options.driver_path == {driver!r}
            chrome_session.driver.get("data:text/html,<title>ok</title>")
            assert chrome_session.driver.title == "ok"

        def test_pooled(pooled_driver):
            pooled_driver.get("data:text/html,<title>pooled</title>")
            assert pooled_driver.title == "pooled"
        """
    )

    result = pytester.runpytest_subprocess(
        "-c",
        "conf/pytest.ini",
        "--chrome-binary=bin/my-chromium",
        "-p",
        "no:cacheprovider",
        "test_child.py",
        timeout=150,
    )

    result.assert_outcomes(passed=2)
    # the binary ran once per browser (the direct session's and the pool's); the
    # driver once per chromedriver, and in context mode the pool's browser has
    # more than one (its job lanes and its BiDi lane): every one is the given driver
    assert read_note(child_tmp, "binary").splitlines() == [binary, binary]
    drivers = read_note(child_tmp, "driver").splitlines()
    assert len(drivers) >= 3 and set(drivers) == {driver}, drivers
    assert still_running(child_tmp) == []


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            ["--chrome-binary=nowhere/chromium"],
            "",
            "*the Chrome binary '{path}/nowhere/chromium' from --chrome-binary: not found; "
            "give the path to the Chrome binary, e.g. /usr/bin/chromium",
        ),
        (
            [],
            "embassy_cleanup_driver_path = not-executable",
            "*chromedriver '{path}/not-executable' from the ini option embassy_cleanup_driver_path: "
            "not an executable file; give the path to chromedriver, e.g. /usr/bin/chromedriver",
        ),
        (
            [],
            "embassy_cleanup_pool_size = 0",
            "*invalid pool size '0' from the ini option embassy_cleanup_pool_size; "
            "give a whole number >= 1, e.g. 2",
        ),
        (
            ["--chrome-artifacts=not-executable/sub"],
            "",
            "*cannot use the artifacts dir '{path}/not-executable/sub' from --chrome-artifacts: "
            "Not a directory; give a directory that exists or can be created",
        ),
    ],
    ids=["missing-binary", "driver-not-executable", "pool-size", "artifacts-under-a-file"],
)
def test_a_bad_path_option_should_stop_the_run_naming_the_value_and_its_source(pytester, args, ini, expected):
    (pytester.path / "not-executable").write_text("#!/bin/sh\n")
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_child="def test_nothing():\n    pass\n")

    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=150)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected.format(path=os.fspath(pytester.path))])
