"""Faults against the fast teardown (``graceful=False``), which removes the
session dir and runs the os-kill stage's ``pgrep`` while the SIGKILLed tree
is still exiting (docs/architecture.md, "Fast teardown"):

* a process the first tree-kill missed re-creates the dir after the early
  removal: verification notices, the next pass kills it and removes again;
* the early removal fails (a file it cannot remove): the profile stage tries
  again and reports what it could not do;
* a Chrome process the tree-kill missed (a crashpad handler, outside
  chromedriver's process group) is still found by the early
  ``pgrep`` and killed by the os-kill stage, and what pgrep saw exiting is
  not counted again.
"""

from __future__ import annotations

import os
import shutil

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Outcome, Stage, _teardown
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = pytest.mark.chrome


def test_fast_teardown_should_remove_again_a_dir_recreated_after_the_early_removal(
    session_kwargs, monkeypatch
):
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    helper = None
    try:
        with cleanup:
            snap = fh.snapshot(cleanup)
            root = snap.root
            helper = fh.start_late_helper(cleanup.session_id, root)
            fh.hide_from_discovery(monkeypatch, helper.pid, until=Stage.KILL_TREE, starts=False)
            # os-kill is the backstop that would otherwise find it in the first pass
            fh.replace_stage(monkeypatch, Stage.OS_KILL, fh.noop_stage)
        report = cleanup.report
        profiles = fh.stages_of(report, Stage.PROFILE)
        # the early removal ran; the helper writing into the dir may make it
        # fail (ENOTEMPTY) rather than find the dir re-created afterwards
        early = (_teardown.NOTE_REMOVED_EARLY, _teardown.NOTE_RECREATED, _teardown.NOTE_EARLY_REMOVAL_FAILED)
        assert any(h.has_note(note, profiles[0].notes) for note in early), str(report)
        verifies = fh.stages_of(report, Stage.VERIFY)
        first = " | ".join(verifies[0].notes)
        assert f"dir {root}" in first and f"pid={helper.pid}" in first, str(report)
        later_kills = fh.outcomes(fh.stages_of(report, Stage.KILL_TREE)[1:])
        assert later_kills.get(helper.pid) == Outcome.KILLED, str(report)
        assert report.passes >= 2 and report.ok, str(report)
        assert helper.wait(timeout=5) is not None
        assert not h.wait_until(lambda: os.path.lexists(root), timeout=0.5), "the dir came back"
        fh.assert_session_gone(snap)
    finally:
        if helper is not None:
            fh.stop(helper)


def _fail_once(path, attempts=5):
    return f"OSError: injected by the test: {path!r} not removed"


def test_fast_teardown_should_retry_the_removal_when_the_early_removal_failed(session_kwargs, monkeypatch):
    calls = fh.replace_first_calls(monkeypatch, _teardown, "remove_tree", _fail_once)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup)
    report = cleanup.report
    profile = report.stage(Stage.PROFILE)
    assert len(calls) == 2, "the early removal and the profile stage's retry"
    injected = [n for n in profile.notes if "injected by the test" in n]
    assert injected and h.is_note(_teardown.NOTE_EARLY_REMOVAL_FAILED, injected[0]), str(report)
    assert profile.removed == (snap.root,), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_fast_teardown_should_report_a_dir_that_neither_removal_could_remove(session_kwargs, monkeypatch):
    calls = fh.replace_first_calls(monkeypatch, _teardown, "remove_tree", _fail_once, times=10)
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    snap = None
    try:
        with cleanup:
            snap = fh.snapshot(cleanup)
        report = cleanup.report
        assert len(calls) >= 2
        assert report.ok is False, str(report)
        assert [lo.kind for lo in report.leftovers] == ["dir"], str(report)
        assert any("injected by the test" in e for e in report.errors), str(report)
        assert not [pid for pid, p in snap.procs.items() if fh.is_alive(p)]
    finally:
        if snap is not None:  # the dir the teardown was made to leave (root is None once torn down)
            shutil.rmtree(snap.root, ignore_errors=True)


def test_early_pgrep_should_find_a_chrome_process_the_tree_kill_missed(session_kwargs, monkeypatch):
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
        # a crashpad handler: the root on its command line (--database), its own
        # session (so the tree-kill's group kill of chromedriver's group misses it)
        outside = [pid for pid in snap.browser if os.getpgid(pid) != os.getpgid(snap.chromedriver)]
        assert outside, f"every process is in chromedriver's group: {snap.names}"
        missed = outside[0]
        # stopped, it cannot exit by itself when the browser dies (SIGKILL still works)
        fh.suspend([snap.procs[missed]])
        fh.hide_from_discovery(monkeypatch, missed, until=Stage.KILL_TREE, starts=False)
        # nothing after the tree-kill may take it before the os-kill stage does
        fh.replace_stage(monkeypatch, Stage.PORTS, fh.noop_stage)
    report = cleanup.report
    first_kill = fh.outcomes(fh.stages_of(report, Stage.KILL_TREE)[:1])
    assert missed not in first_kill, str(report)
    os_kill = fh.stages_of(report, Stage.OS_KILL)[0]
    assert _teardown.NOTE_PGREP_EARLY in os_kill.notes, str(report)
    actions = {a.pid: a for a in os_kill.killed}
    assert actions.get(missed) is not None and actions[missed].outcome == Outcome.KILLED, str(report)
    assert {a.via for a in actions.values()} == {"os-tool"}, str(report)
    # what the tree-kill had already killed is not counted again
    assert not set(actions) & {pid for pid, out in first_kill.items() if out == Outcome.KILLED}, str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_tree_kill_should_end_a_member_of_chromedrivers_group_that_discovery_missed(
    session_kwargs, monkeypatch
):
    # The group kill ends chromedriver's whole group in one system call: a
    # member discovery did not see (hidden here, and stopped so that it cannot
    # exit by itself) is killed, and waited for until it has exited, by the
    # first tree-kill, before any later stage or pass could look for it.
    cleanup = ChromeUltraAggressiveCleanup(graceful=False, **session_kwargs)
    with cleanup:
        snap = fh.snapshot(cleanup, settle=True)
        missed = snap.main_browser
        assert os.getpgid(missed) == os.getpgid(snap.chromedriver)
        fh.suspend([snap.procs[missed]])
        fh.hide_from_discovery(monkeypatch, missed, until=Stage.KILL_TREE, starts=False)
        for stage in (Stage.PORTS, Stage.OS_KILL):
            fh.replace_stage(monkeypatch, stage, fh.noop_stage)
    report = cleanup.report
    first = {a.pid: a for a in fh.stages_of(report, Stage.KILL_TREE)[0].killed}
    # killed by the group kill; if it was still exiting when the stage looked
    # at the group again, it was waited for as a member of the group
    if missed in first:
        assert (first[missed].outcome, first[missed].via) == (Outcome.KILLED, "group"), str(report)
    assert not fh.is_alive(snap.procs[missed]), "the group kill missed it"
    assert report.passes == 1 and report.ok, str(report)
    fh.assert_session_gone(snap)
