"""``ChromePool``: reuse browsers across jobs without trusting the callers.

Every browser in the pool is one :class:`ChromeUltraAggressiveCleanup`
session, so it has the same ownership markers, the same watchdog (a pool
whose owner is SIGKILLed is cleaned up like any session) and the same staged
teardown when the pool retires it.  What the pool adds is lifecycle:

* a browser is handed out only after a health check (processes running and
  not stopped, a window that answers a script within ``check_timeout``),
  and is reset on return (one window, ``about:blank``, cookies and cache
  cleared);
* it is retired after ``max_uses`` jobs, when its process tree passes
  ``max_memory_mb``, when a check fails, when it sat idle for longer than
  ``idle_timeout`` (a background reaper), or to make room for a job of
  other options (in every ``on_full`` mode);
* each checkout gets its own view of the driver (a shallow copy sharing the
  WebDriver session), which refuses to work once its lease is over (returned,
  retired, pool closed) with :class:`LeaseExpiredError` or
  :class:`PoolClosedError`, instead of a connection error from a browser that
  is gone or, worse, driving the next job's browser;
* ``close()`` (or the ``with`` block, or the finalizer of a dropped pool)
  tears every browser down, including those still checked out.

Locking: one condition variable guards the pool's books.  Starting, checking,
resetting and tearing down a browser take seconds, so they all run outside
it; a slot is reserved under the lock first (``_creating``) so that
``max_size`` holds while a browser starts, and a browser that finishes
starting after the pool closed is torn down by the thread that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import threading
import time
import types
import urllib.parse
import warnings
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

import psutil

from ._clock import call_with_deadline
from ._contexts import BrowserContext, BrowserHost
from ._errors import (
    CleanupIncomplete,
    ConfigError,
    EmbassyCleanupError,
    LeaseExpiredError,
    PoolClosedError,
    PoolFullError,
    PoolTimeoutError,
)
from ._lifecycle import run_off_loop
from ._options import SessionOptions, validate
from ._session import ChromeUltraAggressiveCleanup
from ._webdriver import first_line

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.chrome.webdriver import WebDriver

    from ._report import CleanupReport

log = logging.getLogger("embassy_cleanup")

ON_FULL = ("wait", "evict", "reject")
#: ``on_full=``'s values, as a type.
OnFull = Literal["wait", "evict", "reject"]
ISOLATION = ("browser", "context")
#: ``isolation=``: a browser per job at a time, or a user context per job.
Isolation = Literal["browser", "context"]
#: Why a browser was retired before its time; the keys of ``PoolStats.recycled``.
RECYCLE_REASONS = ("max_uses", "memory", "unhealthy")


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's counters (``pool.stats()``).

    ``created``: browsers started; ``reused``: checkouts served by an idle
    browser; ``recycled``: browsers retired by reason (``max_uses``,
    ``memory``, ``unhealthy``); ``reaped_idle``: retired by the idle reaper;
    ``evicted``: retired to make room; ``errors``: browsers that failed to
    start plus teardowns that did not verify clean; ``in_use``, ``idle``,
    ``starting``, ``waiting``: right now.
    """

    max_size: int
    created: int
    reused: int
    recycled: Mapping[str, int]
    reaped_idle: int
    evicted: int
    errors: int
    in_use: int
    idle: int
    starting: int
    waiting: int
    closed: bool

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["recycled"] = dict(self.recycled)
        return out


class _Lease:
    """One checkout.  ``view`` is the driver its holder gets; ``revoked``
    says why that driver now refuses commands (None while the lease runs)."""

    def __init__(self) -> None:
        self.view: Any = None
        self.revoked: tuple[type[EmbassyCleanupError], str] | None = None
        self.context: BrowserContext | None = None  # isolation="context"


class _Entry:
    """One browser of the pool and the pool's books about it."""

    def __init__(self, key: str, session: ChromeUltraAggressiveCleanup, driver: WebDriver) -> None:
        self.key = key
        self.session = session
        self.driver = driver  # the pool's own handle: checks, reset, teardown
        self.uses = 0
        self.last_used = time.monotonic()
        self.lease: _Lease | None = None
        # isolation="context": the lanes and contexts' books, the leases out
        # now, and why no new context may open (retire once the last returns)
        self.host: BrowserHost | None = None
        self.leases: list[_Lease] = []
        self.reserved = 0  # lanes set aside for checkouts whose context is being opened
        self.draining: str | None = None

    @property
    def sid(self) -> str:
        return self.session.session_id

    def lend(self) -> _Lease:
        """A new lease, with its own view of the driver."""
        lease = _Lease()
        lease.view = _lease_view(self, lease)
        self.lease = lease
        return lease

    def lend_context(self, budget: float) -> _Lease:
        """A new lease on a fresh user context of this browser (context mode)."""
        assert self.host is not None
        lease = _Lease()
        lease.context = BrowserContext(self.host, budget)
        lease.view = _context_view(self, lease, lease.context)
        return lease

    def end_lease(self, why: tuple[type[EmbassyCleanupError], str]) -> None:
        for lease in [self.lease, *self.leases]:
            if lease is not None and lease.revoked is None:
                lease.revoked = why
        self.lease = None
        self.leases = []


