"""``diagnose --grid`` / ``clean --grid`` after the Grid itself died (issue #8, node side).

How a tree whose Grid session no longer exists really happens on a node: the
Grid's JVM dies (crash, OOM killer, SIGKILL, a redeploy) while sessions run,
and a new Grid is started on the same port.  Each old chromedriver and its
Chrome keep running, re-parented to init; the new Grid knows nothing of them.
Here the old Grid runs two sessions of a plain Selenium client (a bot on
another host: nothing of this library runs for it on the node); after the
JVM's SIGKILL and the restart, the chromedriver of one of them is SIGKILLed
too (its browser re-parented as well).  The new Grid runs a live session.
``clean --grid`` must kill both old trees, identity-checked, and nothing else.

The branch "chromedriver still under the live JVM, but no session in
``/status`` is its browser" has no natural trigger on a real Grid (see the
last test); it is covered by feeding the inventory a ``/status`` without the
session, against a real Grid-started tree.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, _grid_node
from tests import _helpers as h
from tests.cli import cli_json, run_cli
from tests.grid import _grid
from tests.grid.conftest import record_timing, start, stop
from tests.grid.test_grid_node import plain_remote, running, steady, tree_of

pytestmark = [pytest.mark.chrome, pytest.mark.grid]


@pytest.fixture
def restart_grid():
    server = start("restart")
    try:
        yield server
    finally:
        stop(server)  # by PID (the current JVM), then by the dir's markers: the old trees too


def test_clean_grid_after_a_grid_restart_kills_the_old_grids_trees_and_leaves_the_live_session(
    restart_grid, bystander
):
    grid = restart_grid
    old_a = plain_remote(grid)
    old_b = plain_remote(grid)
    try:
        # Old session A keeps its chromedriver; old session B loses it after the restart.
        a_browser = old_a.capabilities["goog:processID"]
        b_browser = old_b.capabilities["goog:processID"]
        a_driver = psutil.Process(a_browser).parent()
        b_driver = psutil.Process(b_browser).parent()
        assert a_driver is not None and b_driver is not None
        assert a_driver.ppid() == grid.proc.pid and b_driver.ppid() == grid.proc.pid
        a_tree = steady({a_driver.pid: a_driver, **tree_of(grid, a_browser)})
        b_tree = steady(tree_of(grid, b_browser))

        t0 = time.monotonic()
        old_jvm = _grid.crash_and_restart(grid)
        restart_s = time.monotonic() - t0
        record_timing(f"Grid restart: SIGKILL + new JVM on the same port ready in {restart_s:.2f} s")
        assert not h.pid_running(old_jvm)
        assert grid.proc.pid != old_jvm
        # What the old JVM started outlives it, re-parented, and the new Grid does not know it.
        assert a_driver.ppid() != old_jvm and psutil.Process(a_browser).ppid() == a_driver.pid
        assert running(a_tree) == sorted(a_tree), "the old chromedriver's tree died with its JVM"
        assert running(b_tree) == sorted(b_tree)
        assert not grid.sessions(), "precondition: the new Grid lists no session"
        b_driver.kill()
        assert h.wait_until(lambda: psutil.Process(b_browser).ppid() != b_driver.pid, timeout=10)

        live = ChromeUltraAggressiveCleanup(
            remote_url=grid.url,
            binary=h.CHROMIUM,
            extra_args=_grid.NODE_ARGS,
            temp_root=h.SESSIONS_ROOT,
            watchdog=False,  # only the node-side tool acts here
        )
        driver = live.start()
        try:
            driver.get("data:text/html,<title>live</title>")
            live_root = driver.capabilities["goog:processID"]
            live_driver = psutil.Process(live_root).parent()
            assert live_driver is not None and live_driver.ppid() == grid.proc.pid
            live_tree = steady(tree_of(grid, live_root))

            inv, _ = cli_json("diagnose", "--grid", grid.url, "--json", expect=1)
            by_root = {t["root_pid"]: t for t in inv["trees"]}
            assert set(by_root) == {a_driver.pid, b_browser, live_root}, f"only the Grid's trees: {inv}"
            assert inv["jvm_pids"] == [grid.proc.pid]
            assert by_root[a_driver.pid]["class"] == "orphan"
            assert by_root[a_driver.pid]["reason"] == "its Grid JVM no longer runs it"
            assert set(a_tree) <= set(by_root[a_driver.pid]["pids"])
            # the profile of each old session (clean --grid removes it once its tree is dead)
            old_profiles = [d.capabilities["chrome"]["userDataDir"] for d in (old_a, old_b)]
            assert all(os.path.isdir(p) for p in old_profiles)
            assert by_root[a_driver.pid]["user_data_dir"] == old_a.capabilities["chrome"]["userDataDir"]
            assert by_root[b_browser]["user_data_dir"] == old_b.capabilities["chrome"]["userDataDir"]
            assert by_root[b_browser]["class"] == "orphan"
            assert by_root[b_browser]["reason"] == "its chromedriver is gone"
            assert set(b_tree) <= set(by_root[b_browser]["pids"])
            assert by_root[live_root]["class"] == "session"
            assert by_root[live_root]["session_id"] == driver.session_id
            assert not set(by_root[live_root]["pids"]) & (set(a_tree) | set(b_tree))

            t0 = time.monotonic()
            out = run_cli("clean", "--grid", grid.url)
            took = time.monotonic() - t0
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"orphan tree {a_driver.pid} (its Grid JVM no longer runs it)" in out.stdout
            assert f"orphan tree {b_browser} (its chromedriver is gone)" in out.stdout
            assert h.wait_until(lambda: not running(a_tree) and not running(b_tree), timeout=10), (
                running(a_tree),
                running(b_tree),
            )
            record_timing(
                f"clean --grid after a Grid restart: {len(a_tree) + len(b_tree)} old processes "
                f"(2 trees) killed, CLI run {took:.2f} s"
            )

            for profile in old_profiles:
                assert f"removed {profile}" in out.stdout, out.stdout
                assert not os.path.lexists(profile)
            live_profile = driver.capabilities["chrome"]["userDataDir"]
            assert os.path.isdir(live_profile), "clean --grid removed the live session's profile"
            assert running(live_tree) == sorted(live_tree), "clean --grid touched the live session"
            assert live_driver.is_running()

            # Nothing of the old Grid is left: what the Grid's markers still find is the
            # live session's (its chromedriver, its tree, its two crashpad handlers,
            # re-parented by design; the old browsers' handlers exit with them).
            def others() -> list[tuple[int, str]]:
                out = []
                for p in grid.processes():
                    try:
                        if p.pid in live_tree or p.pid == live_driver.pid or "--type=renderer" in p.cmdline():
                            continue
                        out.append((p.pid, p.name()))
                    except psutil.Error:
                        continue
                return sorted(out)

            assert h.wait_until(lambda: len(others()) <= 2, timeout=10), others()
            assert all("crashpad" in name for _pid, name in others()), others()

            driver.get("data:text/html,<title>still-live</title>")
            assert driver.title == "still-live"
            assert list(grid.sessions()) == [driver.session_id]
            bystander.assert_alive()
            after, _ = cli_json("diagnose", "--grid", grid.url, "--json", expect=0)
            assert [t["root_pid"] for t in after["trees"]] == [live_root]
        finally:
            report = live.close()
        assert report.ok, str(report)
    finally:
        for client in (old_a, old_b):
            client.command_executor.close()  # their sessions died with the old Grid


def test_a_tree_under_the_live_jvm_that_no_listed_session_is_is_an_orphan(grid, monkeypatch):
    """No natural trigger found on a real Grid: a node ends a session by
    stopping it, which ends its chromedriver too.  Tried: a session whose
    chromedriver is SIGSTOPped, on a Grid with ``session-timeout = 10``; the
    node's stop timed out (``LocalNode.stopTimedOutSession``: TimeoutException)
    and the chromedriver was then killed anyway, ~50 s after the SIGSTOP, so
    "its chromedriver is gone" applied.  Here ``/status`` is faked: the real
    one without the session."""
    driver = plain_remote(grid)
    try:
        browser = driver.capabilities["goog:processID"]
        chromedriver = psutil.Process(browser).parent()
        assert chromedriver is not None and chromedriver.ppid() == grid.proc.pid
        tree = set(steady(tree_of(grid, browser)))

        inv = _grid_node.take_grid_inventory(grid.url)
        assert [(t.root.pid, t.cls, t.session_id) for t in inv.trees] == [
            (browser, "session", driver.session_id)
        ]

        real_status = _grid_node.grid_status

        def without_the_session(url: str) -> dict:
            status = real_status(url)
            for node in status.get("nodes") or ():
                for slot in node.get("slots") or ():
                    slot["session"] = None
            return status

        monkeypatch.setattr(_grid_node, "grid_status", without_the_session)
        inv = _grid_node.take_grid_inventory(grid.url)
        assert [(t.root.pid, t.cls, t.reason) for t in inv.trees] == [
            (browser, "orphan", "its Grid session no longer exists")
        ]
        assert tree <= {p.pid for p in inv.trees[0].procs}
        assert chromedriver.pid not in {p.pid for p in inv.trees[0].procs}
        assert inv.sessions == []
    finally:
        driver.quit()
