"""Budgets and the teardown's use of them, on a fake clock (``h.FakeClock``).

Nothing here waits for real time: a stage body "spends" time by sleeping on
the teardown's clock, which moves at once.  So the figures are exact and the
tests behave the same on an idle machine and under load.
"""

from __future__ import annotations

import os
import time

import pytest

from embassy_cleanup import Stage
from embassy_cleanup._clock import Budget
from embassy_cleanup._ownership import ProcessTracker
from embassy_cleanup._report import Leftover
from embassy_cleanup._teardown import (
    LOCAL_PLAN,
    MAX_PASSES,
    Plan,
    StageRun,
    TeardownRun,
    TeardownTarget,
    run_teardown,
)
from tests import _helpers as h

SID = "abcdefabcdef"


def empty_target(root: str | None = None) -> TeardownTarget:
    """A session with nothing running: only the budget logic is under test.
    (``born_after``: no process older than the test can be the session's, so
    discovery reads no command lines.)"""
    return TeardownTarget(SID, ProcessTracker(SID, root or "", born_after=time.time()), root, driver=None)


class Spender:
    """A plan whose every stage records what is left of the budget when it
    starts, then sleeps ``cost[stage]`` seconds on the teardown's clock (or,
    with ``fair``, its fair share: ``budget.share(fraction)``)."""

    def __init__(self, cost: dict[Stage, float] | None = None, leftovers: bool = False) -> None:
        self.cost = cost or {}
        self.leftovers = leftovers
        self.seen: list[tuple[Stage, float]] = []

    def body(self, stage: Stage):
        def run(t: TeardownRun, run: StageRun):
            self.seen.append((stage, t.budget.remaining()))
            t.clock.sleep(self.cost.get(stage, 0.0))
            if stage is Stage.VERIFY:
                return [Leftover("dir", "/x")] if self.leftovers else []
            return None

        return run

    def plan(self) -> Plan:
        return Plan({stage: self.body(stage) for stage in Stage})


# -- Budget ------------------------------------------------------------------------------------
def test_budget_should_count_down_on_its_clock():
    clock = h.FakeClock()
    b = Budget(5, clock)
    assert (b.remaining(), b.elapsed(), b.expired()) == (5.0, 0.0, False)
    clock.advance(2)
    assert (b.remaining(), b.elapsed(), b.expired()) == (3.0, 2.0, False)
    clock.advance(3)
    assert (b.remaining(), b.expired()) == (0.0, True)
    clock.advance(10)
    assert b.remaining() == 0.0 and b.elapsed() == 15.0  # never negative


def test_budget_should_count_from_the_given_start():
    clock = h.FakeClock(100.0)
    b = Budget(5, clock, start=98.0)
    assert b.remaining() == 3.0 and not b.expired()
    clock.advance(3)
    assert b.remaining() == 0.0 and b.expired() and b.elapsed() == 5.0


def test_budget_share_should_be_a_fraction_of_the_whole_capped_by_what_is_left():
    clock = h.FakeClock()
    b = Budget(10, clock)
    assert b.share(0.4) == 4.0
    clock.advance(7)
    assert b.share(0.4) == 3.0  # only 3 s left
    clock.advance(3)
    assert b.share(0.4) == 0.0


def test_a_zero_budget_should_be_expired_at_once_and_share_nothing():
    b = Budget(0, h.FakeClock())
    assert b.expired() and b.remaining() == 0.0 and b.share(0.5) == 0.0


# -- the teardown and its budget ---------------------------------------------------------------
def test_each_stage_should_get_only_what_earlier_stages_left_of_the_budget():
    clock = h.FakeClock()
    spender = Spender({Stage.QUIT: 4.0, Stage.KILL_TREE: 1.0, Stage.PORTS: 0.5, Stage.OS_KILL: 2.0})
    report = run_teardown(empty_target(), 10.0, spender.plan(), clock)
    assert spender.seen == [
        (Stage.QUIT, 10.0),
        (Stage.KILL_TREE, 6.0),
        (Stage.PORTS, 5.0),
        (Stage.OS_KILL, 4.5),
        (Stage.PROFILE, 2.5),
        (Stage.VERIFY, 2.5),
    ]
    assert report.ok and report.passes == 1
    assert report.duration_s == 7.5
    assert [s.duration_s for s in report.stages] == [4.0, 1.0, 0.5, 2.0, 0.0, 0.0]


