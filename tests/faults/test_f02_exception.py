"""F2: an exception raised inside the block: full teardown, and the very
same exception propagates, unchanged."""

from __future__ import annotations

import shutil

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, _teardown
from tests.faults import _fault_helpers as fh

pytestmark = [pytest.mark.chrome, pytest.mark.usefixtures("bystander")]


class JobFailed(Exception):
    pass


def test_exception_in_the_block_should_propagate_unchanged_after_teardown(session_kwargs, bystander):
    raised = JobFailed("the bot job failed")
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with pytest.raises(JobFailed) as info:
        with cleanup:
            snap = fh.snapshot(cleanup)
            raise raised
    assert info.value is raised
    assert str(info.value) == "the bot job failed"
    assert info.value.__cause__ is None and info.value.__context__ is None
    report = cleanup.report
    assert report is not None, "teardown did not run"
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def test_exception_in_the_block_should_not_be_masked_by_cleanup_incomplete(
    session_kwargs, bystander, monkeypatch
):
    # teardown leaves the dir behind and raise_on_leak is set: still, the
    # user's exception is the one that propagates
    monkeypatch.setattr(_teardown, "remove_tree", lambda path, attempts=5: "injected: not removed")
    raised = JobFailed("the bot job failed")
    cleanup = ChromeUltraAggressiveCleanup(raise_on_leak=True, **session_kwargs)
    snap = None
    try:
        with pytest.raises(JobFailed) as info:
            with cleanup:
                snap = fh.snapshot(cleanup)
                raise raised
        assert info.value is raised
        report = cleanup.report
        assert report is not None and not report.ok
        assert [lo.kind for lo in report.leftovers] == ["dir"], str(report)
        assert not [pid for pid, p in snap.procs.items() if fh.is_alive(p)]
    finally:
        if snap is not None:  # the dir the teardown was made to leave (root is None once torn down)
            shutil.rmtree(snap.root, ignore_errors=True)
