"""The plugin under pytest-xdist, and the pooled fixtures, in child pytests."""

from __future__ import annotations

import json
import os
import textwrap
from collections import defaultdict

import pytest

from embassy_cleanup.pytest_plugin import LEAK_HEADLINE
from tests.plugin._child import still_running
from tests.plugin.test_pytest_plugin import LEAKY, PLAIN

pytest_plugins = ["pytester"]
pytest.importorskip("xdist", reason="pytest-xdist is not installed (the dev extra)")

#: Each pooled test records which worker ran it and which browser it got.
POOLED = textwrap.dedent(
    """
    import json, os, psutil


    def record(name, driver):
        entry = {
            "test": name,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "browser": driver.session_id,
            "url": driver.current_url,
            "windows": len(driver.window_handles),
            "pid": driver.capabilities["goog:processID"],
        }
        with open(os.path.join(os.environ["PLUGIN_TEST_NOTES"], name), "w") as fh:
            json.dump(entry, fh)


    def test_pooled_1(pooled_driver):
        record(__name__ + "-1", pooled_driver)
        pooled_driver.get("data:text/html,<title>one</title>")
        pooled_driver.switch_to.new_window("tab")  # the pool's reset closes it


    def test_direct(chrome_driver):
        chrome_driver.get("data:text/html,<title>direct</title>")
        assert chrome_driver.title == "direct"


    def test_pooled_2(pooled_driver):
        record(__name__ + "-2", pooled_driver)
        pooled_driver.get("data:text/html,<title>two</title>")
        assert pooled_driver.title == "two"


    def test_pooled_3(pooled_driver, chrome_pool):
        record(__name__ + "-3", pooled_driver)
        assert chrome_pool.stats().in_use == 1
    """
)


def read_records(child_tmp: str) -> list[dict]:
    notes = os.path.join(child_tmp, "notes")
    out = []
    for name in sorted(os.listdir(notes)):
        with open(os.path.join(notes, name), encoding="utf-8") as fh:
            if name.startswith("test_"):
                out.append(json.load(fh))
    return out


@pytest.mark.chrome
def test_under_xdist_each_worker_should_get_its_own_pool_and_blame_only_its_own_leak(pytester, child_tmp):
    pytester.makepyfile(
        test_a=POOLED,
        test_b=PLAIN + POOLED + LEAKY,
    )

    # loadfile: each worker gets one file, so both run pooled tests at the same time
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--dist",
        "loadfile",
        "--chrome-isolation=browser",  # one browser per worker, reset between tests
        "--chrome-leak-check",
        "-p",
        "no:cacheprovider",
        timeout=170,
    )

    out = result.stdout.str()
    result.assert_outcomes(passed=9, errors=1)  # test_leaks passes, then errors at teardown
    assert out.count("ERROR at teardown of") == 1 and "ERROR at teardown of test_leaks" in out
    assert f"{LEAK_HEADLINE}: test_b.py::test_leaks left " in out
    records = read_records(child_tmp)
    assert len(records) == 6
    by_worker = defaultdict(list)
    for rec in records:
        by_worker[rec["worker"]].append(rec)
    assert sorted(by_worker) == ["gw0", "gw1"]
    browsers = {w: {r["browser"] for r in recs} for w, recs in by_worker.items()}
    # one browser per worker, reused by its three tests, never shared across workers
    assert all(len(b) == 1 for b in browsers.values()), browsers
    assert browsers["gw0"] != browsers["gw1"]
    for recs in by_worker.values():
        later = [r for r in recs if not r["test"].endswith("-1")]
        assert [(r["url"], r["windows"]) for r in later] == [("about:blank", 1)] * 2  # reset between tests
    assert still_running(child_tmp) == []


@pytest.mark.chrome
def test_pooled_driver_should_reuse_one_browser_and_give_a_marked_test_its_own(pytester, child_tmp):
    pytester.makepyfile(
        test_child=POOLED
        + textwrap.dedent(
            """
            import pytest


            @pytest.mark.embassy_cleanup(extra_args=["--lang=de"])
            def test_pooled_marked(pooled_driver, chrome_pool):
                record("test_marked", pooled_driver)
                assert "--lang=de" in psutil.Process(pooled_driver.capabilities["goog:processID"]).cmdline()
                # pool size 1 (the default): this browser replaced the idle one
                assert chrome_pool.stats().evicted == 1 and chrome_pool.stats().created == 2
            """
        )
    )

    result = pytester.runpytest_subprocess(
        "--chrome-isolation=browser", "--chrome-leak-check", "-p", "no:cacheprovider", timeout=170
    )

    result.assert_outcomes(passed=5)
    assert LEAK_HEADLINE not in result.stdout.str()
    records = {r["test"].rsplit("-", 1)[-1]: r for r in read_records(child_tmp)}
    assert records["1"]["browser"] == records["2"]["browser"] == records["3"]["browser"]
    assert records["test_marked"]["browser"] != records["1"]["browser"]
    assert still_running(child_tmp) == []
