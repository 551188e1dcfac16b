"""``ChromeUltraAggressiveCleanup``: the context manager, built from the layers.

A session is one of two kinds, each a ``_lifecycle.Kind``: local (chromedriver
and Chrome on this machine, started by ``_launcher``) or remote (a Selenium
Grid session, ``_remote``).  The lifecycle rules (teardown once, in the owner
only; a failed start torn down before the error propagates; the user's
exception never masked; a dropped session warned about and still torn down)
are ``_lifecycle``'s, shared with adopted drivers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import psutil

from . import _launcher, _platform
from ._errors import EmbassyCleanupError, LaunchError
from ._lifecycle import Lifecycle, SessionHandle, run_off_loop
from ._options import DEFAULT_START_TIMEOUT, SessionOptions, validate
from ._ownership import OwnedProcess, ProcessTracker
from ._presets import DEFAULT_PRESET, PresetName
from ._records import OwnerLock, write_record
from ._remote import RemoteKind
from ._report import CleanupReport
from ._sweep import sweep_stale
from ._teardown import LOCAL_PLAN, Plan, TeardownTarget
from ._watchdog import watchdog_pid
from ._webdriver import CommandGuard, release_driver

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.chrome.options import Options as ChromeOptions
    from selenium.webdriver.chrome.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")
_warned_init = False


class LocalKind:
    """A session whose chromedriver and Chrome run here (``_lifecycle.Kind``)."""

    kind: ClassVar[str] = "local"

    def __init__(self, session_id: str, opts: SessionOptions) -> None:
        self.session_id = session_id
        self.opts = opts
        self.target: TeardownTarget | None = None
        self.lock: OwnerLock | None = None
        #: What the launcher asks to run after the teardown (``.session_closed(kind)``:
        #: the virtual display's socket file).
        self.hooks: list[Any] = []
        self.paths: _launcher.SessionPaths | None = None

    def plan(self) -> tuple[TeardownTarget, Plan] | None:
        return (self.target, LOCAL_PLAN) if self.target is not None else None

    def watchdog_record(self) -> dict[str, Any] | None:
        return {"root": self.target.root} if self.target is not None else None

    def release(self) -> None:
        if self.target is not None:
            release_driver(self.target.driver)
            self.target.driver = None  # drop the WebDriver: nothing more to say to it
        if self.lock is not None:
            self.lock.release()
        for hook in self.hooks:
            hook.session_closed(self)

    def forget_in_child(self) -> None:
        # Closing the child's copy leaves the parent's lock in place (flock
        # holds until the last copy closes): a sweep sees the session as live.
        if self.lock is not None:
            self.lock.forget()

    def write_record(self) -> None:
        """(Re)write the session's record with what it knows now."""
        target = self.target
        assert target is not None and target.root is not None
        owner = psutil.Process()
        write_record(
            target.root,
            {
                "session_id": self.session_id,
                "owner_pid": owner.pid,
                "owner_create_time": owner.create_time(),
                "root": target.root,
                "pids": [[p.pid, p.create_time, p.name] for p in target.tracker.processes()],
                "ports": sorted(target.ports),
                "created": target.tracker.born_after,
            },
        )


@dataclass(frozen=True)
class SessionView:
    """A read-only look at an open session's processes (for the pool and the
    stress runner; never for tearing down)."""

    _tracker: ProcessTracker | None

    @property
    def leader(self) -> OwnedProcess | None:
        """chromedriver, as the session started it (None: remote or not started)."""
        return self._tracker.leader if self._tracker is not None else None

    def recorded(self) -> tuple[OwnedProcess, ...]:
        return self._tracker.processes() if self._tracker is not None else ()

    def discover(self) -> tuple[OwnedProcess, ...]:
        """Every process of the session right now (one scan)."""
        return tuple(self._tracker.discover().values()) if self._tracker is not None else ()


def _process_memory(p: OwnedProcess) -> int:
    try:
        proc = psutil.Process(p.pid)
        if _platform.identity(p.pid, p.create_time) is not _platform.Identity.MATCH:
            return 0  # the PID was reused: not ours
        try:
            full = proc.memory_full_info()
            pss = getattr(full, "pss", None)
            return int(pss if pss is not None else full.uss)
        except psutil.AccessDenied:
            return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0


