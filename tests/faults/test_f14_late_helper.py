"""F14: a late Chrome helper re-creates the profile dir after it was
removed: verification notices, the next pass kills the helper and removes
the dir again, and the dir stays gone.

The late helper is a small Python process carrying both session markers
(``EMBASSY_CLEANUP_SESSION=<id>`` in its environment, the session root on
its command line) that re-creates ``<root>/profile/late`` every 5 ms.  The
first pass is made to miss it: discovery hides it until the first
verification, and the os-kill stage does nothing on the first pass.
"""

from __future__ import annotations

import os

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Outcome, Stage
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


def test_late_helper_recreating_the_profile_should_be_killed_by_a_second_pass(
    session_kwargs, bystander, monkeypatch
):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    helper = None
    try:
        with cleanup:
            snap = fh.snapshot(cleanup)
            root = snap.root
            helper = fh.start_late_helper(cleanup.session_id, root)
            fh.hide_from_discovery(monkeypatch, helper.pid, until=Stage.VERIFY, starts=True)
            fh.replace_stage(monkeypatch, Stage.OS_KILL, fh.noop_stage)
        report = cleanup.report
        assert report.passes >= 2, str(report)
        verifies = fh.stages_of(report, Stage.VERIFY)
        first_found = " | ".join(verifies[0].notes)
        assert f"dir {root}" in first_found, str(report)
        assert f"pid={helper.pid}" in first_found, str(report)
        tree_kills = fh.stages_of(report, Stage.KILL_TREE)
        assert fh.outcomes(tree_kills[:1]).get(helper.pid) is None, "the first pass was meant to miss it"
        assert fh.outcomes(tree_kills[1:]).get(helper.pid) == Outcome.KILLED, str(report)
        assert root in report.removed, str(report)
        assert report.ok, str(report)
        assert helper.wait(timeout=5) is not None
        assert not h.wait_until(lambda: os.path.lexists(root), timeout=0.5), "the dir came back"
        fh.assert_session_gone(snap)
    finally:
        if helper is not None:
            fh.stop(helper)
