"""Time, budgets and calls with a deadline: one home for each.

* :class:`Clock` is the only source of time for teardown and its waits.  Tests
  replace it with a fake (trio's ``MockClock`` idea), so budget logic runs in
  microseconds and never flakes under load.
* :class:`Budget` is a deadline on a clock: ``remaining()``, ``share(f)``.
* :func:`call_with_deadline` runs a blocking call (``driver.quit()``, a
  WebDriver probe) in a daemon thread and stops *waiting* for it at the
  deadline.  A WebDriver call cannot be cancelled from outside; the caller
  then ends what the call was waiting on (the browser), which ends the call.
  Each call's thread is named, so a leak of them is visible (and tested).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

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
    """``seconds`` from now on ``clock``."""

    def __init__(self, seconds: float, clock: Clock = REAL_CLOCK) -> None:
        self.clock = clock
        self.seconds = seconds
        self.start = clock.now()
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
    """One call in a named daemon thread; :meth:`result` waits for it."""

    def __init__(self, name: str, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._outcome: Call[T] = Call(False)
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._outcome = Call(True, self._fn())
        except BaseException as err:  # noqa: BLE001 - handed to the caller, never raised here
            self._outcome = Call(True, None, err)
        finally:
            self._done.set()

    def result(self, timeout: float) -> Call[T]:
        """The outcome, or ``Call(done=False)`` if it is still running after ``timeout``."""
        if not self._done.wait(max(0.0, timeout)):
            return Call(False)
        return self._outcome


def call_with_deadline(fn: Callable[[], T], timeout: float, name: str) -> Call[T]:
    """Run ``fn()`` for at most ``timeout`` seconds (see the module docstring)."""
    return Background(name, fn).result(timeout)