class ChromeUltraAggressiveCleanup(SessionHandle):
    """Start Chrome under Selenium, and leave nothing behind.

    ::

        cleanup = ChromeUltraAggressiveCleanup(headless=True, cleanup_timeout=10)
        with cleanup as driver:          # a selenium WebDriver
            driver.get(url)
        print(cleanup.report.ok, cleanup.report.to_dict())

    On exit it runs six staged teardowns (quit, tree-kill, ports, os-kill,
    profile, verify), each scoped to what this session started; ``report``
    says what was killed, removed and verified.

    Args:
        headless: run Chrome headless (``--headless=new``).
        cleanup_timeout: the whole teardown budget in seconds (> 0).
        preset: footprint preset, ``"balanced"``, ``"minimal"``, ``"stock"``, or
            ``"headless-shell"`` (the minimal flags on Chromium's headless
            shell, about half the memory; falls back to ``"minimal"`` with a
            warning when it is not installed); see ``docs/usage.md``.
        extra_args: more Chrome flags, appended after the preset's.
        options: a ``ChromeOptions`` to start from: every capability and
            Chrome option set on it reaches the session (flags the session
            owns, ``--user-data-dir`` and ``--remote-debugging-*``, and page
            URLs are refused with :class:`ConfigError`).
        binary: the Chrome binary (default: ``$CHROME_BINARY``, then
            ``chromium``/``google-chrome`` on PATH).
        driver_path: chromedriver (default: ``$CHROMEDRIVER_PATH``, PATH,
            Selenium Manager, webdriver-manager).
        temp_root: where the session dir goes (default: the system temp dir).
        graceful: try ``driver.quit()`` first (default); False skips straight
            to the kill stages (faster; the profile is disposable anyway).
        raise_on_leak: raise :class:`CleanupIncomplete` (carrying the report)
            when verification finds leftovers.
        env: extra environment variables for chromedriver and Chrome.
        watchdog: tear the session down even if this process dies (SIGKILL,
            OOM): see ``docs/crash-safety.md``.
        remote_url: a Selenium Grid 4 (``http://host:4444``): the session is a
            ``webdriver.Remote`` on it, deleted from the Grid at teardown and
            when this process dies (see ``docs/grid.md``).  ``binary`` is then
            a path on the node; ``driver_path`` and ``env`` do not apply.
        start_timeout: the bound on the whole start in seconds (default 30):
            chromedriver listening, the browser opening DevTools, the headless
            shell's attach, a Grid's new session.  When it passes,
            :class:`LaunchError` names what was not ready, after tearing down
            what had started.
        virtual_display: run headed Chrome (``headless=False``) in an Xvfb the
            session starts on a free display and tears down with the rest
            (needs the Debian package ``xvfb``).
    """

    _what = "embassy_cleanup session"
    _fix = "use 'with ChromeUltraAggressiveCleanup(...) as driver:' or call close()"

    def __init__(
        self,
        *,
        headless: bool = True,
        cleanup_timeout: float = 10.0,
        preset: PresetName = DEFAULT_PRESET,
        extra_args: Sequence[str] = (),
        options: ChromeOptions | None = None,
        binary: str | os.PathLike[str] | None = None,
        driver_path: str | os.PathLike[str] | None = None,
        temp_root: str | os.PathLike[str] | None = None,
        graceful: bool = True,
        raise_on_leak: bool = False,
        env: Mapping[str, str] | None = None,
        watchdog: bool = True,
        remote_url: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        virtual_display: bool = False,
    ) -> None:
        self.options = validate(
            headless=headless,
            cleanup_timeout=cleanup_timeout,
            preset=preset,
            extra_args=extra_args,
            options=options,
            binary=binary,
            driver_path=driver_path,
            temp_root=temp_root,
            graceful=graceful,
            raise_on_leak=raise_on_leak,
            env=env,
            watchdog=watchdog,
            remote_url=remote_url,
            start_timeout=start_timeout,
            virtual_display=virtual_display,
        )
        self.session_id = secrets.token_hex(6)
        self.raise_on_leak = self.options.raise_on_leak
        self.driver: WebDriver | None = None
        self._kind: LocalKind | RemoteKind = (
            RemoteKind(self.session_id, self.options)
            if self.options.remote_url is not None
            else LocalKind(self.session_id, self.options)
        )
        self._lifecycle = Lifecycle(
            self.session_id, self._kind, self.options.cleanup_timeout, self.options.watchdog
        )
        self._entered = False
        #: The preset in effect once started: ``"minimal"`` when
        #: ``"headless-shell"`` fell back because no headless shell is installed
        #: (``preset_fallback_reason`` then says why; a WARNING is logged too).
        self.preset_used: str | None = None
        self.preset_fallback_reason: str | None = None

    # -- public state ----------------------------------------------------
    @property
    def root(self) -> str | None:
        """The session dir (profile, temp, config), while it exists."""
        t = self._kind.target
        return t.root if t is not None and self.report is None else None

    @property
    def pids(self) -> dict[int, str]:
        """PID -> name of every process recorded for this session (also after teardown)."""
        t = self._kind.target
        return {p.pid: p.name for p in t.tracker.processes()} if t is not None else {}

    @property
    def ports(self) -> set[int]:
        t = self._kind.target
        return set(t.ports) if t is not None else set()

    def pending_commands(self) -> int:
        """WebDriver commands of this session's driver that are still waiting
        for an answer (0 before start and after teardown)."""
        t = self._kind.target
        return t.commands.pending() if t is not None and t.commands is not None else 0

    def view(self) -> SessionView:
        """A read-only look at the session's processes (internal: pool, stress)."""
        t = self._kind.target
        return SessionView(t.tracker if t is not None and self.report is None else None)

    @property
    def devtools_port(self) -> int | None:
        """Internal: the browser's DevTools port (None: remote, or not started)."""
        t = self._kind.target
        return t.devtools_port if t is not None and self.report is None else None

    def attach_driver(self, bidi: bool = True) -> WebDriver:
        """Internal (pool contexts): another chromedriver and WebDriver session
        attached to this session's running browser.  Its chromedriver is this
        session's process like any other (recorded, marked, its port among the
        session's): the teardown and the watchdog end it with the browser."""
        kind, t = self._kind, self._kind.target
        if not isinstance(kind, LocalKind) or t is None or kind.paths is None or self.report is not None:
            raise RuntimeError(f"session {self.session_id} has no local browser running to attach to")
        if t.devtools_port is None:
            raise RuntimeError(f"session {self.session_id}: the browser's DevTools port is unknown")
        driver_path, _src = _launcher.resolve_driver(self.options.driver_path)
        driver = _launcher.attach_driver(
            self.options,
            self.session_id,
            kind.paths,
            driver_path,
            t.devtools_port,
            t.tracker.adopt_child,
            bidi,
        )
        t.ports.add(driver.service.port)
        kind.write_record()
        return driver

    def memory_bytes(self) -> int:
        """The memory of this session's process tree right now, in bytes.

        Each process counts its PSS (its share of pages it shares with
        others), or its USS where PSS is unreadable, or its RSS as a last
        resort; 0 before the session started or after it closed.
        """
        return sum(_process_memory(p) for p in self.view().discover())

    # -- lifecycle -------------------------------------------------------
    def start(self) -> WebDriver:
        """Start Chrome; same as entering the ``with`` block."""
        if self._entered:
            raise RuntimeError(
                "this ChromeUltraAggressiveCleanup was already started; create a new one for each session"
            )
        self._entered = True
        t0 = time.monotonic()
        kind = self._kind
        try:
            if isinstance(kind, RemoteKind):
                driver: Any = kind.start(self._arm_finalizer)
                self._lifecycle.register()
                what = f"remote session {driver.session_id} on {self.options.remote_url}"
            else:
                driver, what = self._start_local(kind, t0)
        except BaseException as err:
            self._undo_start(err)
            raise
        self.driver = driver
        log.info("session %s started in %.0f ms: %s", self.session_id, (time.monotonic() - t0) * 1000, what)
        return driver  # type: ignore[no-any-return]

    def _start_local(self, kind: LocalKind, t0: float) -> tuple[WebDriver, str]:
        opts = self.options
        # Resolve first: a bad driver or binary path fails before anything exists.
        binary = _launcher.resolve_binary(
            opts.binary, opts.options.binary_location if opts.options is not None else None
        )
        driver_path, driver_src = _launcher.resolve_driver(opts.driver_path, binary)  # binary: for wdm
        born_after = time.time()  # nothing older than this can carry our markers
        paths = _launcher.make_session_root(opts.temp_root, self.session_id)
        kind.paths = paths
        tracker = ProcessTracker(self.session_id, paths.root, born_after=born_after)
        target = TeardownTarget(self.session_id, tracker, paths.root, graceful=opts.graceful)
        kind.target = target
        self._arm_finalizer()
        self._crash_safety(kind)
        launched = _launcher.start_session(
            opts,
            self.session_id,
            paths,
            driver_path,
            binary,
            tracker.adopt_leader,
            tracker.adopt_child,
            started_at=t0,
            add_hook=kind.hooks.append,
        )
        driver, service = launched.driver, launched.service
        self.preset_used, self.preset_fallback_reason = launched.preset, launched.fallback_reason
        target.driver = driver
        target.commands = CommandGuard(driver, self.session_id)
        target.ports.add(service.port)
        target.devtools_port = launched.devtools_port
        if target.devtools_port:
            target.ports.add(target.devtools_port)
        procs = tracker.discover()
        kind.write_record()
        what = f"chromedriver {driver_path} ({driver_src}), {len(procs)} process(es), dir {paths.root}"
        return driver, what

    def _crash_safety(self, kind: LocalKind) -> None:
        """The owner lock and record, the live registry and the watchdog, then
        the stale sweep of the same temp dir."""
        global _warned_init
        if _platform.running_as_init() and not _warned_init:
            _warned_init = True
            log.warning(
                "running as PID 1 with no init: orphaned processes re-parent to this process and "
                "nobody else reaps them; embassy_cleanup reaps its own, but run the container "
                "with --init (or tini) so everything else is reaped too"
            )
        target = kind.target
        assert target is not None and target.root is not None
        kind.lock = OwnerLock(target.root)
        kind.write_record()
        pid = self._lifecycle.register()
        if pid is not None:
            target.tracker.exclude(pid)
        try:
            exclude = {pid} if (pid := watchdog_pid()) is not None else set()
            swept = sweep_stale(self.options.temp_root, exclude=exclude)
        except Exception as err:  # a sweep problem must not stop a session from starting
            log.warning("stale sweep failed: %s", err)
        else:
            if swept:
                log.info("swept %d stale session(s) left by dead owners", len(swept))

    def _undo_start(self, err: BaseException) -> None:
        """A start that failed after creating anything tears it down before the
        error propagates; a LaunchError carries that teardown's report."""
        report = self._lifecycle.teardown()
        if isinstance(err, LaunchError) and report is not None:
            err.report = err.details["report"] = report

    def _after_close(self) -> None:
        self.driver = None

    def close(self) -> CleanupReport:
        """Tear the session down (once) and return the report.

        Raises CleanupIncomplete when ``raise_on_leak`` is set and
        verification found leftovers.
        """
        return super().close()

    def __enter__(self) -> WebDriver:
        return self.start()

    async def __aenter__(self) -> WebDriver:
        """``async with ChromeUltraAggressiveCleanup(...) as driver``: the start
        runs in a worker thread, off the event loop.  A task cancelled while
        the browser starts waits for the start, tears it down, then raises
        ``CancelledError``.  The driver's own calls block: run them with
        ``asyncio.to_thread`` in async code."""
        try:
            return await run_off_loop(self.start)
        except asyncio.CancelledError:
            await run_off_loop(self._close)
            raise

    def __repr__(self) -> str:
        state = "closed" if self.report is not None else ("open" if self._entered else "new")
        return f"<ChromeUltraAggressiveCleanup session={self.session_id} {state}>"


__all__ = ["ChromeUltraAggressiveCleanup", "EmbassyCleanupError", "SessionView"]