#: Helper objects a WebDriver builds around itself at construction; a view
#: gets its own, so that ``view.switch_to.window(...)`` goes through the view.
_BOUND_HELPERS = ("_switch_to", "_mobile", "_fedcm")


def _lease_view(entry: _Entry, lease: _Lease) -> Any:
    """A shallow copy of the pool's driver for one lease.

    It is a real ``WebDriver`` of the same class, talking to the same
    chromedriver session.  Every command, including those of the elements it
    returns (their parent is the view), goes through its ``execute``, which
    refuses to run once the lease is over: a holder that kept the driver or
    an element after its ``with`` block gets :class:`LeaseExpiredError` (or
    :class:`PoolClosedError`) instead of driving the next job's browser.
    ``quit`` always passes: teardown sends it, and so may a holder.
    """
    view = copy.copy(entry.driver)
    for name in _BOUND_HELPERS:
        helper = view.__dict__.get(name)
        if helper is not None:
            try:
                setattr(view, name, type(helper)(view))
            except Exception as err:  # a Selenium that builds it differently: keep the shared one
                log.debug("pool: could not rebind %s for a lease view: %r", name, err)
    from selenium.webdriver.remote.command import Command

    raw = types.MethodType(type(view).execute, view)

    def execute(driver_command: str, params: dict[str, Any] | None = None) -> Any:
        revoked = lease.revoked
        if revoked is not None and driver_command != Command.QUIT:
            cls, why = revoked
            raise cls(f"browser {entry.sid}: {why}", session_id=entry.sid)
        return raw(driver_command, params)

    view.execute = execute  # type: ignore[method-assign,assignment]
    return view


def _context_view(entry: _Entry, lease: _Lease, ctx: BrowserContext) -> Any:
    """The driver of one context lease: a shallow copy of the lane's driver
    whose ``execute`` checks the lease (as ``_lease_view``'s does) and keeps
    the job inside its user context: ``window_handles`` lists only its tabs,
    ``switch_to.window`` refuses another context's, ``switch_to.new_window``
    opens the tab in its context, and ``quit()`` only ends the job's use of
    the lane (the context is removed when the block ends)."""
    from selenium.common.exceptions import NoSuchWindowException, WebDriverException
    from selenium.webdriver.remote.command import Command

    view = copy.copy(ctx.lane)
    for name in _BOUND_HELPERS:
        helper = view.__dict__.get(name)
        if helper is not None:
            setattr(view, name, type(helper)(view))
    raw = types.MethodType(type(view).execute, view)

    def execute(driver_command: str, params: dict[str, Any] | None = None) -> Any:
        revoked = lease.revoked
        if revoked is not None:
            cls, why = revoked
            raise cls(f"browser {entry.sid}, context {ctx.context_id}: {why}", session_id=entry.sid)
        if driver_command == Command.QUIT:
            return {"value": None}
        if driver_command == Command.W3C_GET_WINDOW_HANDLES:
            return {"value": ctx.handles()}
        if driver_command == Command.NEW_WINDOW:
            kind = (params or {}).get("type") or "tab"
            return {"value": {"handle": ctx.new_tab(kind), "type": kind}}
        if driver_command == "setPermissions":  # driver.set_permissions(): in this context only
            url = urllib.parse.urlsplit(raw(Command.GET_CURRENT_URL)["value"])
            descriptor = (params or {}).get("descriptor") or {}
            name, state = str(descriptor.get("name")), str((params or {}).get("state"))
            ctx.set_permission(name, state, f"{url.scheme}://{url.netloc}")
            return {"value": None}
        if driver_command == Command.SWITCH_TO_WINDOW:
            handle = (params or {}).get("handle")
            if handle not in ctx.handles():
                raise NoSuchWindowException(f"no such window {handle!r} in this job's browser context")
        try:
            return raw(driver_command, params)
        except WebDriverException as err:
            host = entry.host
            if host is not None and not host.browser_alive():
                raise LeaseExpiredError(
                    f"browser {entry.sid} died under this job (context {ctx.context_id}); the pool retires "
                    "it and the next job gets a new browser",
                    session_id=entry.sid,
                ) from err
            raise

    view.execute = execute  # type: ignore[method-assign,assignment]
    return view


