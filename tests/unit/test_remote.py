"""Unit tests of the Grid client (``_remote``), against a tiny fake Grid.

The fake is an ``http.server`` on 127.0.0.1 that answers ``GET /status``
with the sessions it holds and ``DELETE /session/{id}`` by dropping one; the
real Grid is exercised in ``tests/grid``.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from embassy_cleanup import Stage
from embassy_cleanup._lifecycle import Lifecycle
from embassy_cleanup._options import check_remote_options
from embassy_cleanup._ownership import ProcessTracker
from embassy_cleanup._remote import (
    ALREADY_GONE,
    DELETED,
    ERROR_QUIT_HUNG,
    NOTE_DELETE,
    REMOTE_PLAN,
    REMOTE_SKIP,
    VERIFY_POLL_S,
    RemoteKind,
    RemoteTarget,
    delete_session,
    listed_sessions,
)
from embassy_cleanup._teardown import QUIT_SHARE, run_teardown
from embassy_cleanup._watchdog import WATCHDOG_PROTOCOL, serve
from embassy_cleanup._watchdog_main import REAPERS
from tests import _helpers as h

#: The stages a remote session skips.
REMOTE_SKIPPED = (Stage.KILL_TREE, Stage.PORTS, Stage.OS_KILL, Stage.PROFILE)


class FakeGrid:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.deleted: list[str] = []
        self.sticky = False  # True: DELETE answers 200 but the session stays listed
        grid = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, value: object) -> None:
                body = json.dumps({"value": value}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                slots = [{"session": {"sessionId": s}} for s in sorted(grid.sessions)] + [{"session": None}]
                self._reply(200, {"ready": True, "nodes": [{"slots": slots}]})

            def do_DELETE(self):  # noqa: N802
                sid = self.path.rsplit("/", 1)[-1]
                grid.deleted.append(sid)
                if sid in grid.sessions:
                    if not grid.sticky:
                        grid.sessions.discard(sid)
                    self._reply(200, None)
                else:
                    self._reply(404, {"error": "invalid session id", "message": "gone"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for serve_forever's next poll: 20 ms, not the default 0.5 s.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake_grid():
    grid = FakeGrid()
    try:
        yield grid
    finally:
        grid.close()


def target(url: str, rsid: str | None, driver=None, graceful: bool = True) -> RemoteTarget:
    return RemoteTarget(
        "abcdefabcdef",
        ProcessTracker("abcdefabcdef", ""),
        None,
        graceful=graceful,
        driver=driver,
        remote_url=url,
        remote_session_id=rsid,
    )


def add_message(url: str, rsid: str) -> dict:
    """The watchdog message the lifecycle sends for a remote session."""
    kind = RemoteKind("abcdefabcdef", None)  # type: ignore[arg-type] - options are not read here
    kind.target = target(url, rsid)
    return Lifecycle("abcdefabcdef", kind, budget=5.0, watchdog=True).add_message()


class HangingDriver:
    def __init__(self) -> None:
        self.release = threading.Event()

    def quit(self) -> None:
        self.release.wait(30)


def test_listed_sessions_should_collect_every_slot_of_every_node():
    status = {
        "nodes": [
            {"slots": [{"session": {"sessionId": "a"}}, {"session": None}]},
            {"slots": [{"session": {"sessionId": "b", "capabilities": {}}}]},
            {"slots": None},
        ]
    }
    assert sorted(listed_sessions(status)) == ["a", "b"]
    assert listed_sessions({}) == {}


def test_check_remote_options_should_normalise_the_url():
    assert (
        check_remote_options(" http://grid:4444/wd/hub/ ", driver_path=None, env={})
        == "http://grid:4444/wd/hub"
    )


def test_delete_session_should_count_404_as_already_gone(fake_grid):
    assert delete_session(fake_grid.url, "nope") == ALREADY_GONE


def test_a_hanging_quit_should_be_bounded_then_the_session_deleted_and_verified(fake_grid):
    """The quit gets its share of the budget, then the session is deleted.

    The quit's thread waits in real time (a WebDriver call cannot be put on a
    fake clock); the rest of the budget logic runs on the fake clock.  A
    quit that was not bounded would return after 30 s and the quit stage
    would then hold no error: this test fails without any timing bound."""
    fake_grid.sessions.add("r1")
    driver = HangingDriver()
    try:
        report = run_teardown(target(fake_grid.url, "r1", driver), 2.0, REMOTE_PLAN, h.FakeClock())
    finally:
        driver.release.set()
    assert report.ok, str(report)
    assert fake_grid.deleted == ["r1"]
    quit_stage = report.stage(Stage.QUIT)
    assert quit_stage.errors == (ERROR_QUIT_HUNG.format(share=2.0 * QUIT_SHARE),)
    assert NOTE_DELETE.format(rsid="r1", outcome=DELETED) in quit_stage.notes
    assert all(report.stage(s).skipped_reason == REMOTE_SKIP for s in REMOTE_SKIPPED)


def test_a_grid_that_went_away_should_leave_an_unverified_leftover_within_the_budget(fake_grid):
    url = fake_grid.url
    fake_grid.close()
    clock = h.FakeClock()
    report = run_teardown(target(url, "r1", graceful=False), 1.5, REMOTE_PLAN, clock)
    assert [lo.kind for lo in report.leftovers] == ["unverified"], str(report)
    assert "ConnectionRefusedError" in report.stage(Stage.QUIT).errors[0]
    # /status was polled every VERIFY_POLL_S until the budget ran out, and no longer
    assert clock.sleeps and set(clock.sleeps) == {VERIFY_POLL_S}
    assert 1.5 - VERIFY_POLL_S <= report.duration_s <= 1.5


def test_a_session_the_grid_keeps_listing_should_be_a_remote_session_leftover(fake_grid):
    fake_grid.sessions.add("r4")
    fake_grid.sticky = True  # DELETE answers, the slot stays taken
    clock = h.FakeClock()
    report = run_teardown(target(fake_grid.url, "r4", graceful=False), 3.0, REMOTE_PLAN, clock)
    assert fake_grid.deleted == ["r4"]
    assert [lo.kind for lo in report.leftovers] == ["remote-session"], str(report)
    assert not report.stage(Stage.VERIFY).errors
    assert report.duration_s <= 3.0 and set(clock.sleeps) == {VERIFY_POLL_S}


def test_the_watchdog_should_delete_a_remote_session_when_its_owner_pipe_closes(fake_grid):
    fake_grid.sessions.add("r2")
    rfd, wfd = os.pipe()
    msg = add_message(fake_grid.url, "r2")
    os.write(wfd, (json.dumps(msg) + "\n").encode())
    os.close(wfd)  # the owner "dies"
    me = psutil.Process()
    try:
        assert serve(me.pid, me.create_time(), REAPERS, rfd) == 0
    finally:
        os.close(rfd)
    assert fake_grid.deleted == ["r2"] and not fake_grid.sessions


def test_the_watchdog_should_not_delete_a_remote_session_its_owner_closed(fake_grid):
    fake_grid.sessions.add("r3")
    rfd, wfd = os.pipe()
    add = add_message(fake_grid.url, "r3")
    remove = {"v": WATCHDOG_PROTOCOL, "op": "remove", "sid": "abcdefabcdef"}
    os.write(wfd, (json.dumps(add) + "\n" + json.dumps(remove) + "\n").encode())
    os.close(wfd)
    me = psutil.Process()
    try:
        serve(me.pid, me.create_time(), REAPERS, rfd)
    finally:
        os.close(rfd)
    assert fake_grid.deleted == []
