"""One lifecycle for every kind of session (local, remote, adopted, ...).

A *kind* supplies only what differs (the :class:`Kind` protocol): its
teardown plan and target, the record the watchdog needs to finish the job
alone, and how it lets go of its driver and its owner lock.  Everything every
kind shares lives here, once:

* **run once, owner only** (:class:`Lifecycle`): ``__exit__``, ``close()``, a
  signal handler or a finalizer may all ask; the first runs the stages, later
  calls get the same report, a call from another thread waits for it, a call
  re-entered from a signal handler in the running thread returns None at
  once, and a ``fork()``-ed child never tears down its parent's session;
* **crash safety**: the live registry (what signal handlers tear down) and
  the registration with the owner's watchdog, under the session's kind;
* **the finalizer**: a session dropped unclosed warns (``ResourceWarning``)
  and is still torn down;
* **the public wrapper** (:class:`SessionHandle`): ``report``, ``close()``,
  ``raise_on_leak``, and an ``__exit__`` that never masks the user's error.

Adding a kind means writing a :class:`Kind` and a watchdog reaper for it
(``_watchdog_main``); nothing here, in ``_teardown`` or in ``_watchdog``
changes (docs/architecture.md, "How a kind is added").
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
import weakref
from typing import Any, Callable, ClassVar, Protocol, TypeVar

from ._clock import REAL_CLOCK, Clock
from ._errors import CleanupIncomplete
from ._report import CleanupReport, Leftover, Stage, StageResult
from ._teardown import Plan, TeardownInterrupted, TeardownTarget, run_teardown
from ._watchdog import WATCHDOG_PROTOCOL, client

log = logging.getLogger("embassy_cleanup")
T = TypeVar("T")


class Kind(Protocol):
    """What one kind of session supplies to the shared lifecycle."""

    #: The kind's name: the watchdog picks its reaper by it.
    kind: ClassVar[str]

    def plan(self) -> tuple[TeardownTarget, Plan] | None:
        """What to tear down and how; None when nothing was started (then
        nothing is touched and every stage is reported skipped)."""

    def watchdog_record(self) -> dict[str, Any] | None:
        """What the watchdog needs to tear the session down alone (the body of
        its ``add`` message), or None when there is nothing for it yet."""

    def release(self) -> None:
        """After the stages: let go of the driver (its connection, pipes) and
        anything else held (the owner lock)."""

    def forget_in_child(self) -> None:
        """In a ``fork()``-ed child: drop copies of what only the owner holds."""


_live: weakref.WeakValueDictionary[str, Lifecycle] = weakref.WeakValueDictionary()
_live_lock = threading.RLock()


def live_sessions() -> list[Lifecycle]:
    """This process's sessions, of every kind, not yet torn down."""
    with _live_lock:
        return [lc for lc in list(_live.values()) if lc.report is None]


#: How long the owner waits for the watchdog to end a handed-off session's
#: processes before it stops waiting to collect their exit status.
HANDED_REAP_S = 30.0


def _reap_handed(lc: Lifecycle) -> None:
    """Collect the exit status of what the owner started itself (chromedriver,
    the headless shell) once the watchdog ended it: never a zombie."""
    planned = lc.kind.plan()
    if planned is not None and not planned[0].tracker.wait_started(HANDED_REAP_S):
        log.warning("%s: the watchdog did not end the session within %.0f s", lc.session_id, HANDED_REAP_S)


def _watchdog_messages() -> list[dict[str, Any]]:
    """What a replacement watchdog must learn: every guarded live session."""
    return [m for lc in live_sessions() if lc.watchdog for m in [lc.add_message()] if m is not None]


def _forget_in_child() -> None:
    # No lock here: one held by another thread at fork() time stays held in
    # the child forever.  A copy of the weak dict's values is enough.
    for lc in [lc for lc in list(_live.values()) if lc.report is None]:
        try:
            lc.kind.forget_in_child()
        except Exception as err:  # never break a fork
            log.debug("after fork: %s: %s", lc.session_id, err)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _never_started(session_id: str) -> CleanupReport:
    skipped = "the session never started"
    return CleanupReport(
        session_id, tuple(StageResult(st, 0.0, skipped_reason=skipped) for st in Stage), (), 0.0, passes=0
    )


