"""Time, budgets and calls with a deadline: one home for each.

* :class:`Clock` is the only source of time for teardown and its waits.  Tests
  replace it with a fake (trio's ``MockClock`` idea), so budget logic runs in
  microseconds and never flakes under load.
* :class:`Budget` is a deadline on a clock: ``remaining()``, ``share(f)``.
* :class:`Bounded` is a per-process loop that honours a budget: it stops once
  the budget is spent (after a short floor, so a late teardown still gets its
  SIGKILLs out) and says how much it did not reach.
* :func:`call_with_deadline` runs a blocking call (``driver.quit()``, a
  WebDriver probe) in a daemon thread and stops *waiting* for it at the
  deadline; :func:`run_bounded` does the same for a start step (the
  WebDriver new-session request: chromedriver itself waits up to 60 s for the
  browser) and raises :class:`Expired`, handing a result that arrives after
  it gave up to ``on_late`` (close it, delete a Grid session), so nothing the
  call made is left behind.  A WebDriver call cannot be cancelled from
  outside; the caller then ends what the call was waiting on (the browser),
  which ends the call.  Each call's thread is named, so a leak of them is
  visible.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Sequence, TypeVar

log = logging.getLogger("embassy_cleanup")

T = TypeVar("T")


class Clock:
    """Monotonic time and sleeping; subclass or replace for tests."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


#: The real clock (stateless, shared).
REAL_CLOCK = Clock()


class Budget:
    """``seconds`` from ``start`` (default: now) on ``clock``: a deadline."""

    def __init__(self, seconds: float, clock: Clock = REAL_CLOCK, start: float | None = None) -> None:
        self.clock = clock
        self.seconds = seconds
        self.start = clock.now() if start is None else start
        self.deadline = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock.now())

    def elapsed(self) -> float:
        return self.clock.now() - self.start

    def share(self, fraction: float) -> float:
        """``fraction`` of the whole budget, capped by what is left."""
        return min(self.remaining(), self.seconds * fraction)

    def expired(self) -> bool:
        return self.remaining() <= 0


#: However late it starts, a per-process loop gets this long: a spent budget
#: must not stop the SIGKILLs the teardown exists for.  A record lists at
#: most 4096 PIDs, so the floor also bounds the cost of a hostile one.
LOOP_FLOOR_S = 0.25


class Bounded(Generic[T]):
    """Iterate ``items`` while ``budget`` lasts (all of them if it is None).

    The loop gets what is left of the budget, but at least
    :data:`LOOP_FLOOR_S` from its start.  ``left`` is the number of items it
    did not reach; ``what`` names them in the log line.
    """

    def __init__(self, items: Sequence[T], budget: Budget | None, what: str = "process(es)") -> None:
        self.items = items
        self.what = what
        self.left = 0
        self._clock = budget.clock if budget is not None else REAL_CLOCK
        self._end = None if budget is None else self._clock.now() + max(budget.remaining(), LOOP_FLOOR_S)

    def __iter__(self) -> Iterator[T]:
        for i, item in enumerate(self.items):
            if self._end is not None and self._clock.now() >= self._end:
                self.left = len(self.items) - i
                log.warning("budget spent: %d of %d %s not reached", self.left, len(self.items), self.what)
                return
            yield item

    def unreached(self) -> Sequence[T]:
        """The items the loop did not reach."""
        return self.items[len(self.items) - self.left :]


@dataclass
class Call(Generic[T]):
    """The outcome of :func:`call_with_deadline` (or of a :class:`Background`).

    ``done`` is False when the call was still running at the deadline; then
    ``value`` and ``error`` are None.
    """

    done: bool
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None


class Background(Generic[T]):
    """One call in a named daemon thread; :meth:`result` waits for it.

    :meth:`abandon` gives up on it: a result that still arrives goes to
    ``on_late``, an error is only logged."""

    def __init__(self, name: str, fn: Callable[[], T], on_late: Callable[[T], object] | None = None) -> None:
        self._fn = fn
        self._on_late = on_late
        self._outcome: Call[T] = Call(False)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            outcome: Call[T] = Call(True, self._fn())
        except BaseException as err:  # noqa: BLE001 - handed to the caller, never raised here
            outcome = Call(True, None, err)
        with self._lock:
            self._outcome = outcome
            abandoned = self._abandoned
            self._done.set()
        if not abandoned:
            return
        if outcome.error is not None:
            log.debug("%s, given up on, ended with: %s", self.thread.name, outcome.error)
        elif self._on_late is not None:
            try:
                self._on_late(outcome.value)  # type: ignore[arg-type]
            except Exception as err:  # best effort: the caller tore down already
                log.debug("cleaning up after %s, which returned late: %s", self.thread.name, err)

    def result(self, timeout: float) -> Call[T]:
        """The outcome, or ``Call(done=False)`` if it is still running after ``timeout``."""
        if not self._done.wait(max(0.0, timeout)):
            return Call(False)
        return self._outcome

    def abandon(self) -> bool:
        """Give up on the call; False when it finished meanwhile."""
        with self._lock:
            if self._done.is_set():
                return False
            self._abandoned = True
            return True


def call_with_deadline(fn: Callable[[], T], timeout: float, name: str) -> Call[T]:
    """Run ``fn()`` for at most ``timeout`` seconds (see the module docstring)."""
    return Background(name, fn).result(timeout)


class Expired(Exception):
    """:func:`run_bounded` gave up: the deadline passed before the call returned."""


def run_bounded(
    fn: Callable[[], T], deadline: Budget, name: str, on_late: Callable[[T], object] | None = None
) -> T:
    """``fn()``, or :class:`Expired` once ``deadline`` passes (see the module
    docstring); ``fn``'s own exception is re-raised here."""
    call = Background(name, fn, on_late)
    try:
        outcome = call.result(deadline.remaining())
    except BaseException:  # KeyboardInterrupt while waiting: give up, as at the deadline
        call.abandon()
        raise
    if not outcome.done:
        if call.abandon():
            raise Expired(name)
        outcome = call.result(0)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
