"""Every per-process loop honours the teardown's budget (issue 13): on a
clock that moves a fixed step each time it is read, a spent budget cuts the
loop after :data:`LOOP_FLOOR_S`, and what it did not reach is reported, not
silently dropped."""

from __future__ import annotations

from embassy_cleanup import Outcome
from embassy_cleanup._clock import LOOP_FLOOR_S, Bounded, Budget, Clock
from embassy_cleanup._ownership import ProcessTracker


class SteppingClock(Clock):
    """Each read of the time moves it ``step`` seconds on; sleeping moves it too."""

    def __init__(self, step: float) -> None:
        self.t = 1000.0
        self.step = step

    def now(self) -> float:
        self.t += self.step
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def test_bounded_should_yield_everything_without_a_budget():
    loop = Bounded(list(range(1000)), None)
    assert list(loop) == list(range(1000))
    assert loop.left == 0 and list(loop.unreached()) == []


def test_bounded_should_give_a_spent_budget_only_the_floor_and_name_what_it_left():
    clock = SteppingClock(LOOP_FLOOR_S / 10)  # the floor lasts about ten reads of the clock
    items = list(range(100))
    loop = Bounded(items, Budget(0.0, clock))
    reached = list(loop)
    assert 7 <= len(reached) <= 10
    assert reached == items[: len(reached)]
    assert loop.left == 100 - len(reached)
    assert list(loop.unreached()) == items[len(reached) :]


def test_bounded_should_run_to_the_end_of_what_is_left_of_a_budget():
    clock = SteppingClock(1.0)
    loop = Bounded(list(range(100)), Budget(10.0, clock))  # 1 s per item, about 10 s left
    reached = len(list(loop))
    assert 5 <= reached <= 10
    assert loop.left == 100 - reached


def test_kill_tree_with_a_spent_budget_should_kill_what_the_floor_reaches_and_report_the_rest(
    process_tree, signal_calls
):
    tree = process_tree()
    tracker = ProcessTracker(tree.session_id, tree.marker)
    assert tracker.adopt_leader(tree.popen) is not None
    procs = sorted(tracker.discover().values(), key=lambda p: p.pid)
    assert len(procs) >= 5
    clock = SteppingClock(LOOP_FLOOR_S / 2.5)

    actions, survivors = tracker.kill_tree(procs, 0, 5.0, budget=Budget(0.0, clock))

    signalled = {pid for pid, force, _r in signal_calls if force}
    assert 1 <= len(signalled) < len(procs)
    by_pid = {a.pid: a.outcome for a in actions}
    for p in procs:
        if p.pid not in signalled:
            assert by_pid[p.pid] is Outcome.SURVIVED, p
    assert {a.pid for a in survivors} >= {p.pid for p in procs if p.pid not in signalled}

    # Nothing is lost: without a budget the rest goes.
    actions, survivors = tracker.kill_tree(list(tracker.discover().values()), 0, 5.0)
    assert survivors == []
    assert tree.running() == []


def test_discover_with_a_spent_budget_should_say_how_many_processes_it_did_not_examine(process_tree):
    tree = process_tree()
    tracker = ProcessTracker(tree.session_id, tree.marker)
    assert tracker.adopt_leader(tree.popen) is not None

    tracker.discover(Budget(0.0, SteppingClock(LOOP_FLOOR_S / 2.5)))
    assert tracker.unexamined > 0

    found = tracker.discover()
    assert tracker.unexamined == 0
    assert tree.pids <= set(found)
