"""Fixtures shared by the whole suite.

* ``leak_guard`` (autouse): after every test, nothing marked with this test
  run's sessions dir may still run, no session dir may remain, and the test
  process may have no zombie children.  Leftovers are killed by PID (identity
  held by psutil) and removed, and the test fails naming them, so one leaking
  test cannot poison the next.  It runs after every test, Chrome or not,
  because it is cheap: one pass over the process table, reading the command
  line and environment only of processes born since the previous pass
  (``tests._helpers.LeakGuard``).
* ``session_kwargs``: options that put sessions under the run dir.
* ``bystander``: a Chrome started without our API plus a server on a port in
  9000-10000; the fixture asserts both survived the test.  One is started per
  module (``bystander_slot``) and shared by its tests; after a test that
  killed it (or a process of it), the next test gets a new one.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from tests import _helpers as h


def pytest_configure(config):
    # A shell without job control starts a background command (`... &` in a
    # script, a CI runner's step) with SIGINT ignored, and every child inherits
    # that: the CLI the Ctrl-C tests start would ignore their SIGINT.  A handler
    # (unlike SIG_IGN) is reset by exec, so the children start with the default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if h.CHROMIUM and h.CHROMEDRIVER:
        return
    if os.environ.get("CI"):
        return  # in CI a missing Chrome is a failure, not a skip
    skip = pytest.mark.skip(reason="chromium and chromedriver are not installed")
    for item in items:
        if "chrome" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    leftovers = h.processes_under(h.RUN_ROOT)
    h.kill_all(leftovers)
    shutil.rmtree(h.RUN_ROOT, ignore_errors=True)


_guard = h.LeakGuard()
#: What tests measured (their ``user_properties``: crash timings, the Grid's
#: start, ...), printed at the end; under pytest-xdist the reports carry them
#: from the workers to the process that prints.
_measured: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "teardown":  # the item's last report: it has them all
        _measured.extend(f"{name}: {value}" for name, value in report.user_properties)


def pytest_terminal_summary(terminalreporter):
    if _measured:
        terminalreporter.section("measured in this run")
        for line in _measured:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def leak_guard(request):
    yield
    problems = _guard.check()
    if problems and not getattr(request.node, "_allow_leftovers", False):
        pytest.fail("leak guard: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def session_kwargs():
    """Keyword arguments for ChromeUltraAggressiveCleanup that keep sessions
    under this test run's dir."""
    return {"temp_root": h.SESSIONS_ROOT, "cleanup_timeout": 10}


@pytest.fixture(scope="module")
def bystander_slot():
    """The module's bystander (started by the first test that asks for one)."""
    slot = h.BystanderSlot()
    try:
        yield slot
    finally:
        slot.stop()


@pytest.fixture
def bystander(bystander_slot):
    by = bystander_slot.get()
    survived = False
    try:
        yield by
        by.assert_alive()
        survived = True
    finally:
        if not survived:  # the test killed it (or part of it): the next test gets a new one
            bystander_slot.discard()


def pytest_unconfigure(config):
    # Also after runs that never start a session (``--help``, ``--collect-only``
    # errors): tests/_helpers.py made the run dir at import.
    if os.path.isdir(h.RUN_ROOT):
        h.kill_all(h.processes_under(h.RUN_ROOT))
        shutil.rmtree(h.RUN_ROOT, ignore_errors=True)
