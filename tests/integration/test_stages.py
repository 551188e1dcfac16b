"""One real-Chrome test (or two) per teardown stage, each proving the stage
did its own job: the stages before it are left as they are, or neutralised
with :func:`replace_first_calls` so that the stage under test is the one
that has to act."""

from __future__ import annotations

import os
import shutil

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, CleanupIncomplete, Outcome, Stage, _teardown
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = pytest.mark.chrome

PAGE = "data:text/html,<title>stage</title>"


# -- quit -----------------------------------------------------------------
def test_quit_stage_should_end_a_graceful_session_through_driver_quit(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get(PAGE)
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    quit_stage = report.stage(Stage.QUIT)
    assert quit_stage.skipped_reason is None, str(report)
    assert quit_stage.errors == (), str(report)
    assert h.has_note(_teardown.NOTE_QUIT_RETURNED, quit_stage.notes), str(report)
    # quit() ended chromedriver and the browser itself: the kill stages had
    # nothing of them left to signal
    signalled = {a.pid for a in report.killed if a.outcome in (Outcome.TERMINATED, Outcome.KILLED)}
    assert snap.chromedriver not in signalled, str(report)
    assert snap.main_browser not in signalled, str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


# -- tree-kill --------------------------------------------------------------
def test_tree_kill_stage_should_kill_chromedriver_and_every_browser_process(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
    report = cleanup.report
    assert report.stage(Stage.QUIT).skipped_reason == _teardown.SKIP_NOT_GRACEFUL
    killed = fh.outcomes(fh.stages_of(report, Stage.KILL_TREE)[:1])
    assert killed.get(snap.chromedriver) == Outcome.KILLED, str(report)
    assert killed.get(snap.main_browser) == Outcome.KILLED, str(report)
    missing = [pid for pid in snap.browser if pid not in killed]
    assert not missing, f"tree-kill did not deal with {missing}:\n{report}"
    assert all(killed[pid] in (Outcome.KILLED, Outcome.ALREADY_EXITED) for pid in snap.procs), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


# -- ports -------------------------------------------------------------------
def test_ports_stage_should_leave_chromedriver_and_devtools_ports_closed(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        snap = fh.snapshot(cleanup)
        driver_port = driver.service.port
        assert driver_port in snap.ports
        assert len(snap.ports) == 2, f"expected chromedriver's and the DevTools port, got {snap.ports}"
        assert all(h.port_listening(p) for p in snap.ports)
    report = cleanup.report
    ports_stage = report.stage(Stage.PORTS)
    assert ports_stage.skipped_reason is None and ports_stage.errors == (), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_ports_stage_should_kill_the_session_listeners_the_tree_kill_missed(session_kwargs, monkeypatch):
    fh.replace_stage(monkeypatch, Stage.KILL_TREE, fh.noop_stage)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    ports_killed = fh.outcomes(fh.stages_of(report, Stage.PORTS)[:1])
    # chromedriver holds its service port, the main browser the DevTools port
    assert ports_killed.get(snap.chromedriver) == Outcome.KILLED, str(report)
    assert ports_killed.get(snap.main_browser) == Outcome.KILLED, str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_ports_stage_should_leave_alone_a_listener_that_is_not_ours(session_kwargs, monkeypatch):
    squatters = []

    def kill_tree_then_squat(original):
        def stage(t, run):
            original(t, run)
            if not squatters:  # someone else binds chromedriver's old port
                squatters.append(fh.start_listener(driver_port))

        return stage

    fh.wrap_stage(monkeypatch, Stage.KILL_TREE, kill_tree_then_squat)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    try:
        with cleanup as driver:
            driver_port = driver.service.port
            snap = fh.snapshot(cleanup)
        report = cleanup.report
        assert squatters, "the squatter was never started"
        squatter = squatters[0]
        notes = report.stage(Stage.PORTS).notes
        assert h.has_note(_teardown.NOTE_PORT_NOT_OURS, notes, port=driver_port, who=f"pid {squatter.pid}"), (
            str(report)
        )
        assert squatter.poll() is None, "the ports stage killed a listener that is not the session's"
        assert h.port_listening(driver_port)
        assert squatter.pid not in {a.pid for a in report.killed}, str(report)
        assert report.ok, str(report)
        fh.assert_session_gone(fh.Snapshot(snap.procs, snap.root, snap.ports - {driver_port}))
    finally:
        for proc in squatters:
            fh.stop(proc)


# -- os-kill -------------------------------------------------------------------
def test_os_kill_stage_should_kill_every_chrome_process_the_earlier_stages_missed(
    session_kwargs, monkeypatch
):
    # tree-kill and ports miss everything on the first pass: what is left to
    # os-kill is every Chrome process (chromedriver carries no command-line
    # marker, so the second pass's tree-kill takes it)
    fh.replace_stage(monkeypatch, Stage.KILL_TREE, fh.noop_stage)
    fh.replace_stage(monkeypatch, Stage.PORTS, fh.noop_stage)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
    report = cleanup.report
    os_kill = fh.stages_of(report, Stage.OS_KILL)[0]
    actions = {a.pid: a for a in os_kill.killed}
    missing = [pid for pid in snap.browser if pid not in actions]
    assert not missing, f"os-kill missed {missing}:\n{report}"
    assert {a.via for a in actions.values()} == {"os-tool"}, str(report)
    assert actions[snap.main_browser].outcome == Outcome.KILLED, str(report)
    assert snap.chromedriver not in actions, "os-kill matched chromedriver, which has no marker argv"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


# -- profile ---------------------------------------------------------------------
def test_profile_stage_should_remove_the_session_root(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
        assert os.path.isdir(os.path.join(snap.root, "profile", "Default"))
    report = cleanup.report
    assert report.stage(Stage.PROFILE).removed == (snap.root,), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_profile_stage_should_not_follow_a_symlink_out_of_the_session_root(session_kwargs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    precious_file = tmp_path / "precious-file.txt"
    precious_file.write_text("keep me too")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
        os.symlink(outside, os.path.join(snap.root, "profile", "escape-dir"))
        os.symlink(outside, os.path.join(snap.root, "tmp", "escape-dir"))
        os.symlink(precious_file, os.path.join(snap.root, "profile", "escape-file"))
    report = cleanup.report
    assert report.stage(Stage.PROFILE).removed == (snap.root,), str(report)
    assert (outside / "precious.txt").read_text() == "keep me"
    assert precious_file.read_text() == "keep me too"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


# -- verify ----------------------------------------------------------------------
def test_verify_stage_should_find_nothing_left_after_a_normal_session(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    assert report.leftovers == ()
    assert report.passes == 1, str(report)
    assert _teardown.NOTE_NOTHING_LEFT in report.stage(Stage.VERIFY).notes, str(report)
    fh.assert_session_gone(snap)


def _refuse_to_remove(path, attempts=5):
    return f"PermissionError: injected by the test: {path!r} not removed"


def test_verify_stage_should_report_a_dir_that_could_not_be_removed(session_kwargs, monkeypatch):
    monkeypatch.setattr(_teardown, "remove_tree", _refuse_to_remove)
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    snap = None
    try:
        with cleanup:
            snap = fh.snapshot(cleanup)
        report = cleanup.report
        assert report.ok is False, str(report)
        assert [lo.kind for lo in report.leftovers] == ["dir"], str(report)
        assert report.leftovers[0].detail == snap.root
        assert any("injected by the test" in e for e in report.errors), str(report)
        assert report.to_dict()["ok"] is False
        # only the dir is left: every process is gone
        assert not [pid for pid, p in snap.procs.items() if fh.is_alive(p)]
        h.assert_gone((), (), snap.ports)
    finally:
        if snap is not None:  # the dir the teardown was made to leave (root is None once torn down)
            shutil.rmtree(snap.root, ignore_errors=True)


def test_raise_on_leak_should_raise_cleanup_incomplete_carrying_the_report(session_kwargs, monkeypatch):
    monkeypatch.setattr(_teardown, "remove_tree", _refuse_to_remove)
    cleanup = ChromeUltraAggressiveCleanup(raise_on_leak=True, **session_kwargs)
    snap = None
    try:
        with pytest.raises(CleanupIncomplete) as info:
            with cleanup:
                snap = fh.snapshot(cleanup)
        err = info.value
        assert err.report is cleanup.report
        assert [lo.kind for lo in err.report.leftovers] == ["dir"]
        assert snap.root in str(err)
    finally:
        if snap is not None:  # the dir the teardown was made to leave (root is None once torn down)
            shutil.rmtree(snap.root, ignore_errors=True)