_RETURNED = (
    LeaseExpiredError,
    "this driver was returned to the pool; use it only inside its 'with pool.session()' block",
)
_CLOSED = (PoolClosedError, "the pool was closed while this browser was checked out; it is torn down")


def _option_key(opts: SessionOptions) -> str:
    """Browsers are interchangeable only when they were started alike."""
    fields = {}
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if f.name == "options" and value is not None:
            value = value.to_capabilities()
        fields[f.name] = value
    return json.dumps(fields, sort_keys=True, default=repr)


def _number(name: str, value: Any, *, minimum: float, integer: bool = False, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    wrong = isinstance(value, bool) or not isinstance(value, (int, float))
    if wrong or (integer and isinstance(value, float)):
        what = "an integer" if integer else "a number"
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be {what}{none}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(
            f"{name} must be a finite number >= {minimum}, got {value!r}", option=name, value=value
        )
    return value


class _PoolCore:
    """The pool's state; the reaper thread and the finalizer hold this, never
    the public ``ChromePool``, so dropping the pool lets it be collected."""

    def __init__(
        self,
        *,
        max_size: int,
        idle_timeout: float | None,
        max_uses: int | None,
        max_memory_mb: float | None,
        on_full: str,
        wait_timeout: float,
        check_timeout: float,
        session_kwargs: dict[str, Any],
        new_session: Callable[[dict[str, Any]], ChromeUltraAggressiveCleanup],
        isolation: str = "browser",
        per_browser: int = 1,
    ) -> None:
        self.isolation = isolation
        self.per_browser = per_browser if isolation == "context" else 1
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.max_uses = max_uses
        self.max_memory = None if max_memory_mb is None else int(max_memory_mb * 1024 * 1024)
        self.on_full = on_full
        self.wait_timeout = wait_timeout
        self.check_timeout = check_timeout
        self.session_kwargs = session_kwargs
        self.new_session = new_session
        self.owner_pid = os.getpid()

        self.cond = threading.Condition()
        self.idle: list[_Entry] = []  # least recently used first
        self.busy: set[_Entry] = set()
        self.creating = 0  # slots reserved for browsers being started
        self.retiring = 0  # browsers off the books, being torn down
        self.waiting = 0
        self.closed = False
        self.close_reports: list[CleanupReport] = []
        self.context_reports: list[CleanupReport] = []  # the last 100 (context mode)
        self.counts: Counter[str] = Counter()
        self.reaper: threading.Thread | None = None

    # -- books (call with the lock held) ----------------------------------
    def _live(self) -> int:
        return len(self.idle) + len(self.busy) + self.creating

    def _has_room(self, entry: _Entry) -> bool:
        """Context mode: whether a busy browser can take one more context."""
        if self.isolation != "context" or entry.draining is not None:
            return False
        in_flight = len(entry.leases) + entry.reserved
        opened = entry.uses + in_flight
        return in_flight < self.per_browser and (self.max_uses is None or opened < self.max_uses)

    def occupancy(self) -> str:
        """The real counts, for error messages: what holds the ``max_size`` slots
        (in use, idle, starting) and what is on its way out (retiring)."""
        return (
            f"max_size={self.max_size}: {len(self.busy)} in use, {len(self.idle)} idle, "
            f"{self.creating} starting, {self.retiring} retiring"
        )

    def stats(self) -> PoolStats:
        with self.cond:
            return PoolStats(
                max_size=self.max_size,
                created=self.counts["created"],
                reused=self.counts["reused"],
                recycled={r: self.counts[f"recycled:{r}"] for r in RECYCLE_REASONS},
                reaped_idle=self.counts["reaped_idle"],
                evicted=self.counts["evicted"],
                errors=self.counts["errors"],
                in_use=len(self.busy),
                idle=len(self.idle),
                starting=self.creating,
                waiting=self.waiting,
                closed=self.closed,
            )

    def check_owner(self) -> None:
        if os.getpid() != self.owner_pid:
            raise PoolClosedError(
                "this ChromePool belongs to the process that created it "
                f"(pid {self.owner_pid}); a forked child must create its own pool"
            )

    # -- checkout --------------------------------------------------------
    def acquire(self, key: str, kwargs: dict[str, Any], timeout: float) -> _Entry:
        deadline = time.monotonic() + timeout
        while True:
            entry, victim = self._reserve(key, deadline, timeout)
            if victim is not None:
                self.retire(victim, "evicted")
            if entry is None:
                return self._create(key, kwargs)
            if self.isolation == "context" and len(entry.leases) + entry.reserved > 1:
                return entry  # in use by other jobs right now: checked when it was handed out
            try:
                problem = self.check(entry)
            except Exception as err:
                problem = f"the check failed: {err!r}"
            with self.cond:
                if self.closed:
                    raise PoolClosedError("the pool was closed during this checkout")
                if problem is None:
                    self.counts["reused"] += 1
                    return entry
                self.busy.discard(entry)
                entry.leases.clear()
                entry.reserved = 0
                self.counts["recycled:unhealthy"] += 1
                self.retiring += 1
                self.cond.notify_all()
            log.warning("pool: browser %s failed its check before hand-out: %s", entry.sid, problem)
            self.retire(entry, "unhealthy")

    def _reserve(self, key: str, deadline: float, timeout: float) -> tuple[_Entry | None, _Entry | None]:
        """Under the lock: an idle browser of this kind (entry, None), or a
        reserved slot to start one in (None, victim-to-retire-or-None)."""
        with self.cond:
            while True:
                if self.closed:
                    raise PoolClosedError("the pool is closed")
                for entry in self.busy:  # context mode: a browser with a free lane
                    if entry.key == key and self._has_room(entry):
                        entry.reserved += 1  # its context opens outside the lock
                        return entry, None
                for entry in reversed(self.idle):  # most recently used: lets the rest idle out
                    if entry.key == key:
                        self.idle.remove(entry)
                        self.busy.add(entry)
                        if self.isolation == "context":
                            entry.reserved += 1
                        return entry, None
                if self._live() < self.max_size:
                    self.creating += 1
                    return None, None
                if self.idle:  # full, but an idle browser of another kind can make room (any on_full)
                    victim = self.idle.pop(0)  # the least recently used
                    self.counts["evicted"] += 1
                    self.retiring += 1
                    self.creating += 1
                    return None, victim
                if self.on_full == "reject":
                    raise PoolFullError(
                        f"the pool is full: {self.occupancy()} (on_full='reject'); return browsers sooner, "
                        "raise max_size or use on_full='wait'",
                        max_size=self.max_size,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeoutError(
                        f"no browser became free within {timeout:g} s: {self.occupancy()}; return them "
                        "sooner, raise max_size or pass a longer timeout",
                        max_size=self.max_size,
                        seconds=timeout,
                    )
                self.waiting += 1
                try:
                    self.cond.wait(left)
                finally:
                    self.waiting -= 1

    def _create(self, key: str, kwargs: dict[str, Any]) -> _Entry:
        """Start a browser in the slot ``_reserve`` set aside."""
        session: ChromeUltraAggressiveCleanup | None = None
        try:
            session = self.new_session(kwargs)
            driver = session.start()
            host = BrowserHost(session, self.per_browser) if self.isolation == "context" else None
        except BaseException:
            if session is not None and session.report is None:  # started, but its lanes failed
                try:
                    session.close()
                except Exception as err:  # never hide the error that got us here
                    log.warning("pool: tearing down browser %s failed: %r", session.session_id, err)
            with self.cond:
                self.creating -= 1
                self.counts["errors"] += 1
                self.cond.notify_all()
            raise
        entry = _Entry(key, session, driver)
        entry.host = host
        if host is not None:
            entry.reserved = 1
        with self.cond:
            closed = self.closed
            if not closed:
                self.creating -= 1
                self.busy.add(entry)
                self.counts["created"] += 1
        if closed:  # close() ran while this one started: it is ours to tear down
            self._teardown(entry, "the pool closed while it started")
            with self.cond:
                self.creating -= 1
                self.cond.notify_all()
            raise PoolClosedError("the pool was closed while a browser was starting for this checkout")
        return entry

    # -- context mode --------------------------------------------------------
    def lend_context(self, entry: _Entry) -> _Lease:
        """Open a fresh user context on ``entry`` (a lane was reserved for it)."""
        budget = float(self.session_kwargs.get("cleanup_timeout", 10.0))
        try:
            lease = entry.lend_context(budget)
        except BaseException:
            with self.cond:
                entry.reserved -= 1
                entry.draining = entry.draining or "unhealthy"
            self._after_context(entry)
            raise
        with self.cond:
            entry.reserved -= 1  # the reservation becomes the lease
            entry.leases.append(lease)
        return lease

    def release_context(self, entry: _Entry, lease: _Lease) -> None:
        """The job is over: remove its context (verified), then decide the browser's fate."""
        with self.cond:
            if self.closed or lease not in entry.leases:
                return  # close() tore it down already (or is doing so)
            lease.revoked = _RETURNED
        assert lease.context is not None
        report = lease.context.close()
        if not report.ok:
            log.warning(
                "pool: context %s of browser %s left leftovers: %s",
                report.session_id,
                entry.sid,
                report.leftovers,
            )
        reason = None
        if entry.host is not None and not entry.host.browser_alive():
            reason = "unhealthy"
        elif self.max_memory is not None and entry.session.memory_bytes() > self.max_memory:
            reason = "memory"
        with self.cond:
            entry.uses += 1
            self.context_reports = [*self.context_reports[-99:], report]
            if not report.ok:
                self.counts["errors"] += 1
            if lease in entry.leases:
                entry.leases.remove(lease)
            if reason is not None and entry.draining is None:
                entry.draining = reason
            if self.max_uses is not None and entry.uses >= self.max_uses and entry.draining is None:
                entry.draining = "max_uses"
        self._after_context(entry)

    def _after_context(self, entry: _Entry) -> None:
        """A context of ``entry`` ended: idle it, or retire it once it drained."""
        with self.cond:
            if self.closed or entry not in self.busy or entry.leases or entry.reserved:
                self.cond.notify_all()
                return
            reason = entry.draining
            self._put_back(entry, reason)
        if reason is not None:
            self.retire(entry, reason)

    # -- return ------------------------------------------------------------
    def release(self, entry: _Entry, lease: _Lease) -> None:
        entry.uses += 1
        with self.cond:
            if self.closed or entry not in self.busy or entry.lease is not lease:
                return  # close() tore it down already (or is doing so)
            entry.end_lease(_RETURNED)  # from here on the holder's view refuses commands
        try:
            reason = self._why_retire(entry)
        except Exception as err:  # a broken check must not keep the browser busy forever
            log.error("pool: checking browser %s after its job failed: %r", entry.sid, err)
            reason = "unhealthy"
        with self.cond:
            if self.closed or entry not in self.busy:
                return
            self._put_back(entry, reason)
        if reason is not None:
            self.retire(entry, reason)

    def _put_back(self, entry: _Entry, reason: str | None) -> None:
        """Off the busy list (the caller holds ``cond``): idle again, or counted
        for retirement by ``reason``; the caller then retires it."""
        self.busy.discard(entry)
        if reason is None:
            entry.last_used = time.monotonic()
            self.idle.append(entry)
        else:
            self.counts[f"recycled:{reason}"] += 1
            self.retiring += 1
        self.cond.notify_all()

    def _why_retire(self, entry: _Entry) -> str | None:
        """After a job: the reason to retire this browser, or None once it is reset."""
        if self.max_uses is not None and entry.uses >= self.max_uses:
            return "max_uses"
        if self.max_memory is not None:
            used = entry.session.memory_bytes()
            if used > self.max_memory:
                log.info(
                    "pool: browser %s uses %.0f MiB > max_memory_mb=%.0f",
                    entry.sid,
                    used / 2**20,
                    self.max_memory / 2**20,
                )
                return "memory"
        problem = self._bounded(entry, _reset)
        if problem is not None:
            log.warning("pool: browser %s failed its reset after a job: %s", entry.sid, problem)
            return "unhealthy"
        return None

    # -- checks ------------------------------------------------------------
    def check(self, entry: _Entry) -> str | None:
        """Why this browser must not be handed out, or None.

        Cheap process checks first (chromedriver gone, a process stopped),
        then one WebDriver round trip bounded by ``check_timeout``.
        """
        if entry.session.report is not None:
            return "its session is closed"
        view = entry.session.view()
        procs = view.discover()
        leader = view.leader
        if leader is not None and not leader.is_running():
            return f"chromedriver (pid {leader.pid}) is gone"
        for p in procs:
            try:
                if psutil.Process(p.pid).status() == psutil.STATUS_STOPPED and p.is_running():
                    return f"browser frozen (pid {p.pid} {p.name} is stopped)"
            except psutil.Error:
                continue
        return self._bounded(entry, _probe)

    def _bounded(self, entry: _Entry, fn: Callable[[WebDriver], str | None]) -> str | None:
        """Run ``fn(driver)`` in a helper thread for at most ``check_timeout``:
        a hung browser makes a WebDriver call wait for minutes."""
        call = call_with_deadline(
            lambda: fn(entry.driver), self.check_timeout, f"embassy-pool-check-{entry.sid}"
        )
        if not call.done:  # it ends when the retirement kills the browser
            return f"the browser did not answer within {self.check_timeout} s"
        if call.error is not None:
            return first_line(call.error)
        return call.value

    # -- retiring ------------------------------------------------------------
    def retire(self, entry: _Entry, why: str) -> None:
        """Tear one browser down (it is already off the books)."""
        entry.end_lease((LeaseExpiredError, f"the pool retired this browser ({why})"))
        try:
            self._teardown(entry, why)
        finally:
            with self.cond:
                self.retiring -= 1
                self.cond.notify_all()

    def _teardown(self, entry: _Entry, why: str) -> CleanupReport | None:
        if entry.host is not None:
            entry.host.close()  # the lanes' chromedrivers; the session's teardown ends any left
        try:
            report = entry.session.close()
        except CleanupIncomplete as err:
            report = err.report
        except Exception as err:  # never let one browser stop the pool
            log.error("pool: tearing down browser %s (%s) failed: %r", entry.sid, why, err)
            with self.cond:
                self.counts["errors"] += 1
            return None
        if not report.ok:
            with self.cond:
                self.counts["errors"] += 1
            log.warning("pool: browser %s (%s) left leftovers: %s", entry.sid, why, report.leftovers)
        else:
            log.info("pool: retired browser %s (%s) in %.0f ms", entry.sid, why, report.duration_s * 1000)
        return report

    def reap_idle(self) -> float | None:
        """Retire browsers idle past ``idle_timeout``; return seconds until the
        next one would expire (None: no idle browser)."""
        assert self.idle_timeout is not None
        expired: list[_Entry] = []
        with self.cond:
            now = time.monotonic()
            # Re-checked under the lock: a browser checked out a moment ago is
            # no longer in self.idle, so it cannot be reaped here.
            for entry in list(self.idle):
                if now - entry.last_used >= self.idle_timeout:
                    self.idle.remove(entry)
                    expired.append(entry)
            self.counts["reaped_idle"] += len(expired)
            self.retiring += len(expired)
            if expired:
                self.cond.notify_all()
            nxt = min((e.last_used + self.idle_timeout - now for e in self.idle), default=None)
        for entry in expired:
            self.retire(entry, f"idle for more than {self.idle_timeout} s")
        return nxt

    # -- closing ------------------------------------------------------------
    def close(self, wait_for_starting: float) -> list[CleanupReport]:
        if os.getpid() != self.owner_pid:
            return []  # a forked child's copy: the browsers are its parent's
        with self.cond:
            if self.closed:
                return list(self.close_reports)
            self.closed = True
            entries = list(self.idle) + list(self.busy)
            self.idle.clear()
            self.busy.clear()
            for entry in entries:
                entry.end_lease(_CLOSED)
            self.cond.notify_all()
        reports: list[CleanupReport | None] = [None] * len(entries)

        def down(i: int, entry: _Entry) -> None:
            reports[i] = self._teardown(entry, "the pool closed")

        workers = [
            threading.Thread(target=down, args=(i, e), name=f"embassy-pool-close-{e.sid}")
            for i, e in enumerate(entries)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with self.cond:  # browsers starting or retiring are torn down by other threads
            if not self.cond.wait_for(lambda: self.creating == 0 and self.retiring == 0, wait_for_starting):
                log.warning(
                    "pool: close() returns with %d browser(s) still starting and %d being retired",
                    self.creating,
                    self.retiring,
                )
            self.close_reports = [r for r in reports if r is not None]
        reaper = self.reaper
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=wait_for_starting)
        return list(self.close_reports)


def _probe(driver: WebDriver) -> str | None:
    if not driver.window_handles:
        return "its window is gone"
    driver.execute_script("return 1")
    return None


def _reset(driver: WebDriver) -> str | None:
    """Leave the browser as a fresh one would be: one window on about:blank,
    no cookies, no cache.  (Storage of the origins a job visited, such as
    localStorage, survives: use ``max_uses=1`` when jobs must not share it.)"""
    handles = driver.window_handles
    if not handles:
        return "its window is gone"
    for handle in handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(handles[0])
    driver.get("about:blank")
    cdp = getattr(driver, "execute_cdp_cmd", None)
    if cdp is None:  # a remote driver: only the current origin's cookies can go
        driver.delete_all_cookies()
        return None
    cdp("Network.clearBrowserCookies", {})
    cdp("Network.clearBrowserCache", {})
    return None


def _reaper_loop(core: _PoolCore) -> None:
    while True:
        with core.cond:
            if core.closed:
                return
        try:
            nxt = core.reap_idle()
        except Exception as err:  # keep reaping; a bug here must not leak browsers forever
            log.error("pool: idle reaper: %r", err)
            nxt = core.idle_timeout
        with core.cond:
            if core.closed:
                return
            # Woken by notify_all whenever a browser goes idle or the pool closes.
            core.cond.wait(timeout=None if nxt is None else max(nxt, 0.01))


def _finalize_pool(core: _PoolCore) -> None:
    if not core.closed and os.getpid() == core.owner_pid:
        try:
            warnings.warn(
                "ChromePool was not closed; closing it now "
                "(use 'with ChromePool(...) as pool:' or call pool.close())",
                ResourceWarning,
                stacklevel=2,
            )
        finally:
            core.close(wait_for_starting=60)


class Checkout:
    """What :meth:`ChromePool.session` returns: a checkout usable with
    ``with`` and with ``async with``."""

    def __init__(self, cm: contextlib.AbstractContextManager[WebDriver]) -> None:
        self._cm = cm

    def __enter__(self) -> WebDriver:
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        return self._cm.__exit__(*exc)

    async def __aenter__(self) -> WebDriver:
        try:
            return await run_off_loop(self._cm.__enter__)
        except asyncio.CancelledError:  # checked out meanwhile: give it back, then re-raise
            await run_off_loop(lambda: self._cm.__exit__(None, None, None))
            raise

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await run_off_loop(lambda: self._cm.__exit__(*exc))


class ChromePool:
    """A pool of Chrome sessions for long-running services.

    ::

        with ChromePool(max_size=3, idle_timeout=60, max_uses=50) as pool:
            with pool.session() as driver:   # a selenium WebDriver
                driver.get(url)

    Every browser is a :class:`ChromeUltraAggressiveCleanup` session started
    with ``session_options`` (the same keyword arguments), and goes through
    its staged teardown when retired.  See ``docs/pool.md``.

    Args:
        max_size: most browsers alive at once (in use, idle or starting).
        idle_timeout: seconds a browser may sit idle before the reaper
            retires it (None: never).
        max_uses: jobs per browser before it is replaced (None: no limit).
        max_memory_mb: retire a browser whose process tree (PSS) exceeds this
            after a job (None: no limit).
        on_full: at ``max_size`` with every browser in use (or starting):
            ``"wait"`` up to ``wait_timeout`` seconds, or ``"reject"`` at once;
            ``"evict"`` waits as ``"wait"`` does.  In every mode, an idle
            browser of another kind (other options) is retired to make room
            first, least recently used first: a pool never waits for its idle
            reaper.
        wait_timeout: default seconds ``session()`` waits for a browser.
        check_timeout: seconds the health check and the reset may take
            before a browser counts as hung.
        isolation: ``"browser"`` (a browser serves one job at a time, reset
            between jobs) or ``"context"`` (each job gets a fresh BiDi user
            context on a shared browser, removed and verified on return; see
            docs/pool.md, "Isolation: a browser context per job").
        contexts_per_browser: with ``isolation="context"``, how many jobs
            one browser serves at once.
        **session_options: passed to each ``ChromeUltraAggressiveCleanup``.
    """

    def __init__(
        self,
        *,
        max_size: int = 4,
        idle_timeout: float | None = 300.0,
        max_uses: int | None = 100,
        max_memory_mb: float | None = None,
        on_full: OnFull = "wait",
        wait_timeout: float = 60.0,
        check_timeout: float = 5.0,
        isolation: Isolation = "browser",
        contexts_per_browser: int = 4,
        **session_options: Any,
    ) -> None:
        _number("max_size", max_size, minimum=1, integer=True)
        _number("idle_timeout", idle_timeout, minimum=0.01, allow_none=True)
        _number("max_uses", max_uses, minimum=1, integer=True, allow_none=True)
        _number("max_memory_mb", max_memory_mb, minimum=1e-3, allow_none=True)
        _number("wait_timeout", wait_timeout, minimum=0)
        _number("check_timeout", check_timeout, minimum=0.01)
        _number("contexts_per_browser", contexts_per_browser, minimum=1, integer=True)
        if isolation not in ISOLATION:
            raise ConfigError(
                f"isolation must be one of {', '.join(map(repr, ISOLATION))}, got {isolation!r}",
                option="isolation",
                value=isolation,
            )
        if isolation == "context" and session_options.get("remote_url") is not None:
            raise ConfigError(
                "isolation='context' needs a local browser (its contexts are driven through "
                "chromedrivers attached here); remote_url= pools use isolation='browser'",
                option="isolation",
                value=isolation,
            )
        if on_full not in ON_FULL:
            raise ConfigError(
                f"on_full must be one of {', '.join(map(repr, ON_FULL))}, got {on_full!r}",
                option="on_full",
                value=on_full,
            )
        _check_session_kwargs(session_options)
        validate(**session_options)  # a bad session option fails now, not at the first job
        self._core = _PoolCore(
            max_size=max_size,
            idle_timeout=idle_timeout,
            max_uses=max_uses,
            max_memory_mb=max_memory_mb,
            on_full=on_full,
            wait_timeout=float(wait_timeout),
            check_timeout=float(check_timeout),
            session_kwargs=dict(session_options),
            new_session=_context_session if isolation == "context" else _browser_session,
            isolation=isolation,
            per_browser=contexts_per_browser,
        )
        self._finalizer = weakref.finalize(self, _finalize_pool, self._core)
        if idle_timeout is not None:
            self._core.reaper = threading.Thread(
                target=_reaper_loop, args=(self._core,), name="embassy-pool-reaper", daemon=True
            )
            self._core.reaper.start()

    def session(self, *, timeout: float | None = None, **overrides: Any) -> Checkout:
        """Check a browser out for one job; it goes back when the block ends.

        ``with pool.session() as driver``, or ``async with`` in asyncio code
        (the checkout and the return then run off the event loop).
        ``overrides`` are session options for this job (``extra_args``,
        ``preset`` ...); browsers are reused only for jobs with the same
        options.  ``timeout`` overrides ``wait_timeout``.  Raises
        :class:`PoolFullError` (``on_full="reject"``),
        :class:`PoolTimeoutError`, :class:`PoolClosedError`, or the
        session's own errors when a browser fails to start.
        """
        return Checkout(self._checkout(timeout, overrides))

    @contextlib.contextmanager
    def _checkout(self, timeout: float | None, overrides: dict[str, Any]) -> Iterator[WebDriver]:
        core = self._core
        core.check_owner()
        if timeout is not None:
            _number("timeout", timeout, minimum=0)
        _check_session_kwargs(overrides)
        kwargs = {**core.session_kwargs, **overrides}
        key = _option_key(validate(**kwargs))
        entry = core.acquire(key, kwargs, core.wait_timeout if timeout is None else float(timeout))
        if core.isolation == "context":
            lease = core.lend_context(entry)
            try:
                yield lease.view
            finally:
                try:
                    core.release_context(entry, lease)
                except Exception as err:  # never mask the job's own exception
                    log.error("pool: returning a context of browser %s failed: %r", entry.sid, err)
            return
        lease = entry.lend()
        try:
            yield lease.view
        finally:
            try:
                core.release(entry, lease)
            except Exception as err:  # never mask the job's own exception
                log.error("pool: returning browser %s failed: %r", entry.sid, err)

    def stats(self) -> PoolStats:
        """The pool's counters now."""
        return self._core.stats()

    @property
    def closed(self) -> bool:
        return self._core.closed

    # -- internal, read-only: for tests and tools, never for tearing down ----------
    def session_of(self, driver: Any) -> ChromeUltraAggressiveCleanup | None:
        """Internal: the session behind a driver that :meth:`session` handed
        out and that is still checked out (None otherwise)."""
        with self._core.cond:
            return next(
                (
                    e.session
                    for e in self._core.busy
                    for lease in [e.lease, *e.leases]
                    if lease is not None and lease.view is driver
                ),
                None,
            )

    def sessions_in_use(self) -> list[ChromeUltraAggressiveCleanup]:
        """Internal: the sessions of the browsers checked out now."""
        with self._core.cond:
            return [e.session for e in self._core.busy]

    def idle_sessions(self) -> list[ChromeUltraAggressiveCleanup]:
        """Internal: the sessions of the idle browsers, least recently used first."""
        with self._core.cond:
            return [e.session for e in self._core.idle]

    def context_reports(self) -> list[CleanupReport]:
        """Internal: the reports of the last 100 contexts removed (context mode)."""
        with self._core.cond:
            return list(self._core.context_reports)

    def reaper_thread(self) -> threading.Thread | None:
        """Internal: the idle reaper's thread (None without ``idle_timeout``)."""
        return self._core.reaper

    def close(self) -> list[CleanupReport]:
        """Tear down every browser, in use or idle (idempotent); return their
        reports.  Holders of a checked-out driver get
        :class:`PoolClosedError` at their next command."""
        reports = self._core.close(wait_for_starting=60)
        self._finalizer.detach()
        return reports

    def __enter__(self) -> ChromePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats()
        state = "closed" if s.closed else f"{s.in_use} in use, {s.idle} idle, max {s.max_size}"
        return f"<ChromePool {state}>"


#: Chrome 156 builds three WebUI "omnibox popup" pages, each in its own
#: renderer, for every new user context, even headless where no omnibox is
#: shown: measured, they double a context's creation time and add a renderer.
CONTEXT_FLAGS = ("--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup",)


def _browser_session(kwargs: dict[str, Any]) -> ChromeUltraAggressiveCleanup:
    return ChromeUltraAggressiveCleanup(**kwargs)


def _context_session(kwargs: dict[str, Any]) -> ChromeUltraAggressiveCleanup:
    """A browser for contexts: the job's flags plus :data:`CONTEXT_FLAGS`
    (``--disable-features`` lists are merged, never replaced)."""
    return ChromeUltraAggressiveCleanup(
        **{**kwargs, "extra_args": [*CONTEXT_FLAGS, *kwargs.get("extra_args", ())]}
    )


def _check_session_kwargs(kwargs: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(SessionOptions)}
    for name in kwargs:
        if name not in known:
            raise TypeError(
                f"ChromePool got an unexpected option {name!r}; pool options are max_size, idle_timeout, "
                "max_uses, max_memory_mb, on_full, wait_timeout, check_timeout, and session options "
                f"are {', '.join(sorted(known))}"
            )


__all__ = ["ChromePool", "PoolStats"]
