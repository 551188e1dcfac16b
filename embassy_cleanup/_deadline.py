"""A deadline for the whole start of a session, and a way to give up on a
blocking step when it passes.

``start_timeout`` bounds everything ``start()`` does: chromedriver's start,
the browser's, the headless shell's attach, a Grid's new session.  Some of
those steps are one blocking call we cannot interrupt (the WebDriver
new-session request: chromedriver itself waits up to 60 s for the browser's
``DevToolsActivePort``).  :func:`run_bounded` runs such a call in a daemon
thread and stops waiting for it at the deadline; the caller then tears down
the processes the call was talking to, which makes the call fail and the
thread end.  A call that succeeds after it was given up hands its result to
``on_late`` (close a connection, delete a Grid session), so nothing it made
is left behind.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Generic, TypeVar

log = logging.getLogger("embassy_cleanup")

T = TypeVar("T")

#: The default ``start_timeout``, in seconds: a cold Chrome on a loaded
#: 2-CPU machine starts in 1-3 s; 30 s leaves room for a slow disk or a
#: busy Grid while failing twice as fast as chromedriver's own 60 s wait.
DEFAULT_START_TIMEOUT = 30.0


class Deadline:
    """A point in ``clock()`` time; ``seconds`` is the whole bound it came from."""

    def __init__(
        self, seconds: float, start: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.seconds = seconds
        self.start = clock() if start is None else start
        self.at = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at

    def elapsed(self) -> float:
        return self.clock() - self.start


class Expired(Exception):
    """:func:`run_bounded` gave up: the deadline passed before the call returned."""


class _Call(Generic[T]):
    def __init__(self, fn: Callable[[], T], on_late: Callable[[T], object] | None) -> None:
        self.fn = fn
        self.on_late = on_late
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as err:  # handed to the waiting thread, or logged when abandoned
            with self.lock:
                self.error = err
                abandoned = self.abandoned
                self.done.set()
            if abandoned:
                log.debug(
                    "a start step given up on ended with: %s", str(err).splitlines()[0] if str(err) else err
                )
            return
        with self.lock:
            self.result = result
            abandoned = self.abandoned
            self.done.set()
        if abandoned and self.on_late is not None:
            try:
                self.on_late(result)
            except Exception as err:  # best effort: the caller tore down already
                log.debug("cleaning up after a start step that returned late: %s", err)


def run_bounded(
    fn: Callable[[], T], deadline: Deadline, name: str, on_late: Callable[[T], object] | None = None
) -> T:
    """``fn()``, or :class:`Expired` once ``deadline`` passes.

    ``fn`` runs in a daemon thread named ``name``; its exception is re-raised
    here.  Given up on, it keeps running until what it waits for fails (the
    caller kills it); if it returns after all, ``on_late`` gets the result.
    """
    call: _Call[T] = _Call(fn, on_late)
    threading.Thread(target=call.run, name=name, daemon=True).start()
    try:
        finished = call.done.wait(deadline.remaining())
    except BaseException:  # KeyboardInterrupt while waiting: give up, as at the deadline
        _abandon(call)
        raise
    if not finished and _abandon(call):
        raise Expired(name)
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]


def _abandon(call: _Call[T]) -> bool:
    """Give up on ``call``; False when it finished meanwhile."""
    with call.lock:
        if not call.done.is_set():
            call.abandoned = True
            return True
    return False