def test_a_stage_that_overruns_should_leave_zero_to_the_rest_which_still_run():
    clock = h.FakeClock()
    spender = Spender({Stage.KILL_TREE: 30.0}, leftovers=True)
    report = run_teardown(empty_target(), 5.0, spender.plan(), clock)
    assert [stage for stage, _ in spender.seen] == list(Stage)  # every stage ran once
    assert dict(spender.seen)[Stage.PORTS] == 0.0
    assert report.stage(Stage.KILL_TREE).duration_s == 30.0
    assert report.passes == 1  # no second pass: the budget is spent
    assert not report.ok and [lo.kind for lo in report.leftovers] == ["dir"]


def test_leftovers_should_get_another_pass_only_while_budget_remains():
    clock = h.FakeClock()
    spender = Spender({Stage.KILL_TREE: 1.0}, leftovers=True)
    report = run_teardown(empty_target(), 1.5, spender.plan(), clock)
    assert report.passes == 2  # after pass 1, 0.5 s were left; after pass 2, none
    assert [s for s, _ in spender.seen].count(Stage.VERIFY) == 2
    assert [left for s, left in spender.seen if s is Stage.KILL_TREE] == [1.5, 0.5]


def test_leftovers_should_get_at_most_max_passes_however_large_the_budget():
    report = run_teardown(empty_target(), 1000.0, Spender(leftovers=True).plan(), h.FakeClock())
    assert report.passes == MAX_PASSES


def test_a_zero_budget_should_still_run_every_stage_once():
    spender = Spender(leftovers=True)
    report = run_teardown(empty_target(), 0.0, spender.plan(), h.FakeClock())
    assert spender.seen == [(stage, 0.0) for stage in Stage]
    assert report.passes == 1 and report.duration_s == 0.0


def test_the_local_plan_with_a_zero_budget_should_still_remove_the_session_dir(tmp_path):
    root = str(tmp_path / "session")
    os.makedirs(os.path.join(root, "profile"))
    clock = h.FakeClock()
    report = run_teardown(empty_target(root), 0.0, LOCAL_PLAN, clock)
    assert report.ok, str(report)
    assert report.removed == (root,) and not os.path.lexists(root)
    assert report.stage(Stage.QUIT).skipped_reason is not None  # no driver
    assert clock.sleeps == []  # nothing of ours ran at removal: no settle window


def test_a_settle_window_should_be_waited_on_the_clock_and_capped_by_the_budget(tmp_path):
    """A second pass settles: verification waits on the teardown's clock,
    never longer than the budget left (here 0.1 s of the 0.2 s window)."""
    root = str(tmp_path / "session")
    os.makedirs(root)
    clock = h.FakeClock()
    passes = []

    def kill_tree(t: TeardownRun, run: StageRun):
        passes.append(t.passes)
        clock.advance(0.45 if t.passes == 1 else 0.0)

    stages = dict(LOCAL_PLAN.stages)
    stages[Stage.KILL_TREE] = kill_tree
    verify = stages[Stage.VERIFY]

    def verify_once_dirty(t: TeardownRun, run: StageRun):
        if t.passes == 1:
            return [Leftover("dir", root)]
        return verify(t, run)  # type: ignore[operator]

    stages[Stage.VERIFY] = verify_once_dirty
    report = run_teardown(empty_target(root), 0.55, Plan(stages), clock)
    assert passes == [1, 2] and report.ok, str(report)
    assert sum(clock.sleeps) == pytest.approx(0.1)
    assert report.duration_s == pytest.approx(0.55)
