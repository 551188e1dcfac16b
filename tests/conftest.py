"""Fixtures shared by the whole suite.

* ``leak_guard`` (autouse): after every test, nothing marked with this test
  run's dir may still run, no session dir may remain, and the test process
  may have no zombie children.  Leftovers are killed by PID (identity held by
  psutil) and removed, and the test fails naming them, so one leaking test
  cannot poison the next.
* ``session_kwargs``: options that put sessions under the run dir.
* ``bystander``: a Chrome started without our API plus a server on a port in
  9000-10000; the fixture asserts both survived the test.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests import _helpers as h


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


@pytest.fixture(autouse=True)
def leak_guard(request):
    yield
    # Give processes a moment to finish exiting; poll, don't sleep blindly.
    h.wait_until(lambda: not h.processes_under(h.SESSIONS_ROOT), timeout=3)
    procs = h.processes_under(h.SESSIONS_ROOT)
    described = []
    for p in procs:
        try:
            described.append(f"{p.pid} {p.name()}")
        except Exception:
            described.append(str(p.pid))
    h.kill_all(procs)
    dirs = h.session_dirs()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    zombies = [z.pid for z in h.zombie_children()]
    problems = []
    if described:
        problems.append(f"processes left: {described}")
    if dirs:
        problems.append(f"session dirs left: {dirs}")
    if zombies:
        problems.append(f"zombie children of the test process: {zombies}")
    if problems and not getattr(request.node, "_allow_leftovers", False):
        pytest.fail("leak guard: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def session_kwargs():
    """Keyword arguments for ChromeUltraAggressiveCleanup that keep sessions
    under this test run's dir."""
    return {"temp_root": h.SESSIONS_ROOT, "cleanup_timeout": 10}


@pytest.fixture
def bystander():
    by = h.start_bystander()
    try:
        yield by
        by.assert_alive()
    finally:
        h.stop_bystander(by)


def pytest_unconfigure(config):
    # Also after runs that never start a session (``--help``, ``--collect-only``
    # errors): tests/_helpers.py made the run dir at import.
    if os.path.isdir(h.RUN_ROOT):
        h.kill_all(h.processes_under(h.RUN_ROOT))
        shutil.rmtree(h.RUN_ROOT, ignore_errors=True)
