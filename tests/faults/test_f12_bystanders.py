"""F12: an unrelated Chrome (not ours) and an unrelated server on a port in
9000-10000 are untouched by every stage.  The ``bystander`` fixture asserts
that both survived; each test also checks that no stage even signalled them
and that discovery never claimed them."""

from __future__ import annotations

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage
from embassy_cleanup._teardown import NOTE_PORT_NOT_OURS
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def _assert_bystander_untouched(cleanup, bystander) -> None:
    theirs = set(bystander.chrome_pids) | {bystander.server.pid}
    claimed = theirs & set(cleanup.pids)
    assert not claimed, f"discovery claimed bystander processes {claimed}"
    signalled = theirs & {a.pid for a in cleanup.report.killed}
    assert not signalled, f"bystander processes signalled: {signalled}\n{cleanup.report}"
    bystander.assert_alive()


def test_graceful_session_should_leave_the_bystanders_untouched(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    assert cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)
    _assert_bystander_untouched(cleanup, bystander)


def test_forced_session_should_leave_the_bystanders_untouched(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    assert cleanup.report.ok, str(cleanup.report)
    assert cleanup.report.stage(Stage.KILL_TREE).killed, "tree-kill had nothing to do"
    fh.assert_session_gone(snap)
    _assert_bystander_untouched(cleanup, bystander)


def test_os_kill_stage_should_leave_the_bystanders_untouched(session_kwargs, bystander, monkeypatch):
    fh.replace_stage(monkeypatch, Stage.KILL_TREE, fh.noop_stage)
    fh.replace_stage(monkeypatch, Stage.PORTS, fh.noop_stage)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
    report = cleanup.report
    os_kill = fh.stages_of(report, Stage.OS_KILL)[0]
    assert len(os_kill.killed) >= len(snap.browser), f"os-kill was not the stage that acted:\n{report}"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)
    _assert_bystander_untouched(cleanup, bystander)


def test_ports_stage_should_leave_alone_a_bystander_server_on_a_port_of_the_session(
    session_kwargs, bystander, monkeypatch
):
    # the session believes the bystander's port is one of its own (as if the
    # port had been reused after chromedriver let it go)
    def ports_including_the_bystanders(original):
        def stage(t, run):
            t.target.ports.add(bystander.port)
            return original(t, run)

        return stage

    fh.wrap_stage(monkeypatch, Stage.PORTS, ports_including_the_bystanders)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    expected = NOTE_PORT_NOT_OURS.format(port=bystander.port, who=f"pid {bystander.server.pid}")
    assert expected in report.stage(Stage.PORTS).notes, str(report)
    assert report.ok, str(report)  # a listener that is not ours is no leftover
    fh.assert_session_gone(snap)
    _assert_bystander_untouched(cleanup, bystander)
