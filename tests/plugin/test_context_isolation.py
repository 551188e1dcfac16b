"""``--chrome-isolation`` / ``embassy_cleanup_isolation`` (issue 15): with
``context`` (the default), ``pooled_driver`` gives each test a fresh browser context of the
worker's shared browser instead of a reset browser.  Run in child pytests,
with a local ``http.server`` page that writes a cookie and ``localStorage``.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import defaultdict

import pytest

from embassy_cleanup.pytest_plugin import LEAK_HEADLINE
from tests.plugin._child import still_running

pytest_plugins = ["pytester"]

#: A writer test and a reader test on one origin; each records what it saw
#: before it wrote, and which browser it ran in.
WRITER_READER = textwrap.dedent(
    """
    import http.server, json, os, threading

    import pytest

    WRITE = (
        "document.cookie = 'job=' + arguments[0] + '; max-age=3600';"
        "localStorage.setItem('job', arguments[0]);"
    )
    READ = "return [document.cookie, localStorage.getItem('job')]"


    @pytest.fixture(scope="module")
    def site():
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<!doctype html><title>site</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}/"
        server.shutdown()
        server.server_close()


    def visit(name, driver, chrome_pool, site, value):
        driver.get(site)
        seen = driver.execute_script(READ)
        driver.execute_script(WRITE, value)
        assert driver.execute_script(READ) == ["job=" + value, value]
        entry = {
            "test": name,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "browser": chrome_pool.session_of(driver).session_id,
            "seen": seen,
            "windows": len(driver.window_handles),
        }
        with open(os.path.join(os.environ["PLUGIN_TEST_NOTES"], "test_" + name), "w") as fh:
            json.dump(entry, fh)


    def test_1_writes(pooled_driver, chrome_pool, site):
        visit(__name__ + "-1", pooled_driver, chrome_pool, site, "one")


    def test_2_writes_after_it(pooled_driver, chrome_pool, site):
        visit(__name__ + "-2", pooled_driver, chrome_pool, site, "two")
    """
)


def read_records(child_tmp: str) -> dict[str, dict]:
    notes = os.path.join(child_tmp, "notes")
    out = {}
    for name in sorted(os.listdir(notes)):
        if name.startswith("test_"):
            with open(os.path.join(notes, name), encoding="utf-8") as fh:
                entry = json.load(fh)
            out[entry["test"]] = entry
    return out


@pytest.mark.chrome
@pytest.mark.parametrize(
    ("args", "ini", "isolated"),
    [
        ([], "", True),  # the default
        (["--chrome-isolation=context"], "embassy_cleanup_isolation = browser", True),
        ([], "embassy_cleanup_isolation = context", True),
        (["--chrome-isolation=browser"], "", False),  # a reset browser keeps localStorage (the control)
    ],
    ids=["default-context", "command-line", "ini", "browser"],
)
def test_pooled_tests_should_not_see_each_others_cookie_or_storage_under_context_isolation(
    pytester, child_tmp, args, ini, isolated
):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_child=WRITER_READER)

    result = pytester.runpytest_subprocess(
        *args, "--chrome-leak-check", "-p", "no:cacheprovider", timeout=170
    )

    result.assert_outcomes(passed=2)
    assert LEAK_HEADLINE not in result.stdout.str()
    first, second = (read_records(child_tmp)[f"test_child-{n}"] for n in (1, 2))
    assert first["browser"] == second["browser"], "both tests should share the worker's one browser"
    assert first["seen"] == ["", None]
    if isolated:
        assert second["seen"] == ["", None], second
    else:
        # The reset clears cookies, not per-origin storage (docs/pytest.md).
        assert second["seen"] == ["", "one"], second
    assert second["windows"] == 1
    assert still_running(child_tmp) == []


@pytest.mark.chrome
def test_context_isolation_under_xdist_should_isolate_the_tests_of_each_worker(pytester, child_tmp):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (the dev extra)")
    pytester.makeini("[pytest]\nembassy_cleanup_isolation = context\n")
    pytester.makepyfile(test_a=WRITER_READER, test_b=WRITER_READER)

    # loadfile: each worker gets one file, so both workers run their contexts at the same time
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadfile", "--chrome-leak-check", "-p", "no:cacheprovider", timeout=170
    )

    result.assert_outcomes(passed=4)
    assert LEAK_HEADLINE not in result.stdout.str()
    records = read_records(child_tmp)
    assert len(records) == 4, records
    by_worker = defaultdict(list)
    for rec in records.values():
        by_worker[rec["worker"]].append(rec)
    assert sorted(by_worker) == ["gw0", "gw1"]
    browsers = {w: {r["browser"] for r in recs} for w, recs in by_worker.items()}
    assert all(len(b) == 1 for b in browsers.values()), browsers  # one shared browser per worker
    assert browsers["gw0"] != browsers["gw1"]
    assert all(r["seen"] == ["", None] for r in records.values()), records
    assert still_running(child_tmp) == []


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            [],
            "embassy_cleanup_isolation = tab",
            "*invalid isolation 'tab' from the ini option embassy_cleanup_isolation; "
            "choose one of browser, context",
        ),
        (
            ["--chrome-isolation=Context"],
            "embassy_cleanup_isolation = browser",
            "*invalid isolation 'Context' from --chrome-isolation; choose one of browser, context",
        ),
    ],
    ids=["ini", "command-line"],
)
def test_a_bad_isolation_should_stop_the_run_naming_the_value_and_its_source(pytester, args, ini, expected):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_child="def test_nothing():\n    pass\n")

    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", timeout=150)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