class Lifecycle:
    """The shared lifecycle of one session (see the module docstring)."""

    def __init__(
        self, session_id: str, kind: Kind, budget: float, watchdog: bool, clock: Clock = REAL_CLOCK
    ) -> None:
        self.session_id = session_id
        self.kind = kind
        self.budget = budget
        self.watchdog = watchdog
        self.clock = clock
        self.owner_pid = os.getpid()
        self.report: CleanupReport | None = None
        self._registered = False
        #: True once a finalizer gave the teardown to the watchdog.
        self.handed_off = False
        # Reentrant: a signal handler may call teardown() in the thread that
        # holds it; _running_in then tells it to return at once.
        self._lock = threading.RLock()
        self._running_in: int | None = None

    # -- crash safety ---------------------------------------------------------
    def add_message(self) -> dict[str, Any] | None:
        body = self.kind.watchdog_record()
        if body is None:
            return None
        return {
            "v": WATCHDOG_PROTOCOL,
            "op": "add",
            "sid": self.session_id,
            "kind": self.kind.kind,
            "body": body,
        }

    def register(self) -> int | None:
        """List the session as live (signal handlers tear it down) and, when it
        asked for the watchdog, register it there.  Returns the watchdog's pid."""
        with _live_lock:
            _live[self.session_id] = self
        if not self.watchdog:
            return None
        message = self.add_message()
        if message is None:
            return None
        watchdog = client()
        watchdog.set_registry(_watchdog_messages)
        pid = watchdog.send(message)
        self._registered = True
        return pid

    def _unregister(self) -> None:
        with _live_lock:
            if _live.get(self.session_id) is self:
                del _live[self.session_id]
        if self._registered:
            self._registered = False
            client().send({"v": WATCHDOG_PROTOCOL, "op": "remove", "sid": self.session_id})

    # -- teardown -----------------------------------------------------------------
    def _run(self) -> CleanupReport:
        planned = self.kind.plan()
        if planned is None:  # never started: nothing is ours, so touch nothing
            return _never_started(self.session_id)
        target, plan = planned
        if target.commands is not None:
            target.commands.close()  # from now on the driver refuses commands, but our quit
        return run_teardown(target, self.budget, plan, self.clock)

    def teardown(self) -> CleanupReport | None:
        """Run the teardown once; return its report.

        None in a ``fork()``-ed child (not ours) and in a call re-entered from a
        signal handler while the teardown runs in this thread (the outer call
        finishes it).  A KeyboardInterrupt/SystemExit held by the stages is
        re-raised after the report exists and the session was released."""
        if os.getpid() != self.owner_pid:
            return None
        me = threading.get_ident()
        if self._running_in == me:
            return None  # re-entered from a signal handler: the outer call finishes
        with self._lock:  # another thread tearing down: wait for its report
            if self.report is not None:
                return self.report
            if self._running_in == me:  # a handler that fired right after our acquire
                return None
            self._running_in = me
            try:
                if self.report is not None:  # a handler ran it all before we marked it
                    return self.report
                interrupted: BaseException | None = None
                try:
                    report = self._run()
                except TeardownInterrupted as held:  # finished; re-raised below
                    report, interrupted = held.report, held.original
                self.report = report
                for step in (self.kind.release, self._unregister):
                    try:
                        step()
                    except Exception as err:  # never let bookkeeping hide the report
                        log.warning("%s: %s", self.session_id, err)
                if interrupted is not None:
                    raise interrupted
                return report
            finally:
                self._running_in = None

    def finalize_unclosed(self, what: str, fix: str) -> None:
        """For a finalizer: an owner dropped without ``close()`` warns
        (``ResourceWarning``, naming ``what`` and the ``fix``) and is still
        torn down, even when a warnings filter turns the warning into an error.

        A finalizer runs inside garbage collection, in whatever thread dropped
        the last reference, maybe holding locks: it must not run a teardown
        there.  A session the watchdog guards is handed to it (it tears the
        session down from its record, as after the owner's death); only a
        session without a watchdog is torn down in place."""
        if self.report is not None or self.handed_off or os.getpid() != self.owner_pid:
            return
        try:
            warnings.warn(
                f"{what} was not closed; tearing it down now ({fix})", ResourceWarning, stacklevel=4
            )
        finally:
            if not self._hand_off():
                self.teardown()

    def _hand_off(self) -> bool:
        """Give the teardown to the watchdog; False when it cannot take it."""
        if not self._registered:
            return False
        with self._lock:
            if self.report is not None or self._running_in is not None:
                return True  # torn down, or being torn down: nothing to hand off
            try:
                self.kind.release()  # the owner lock first: the watchdog takes it
                client().send({"v": WATCHDOG_PROTOCOL, "op": "reap", "sid": self.session_id})
            except Exception as err:  # the watchdog is gone: tear down here after all
                log.warning("%s: handing the teardown to the watchdog failed: %s", self.session_id, err)
                return False
            self.handed_off = True
            self._registered = False  # the watchdog forgets it once reaped
            with _live_lock:
                if _live.get(self.session_id) is self:
                    del _live[self.session_id]
            threading.Thread(
                target=_reap_handed, args=(self,), name="embassy-cleanup-reap-handed", daemon=True
            ).start()
            log.info("%s: handed to the watchdog for teardown", self.session_id)
            return True


