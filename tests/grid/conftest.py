"""Fixtures for the Selenium Grid tests (issue #8).

* ``grid`` (session-scoped): one real Grid 4 standalone on 127.0.0.1, shared
  by the tests of this directory; its finalizer stops it by PID and kills what
  still carries its markers (``_grid.GridServer.stop``), and
  ``pytest_sessionfinish`` does the same as a backstop.  Without java or the
  jar the tests are skipped, except in CI (``CI`` set), where that fails.
* ``grid_leak_guard`` (autouse): after each test the Grid lists no session
  and runs no chromedriver or Chrome; leftovers are killed (by identity) and
  the test fails naming them.
* ``remote_kwargs``: session options for a remote session on ``grid``.

Measured figures (Grid start, session start, slot freed) are printed in the
terminal summary ("measured in this run").
"""

from __future__ import annotations

import os

import pytest

from tests import _helpers as h
from tests.grid import _grid

_started: list[_grid.GridServer] = []
_timings: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "grid: runs a real Selenium Grid 4 (java and the server jar)")


def _missing() -> str | None:
    if not _grid.java_path():
        return "java is not installed (Debian: openjdk-17-jre-headless)"
    if not os.path.isfile(_grid.jar_path()):
        return f"the Selenium Grid jar is missing ({_grid.jar_path()}): run scripts/fetch_grid.py"
    if not (h.CHROMIUM and h.CHROMEDRIVER):
        return "chromium and chromedriver are not installed"
    return None


def start(name: str) -> _grid.GridServer:
    """Start a Grid (skip, or in CI fail, when it cannot run here)."""
    why = _missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Grid tests cannot run in CI: {why}", pytrace=False)
        pytest.skip(why)
    grid = _grid.start_grid(name)
    _started.append(grid)
    record_timing(f"Grid standalone ({name}) ready in {grid.started_s:.2f} s")
    return grid


def stop(grid: _grid.GridServer) -> None:
    grid.stop()
    if grid in _started:
        _started.remove(grid)


def record_timing(line: str) -> None:
    _timings.append(line)


@pytest.fixture(scope="session")
def grid():
    server = start("grid")
    try:
        yield server
    finally:
        stop(server)


def pytest_sessionfinish(session, exitstatus):
    for server in list(_started):  # a finalizer that did not run (crash, Ctrl-C)
        stop(server)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    # the timings recorded so far go with this test's reports (the suite's
    # conftest prints every test's user_properties at the end)
    while _timings:
        item.user_properties.append(("Selenium Grid", _timings.pop(0)))


def check_grid_clean(server: _grid.GridServer, timeout: float = 15.0) -> list[str]:
    """Wait (bounded) until ``server`` lists no session and runs nothing;
    kill and name whatever is left."""
    h.wait_until(lambda: not server.sessions() and not server.processes(), timeout=timeout, interval=0.1)
    problems = []
    listed = server.sessions()
    if listed:
        problems.append(f"Grid sessions still listed: {sorted(listed)}")
    procs = server.processes()
    if procs:
        described = []
        for p in procs:
            try:
                described.append(f"{p.pid} {p.name()}")
            except Exception:
                described.append(str(p.pid))
        problems.append(f"Grid processes left: {described}")
        h.kill_all(procs)
    return problems


@pytest.fixture(autouse=True)
def grid_leak_guard(request):
    yield
    for server in list(_started):
        problems = check_grid_clean(server)
        if problems and not getattr(request.node, "_allow_leftovers", False):
            pytest.fail(f"grid leak guard ({server.dir}): " + "; ".join(problems), pytrace=False)


@pytest.fixture
def remote_kwargs(grid):
    return {
        "remote_url": grid.url,
        "binary": h.CHROMIUM,
        "extra_args": list(_grid.NODE_ARGS),
        "cleanup_timeout": 10,
        "temp_root": h.SESSIONS_ROOT,
    }
