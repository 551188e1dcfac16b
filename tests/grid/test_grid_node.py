"""``diagnose --grid`` / ``clean --grid`` on a Grid node (issue #8, node side).

A real orphan: a Grid session whose chromedriver is SIGKILLed leaves its
Chrome tree running, re-parented, while the Grid still lists the session
(until its 300 s session timeout).  In the same Grid a live session runs
alongside, and a Chrome that is not the Grid's (the suite's bystander) runs
on the same host: ``clean --grid`` must kill the orphan tree and nothing else.

The Grid here is the test's own (``node_grid``): the orphan's session stays
listed in it, which would take a slot from every later test on a shared one.
"""

from __future__ import annotations

import psutil
import pytest
from selenium import webdriver

from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests import _helpers as h
from tests.cli import cli_json, run_cli
from tests.grid import _grid
from tests.grid.conftest import start, stop

pytestmark = [pytest.mark.chrome, pytest.mark.grid]


@pytest.fixture
def node_grid():
    server = start("node")
    try:
        yield server
    finally:
        stop(server)


def plain_remote(grid: _grid.GridServer) -> webdriver.Remote:
    """A session made by any Grid client, not by this library."""
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", *_grid.NODE_ARGS]:
        options.add_argument(arg)
    options.binary_location = h.CHROMIUM
    return webdriver.Remote(grid.url, options=options)


def tree_of(grid: _grid.GridServer, pid: int) -> dict[int, psutil.Process]:
    """``pid`` and its descendants, held by identity; all must be the Grid's."""
    root = psutil.Process(pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)] if _live(p)}

    def strangers() -> list[str]:
        grids = {p.pid for p in grid.processes()}
        out = []
        for p, proc in procs.items():
            # a helper that exits between the scans is not part of the tree; one just
            # forked carries the markers once it has exec'd
            if p not in grids and _live(proc):
                try:
                    out.append(f"{p} {proc.name()} {proc.status()} {' '.join(proc.cmdline())[:120]}")
                except psutil.Error:
                    continue
        return out

    h.wait_until(lambda: not strangers(), timeout=5, interval=0.1)
    left = strangers()
    assert not left, f"not started by the Grid: {left}"
    return {p: proc for p, proc in procs.items() if _live(proc)}


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def steady(procs: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    """All but renderers, which Chrome replaces by itself (tests/crash/conftest.py)."""
    out = {}
    for pid, p in procs.items():
        try:
            if "--type=renderer" not in p.cmdline():
                out[pid] = p
        except psutil.Error:
            out[pid] = p  # gone: let the caller's check see it
    return out


def running(procs: dict[int, psutil.Process]) -> list[int]:
    out = []
    for pid, p in procs.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(out)


def test_clean_grid_kills_an_orphaned_chrome_tree_and_leaves_the_live_session_and_a_bystander(
    node_grid, bystander
):
    live = ChromeUltraAggressiveCleanup(
        remote_url=node_grid.url, binary=h.CHROMIUM, extra_args=_grid.NODE_ARGS, temp_root=h.SESSIONS_ROOT
    )
    driver = live.start()
    try:
        driver.get("data:text/html,<title>live</title>")
        live_tree = steady(tree_of(node_grid, driver.capabilities["goog:processID"]))

        doomed = plain_remote(node_grid)
        orphan_pid = doomed.capabilities["goog:processID"]
        orphan_tree = tree_of(node_grid, orphan_pid)
        chromedriver = psutil.Process(orphan_pid).parent()
        assert chromedriver is not None and chromedriver.parent().pid == node_grid.proc.pid
        chromedriver.kill()
        assert h.wait_until(lambda: psutil.Process(orphan_pid).ppid() != chromedriver.pid, timeout=10)
        assert doomed.session_id in node_grid.sessions(), "precondition: the Grid still lists it"

        inv, _ = cli_json("diagnose", "--grid", node_grid.url, "--json", expect=1)
        by_root = {t["root_pid"]: t for t in inv["trees"]}
        assert by_root[orphan_pid]["class"] == "orphan", inv
        assert by_root[orphan_pid]["reason"] == "its chromedriver is gone"
        assert set(orphan_tree) <= set(by_root[orphan_pid]["pids"])
        live_root = driver.capabilities["goog:processID"]
        assert by_root[live_root]["class"] == "session"
        assert by_root[live_root]["session_id"] == driver.session_id
        assert set(by_root) == {orphan_pid, live_root}, "only the Grid's trees are listed"

        dry, _ = cli_json("clean", "--grid", node_grid.url, "--dry-run", "--json", expect=0)
        assert dry["dry_run"] is True
        assert running(orphan_tree) == sorted(orphan_tree), "a dry run must kill nothing"

        out = run_cli("clean", "--grid", node_grid.url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"orphan tree {orphan_pid} (its chromedriver is gone)" in out.stdout
        assert h.wait_until(lambda: not running(orphan_tree), timeout=10), running(orphan_tree)

        assert running(live_tree) == sorted(live_tree), "clean --grid touched the live session"
        # What else the Grid still runs is the live session's: its chromedriver and
        # its browser's two crashpad handlers (re-parented by design).  The orphan's
        # crashpad handlers exit with their browser.
        live_driver = psutil.Process(live_root).parent().pid

        def others() -> list[tuple[int, str]]:
            out = []
            for p in node_grid.processes():
                try:
                    if p.pid in live_tree or p.pid == live_driver or "--type=renderer" in p.cmdline():
                        continue
                    out.append((p.pid, p.name()))
                except psutil.Error:
                    continue
            return sorted(out)

        assert h.wait_until(lambda: len(others()) <= 2, timeout=10), others()
        assert all("crashpad" in name for _pid, name in others()), others()
        driver.get("data:text/html,<title>still-live</title>")
        assert driver.title == "still-live"
        bystander.assert_alive()

        after, _ = cli_json("diagnose", "--grid", node_grid.url, "--json", expect=0)
        assert [t["root_pid"] for t in after["trees"]] == [live_root]
        doomed.command_executor.close()
    finally:
        report = live.close()
    assert report.ok, str(report)


def test_diagnose_grid_names_an_unreachable_grid_and_exits_2(grid):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = run_cli("diagnose", "--grid", url)
    assert out.returncode == 2
    assert f"Selenium Grid at {url!r} is not reachable" in out.stderr


def test_clean_grid_refuses_all(grid):
    out = run_cli("clean", "--grid", grid.url, "--all", "--yes")
    assert out.returncode == 2
    assert "--grid cleans only the Grid's orphans" in out.stderr