class SessionHandle:
    """The public side every kind shares: ``report``, ``close()``, ``with``.

    Subclasses set ``self._lifecycle`` and ``raise_on_leak``, and call
    :meth:`_arm_finalizer` once something exists to tear down."""

    _lifecycle: Lifecycle
    raise_on_leak: bool
    _what: ClassVar[str] = "embassy_cleanup session"
    _fix: ClassVar[str] = "use a 'with' block or call close()"

    @property
    def report(self) -> CleanupReport | None:
        """The cleanup report, once teardown has run."""
        return self._lifecycle.report

    @property
    def final_report(self) -> CleanupReport:
        """The cleanup report, typed without ``None``: after the ``with`` block
        (or ``close()``) it is :attr:`report`; before, RuntimeError says so."""
        report = self.report
        if report is None:
            raise RuntimeError(
                f"{self._what} {self._lifecycle.session_id} has not been torn down yet: "
                "the report exists after the 'with' block or close()"
            )
        return report

    def _arm_finalizer(self) -> None:
        self._finalizer = weakref.finalize(
            self, _finalize, self._lifecycle, f"{self._what} {self._lifecycle.session_id}", self._fix
        )

    def close(self) -> CleanupReport:
        """Tear down (once) and return the report.

        Raises :class:`CleanupIncomplete` (carrying the report) when
        ``raise_on_leak`` is set and verification found leftovers.  A call
        that did not run the teardown itself (re-entered from a signal handler
        while it runs, or in a ``fork()``-ed child) returns a report that says
        so (``ok`` is False) and never raises."""
        report = self._close()
        if report.passes == 0 and self.report is None:
            return report  # not torn down by this call: the owner's call decides
        if self.raise_on_leak and not report.ok:
            raise CleanupIncomplete(
                f"{self._what} {self._lifecycle.session_id} left {len(report.leftovers)} leftover(s): "
                + ", ".join(str(lo) for lo in report.leftovers),
                report=report,
            )
        return report

    def _close(self) -> CleanupReport:
        lc = self._lifecycle
        report = lc.teardown()
        if report is None:
            why = (
                "started in another process; torn down there"
                if os.getpid() != lc.owner_pid
                else "teardown is still running in an outer call"
            )
            return CleanupReport(lc.session_id, (), (Leftover("unverified", why),), 0.0, passes=0)
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        self._after_close()
        return report

    def _after_close(self) -> None:
        """What the subclass drops once torn down (its driver attribute)."""

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """``async with``: the teardown runs in a worker thread, off the event
        loop; a task cancelled meanwhile still waits for it to finish."""
        await run_off_loop(lambda: self.__exit__(exc_type, exc, tb))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            try:
                self._close()
            except Exception as err:  # never mask the user's exception
                warnings.warn(f"embassy_cleanup teardown failed: {err!r}", RuntimeWarning, stacklevel=2)
            return
        self.close()


async def run_off_loop(fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a worker thread so the event loop keeps running.

    A cancellation while it runs does not abandon it: the call finishes
    first (a half-started browser must not be left to nobody), then
    ``CancelledError`` is raised."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.done():  # the call itself ended; keep its own outcome
                result = future.result()
                cancelled = True
                break
            cancelled = True  # finish the call, then re-raise
    if cancelled:
        raise asyncio.CancelledError
    return result


def _finalize(lc: Lifecycle, what: str, fix: str) -> None:
    lc.finalize_unclosed(what, fix)
