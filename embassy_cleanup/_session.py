"""``ChromeUltraAggressiveCleanup``: the context manager, built from the layers.

Lifecycle rules (after CPython's ``Popen.__exit__`` and playwright's sync
context manager):

* ``__enter__`` that fails after starting anything tears it down before the
  error propagates;
* teardown runs once: ``__exit__``, ``close()``, a signal handler or the
  finalizer may all call it; later calls return the same report, a call
  re-entered from a signal handler while teardown runs returns at once;
* an exception raised inside the ``with`` block propagates unchanged; a
  teardown problem never masks it, and ``CleanupIncomplete`` is raised only
  when no other exception is on its way out;
* a session that is garbage-collected (or still open at interpreter exit)
  without being closed warns with ``ResourceWarning`` and is still torn down.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import psutil

from . import _launcher, _watchdog
from ._deadline import DEFAULT_START_TIMEOUT
from ._errors import CleanupIncomplete, EmbassyCleanupError, LaunchError
from ._options import SessionOptions, validate
from ._ownership import ProcessTracker
from ._presets import DEFAULT_PRESET
from ._report import CleanupReport, Leftover, Stage, StageResult
from ._teardown import TeardownOnce, TeardownTarget, run_teardown

if TYPE_CHECKING:  # pragma: no cover
    import os

    from selenium.webdriver.chrome.options import Options as ChromeOptions
    from selenium.webdriver.chrome.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")


class _SessionState(TeardownOnce):
    """What teardown needs, held apart from the public object so that the
    finalizer can run it without keeping the session alive."""

    def __init__(self, session_id: str, opts: SessionOptions) -> None:
        super().__init__()
        self.session_id = session_id
        self.opts = opts
        self.target: TeardownTarget | None = None

    def _run(self) -> CleanupReport:
        target = self.target
        if target is None:  # never started: nothing is ours, so touch nothing
            return CleanupReport(
                self.session_id,
                tuple(StageResult(st, 0.0, skipped_reason="the session never started") for st in Stage),
                (),
                0.0,
                passes=0,
            )
        if self.opts.remote_url is not None:  # a Grid session: see _remote
            from ._remote import run_remote_teardown

            return run_remote_teardown(target, self.opts.cleanup_timeout)  # type: ignore[arg-type]
        return run_teardown(target, self.opts.cleanup_timeout)

    def _finish(self, report: CleanupReport) -> CleanupReport:
        if self.target is not None:
            _release_driver(self.target.driver)
            self.target.driver = None  # drop the WebDriver: nothing more to say to it
        return report


def _release_driver(driver: Any) -> None:
    """Close what the WebDriver still holds once its processes are dead: the
    HTTP connection to chromedriver and chromedriver's pipes.  ``quit()`` does
    this itself; when it was skipped (graceful=False, a frozen browser) they
    would stay open until garbage collection, and a long-running owner's fds
    would grow with every session."""
    if driver is None:
        return
    try:
        driver.command_executor.close()
    except Exception as err:  # best effort: the processes are already gone
        log.debug("closing the WebDriver connection: %s", err)
    proc = getattr(getattr(driver, "service", None), "process", None)
    for stream in (
        getattr(proc, "stdin", None),
        getattr(proc, "stdout", None),
        getattr(proc, "stderr", None),
    ):
        if stream is not None:
            try:
                stream.close()
            except Exception as err:
                log.debug("closing a chromedriver pipe: %s", err)


def _process_memory(pid: int, create_time: float) -> int:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.01:
            return 0  # the PID was reused: not ours
        try:
            full = proc.memory_full_info()
            pss = getattr(full, "pss", None)
            return int(pss if pss is not None else full.uss)
        except psutil.AccessDenied:
            return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0


def _finalize(state: _SessionState) -> None:
    if state.target is not None:  # never started: nothing to tear down, nothing to warn about
        state.finalize_unclosed(
            f"embassy_cleanup session {state.session_id}",
            "use 'with ChromeUltraAggressiveCleanup(...) as driver:' or call close()",
        )


class ChromeUltraAggressiveCleanup:
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

    def __init__(
        self,
        *,
        headless: bool = True,
        cleanup_timeout: float = 10.0,
        preset: str = DEFAULT_PRESET,
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
        self.driver: WebDriver | None = None
        self._state = _SessionState(self.session_id, self.options)
        self._entered = False
        self._finalizer: weakref.finalize | None = None
        #: The preset in effect once started: ``"minimal"`` when
        #: ``"headless-shell"`` fell back because no headless shell is installed
        #: (``preset_fallback_reason`` then says why; a WARNING is logged too).
        self.preset_used: str | None = None
        self.preset_fallback_reason: str | None = None

    # -- public state ----------------------------------------------------
    @property
    def report(self) -> CleanupReport | None:
        """The cleanup report, once teardown has run."""
        return self._state.report

    @property
    def root(self) -> str | None:
        """The session dir (profile, temp, config), while it exists."""
        t = self._state.target
        return t.root if t is not None else None

    @property
    def pids(self) -> dict[int, str]:
        """PID -> name of every process recorded for this session so far."""
        t = self._state.target
        return {p.pid: p.name for p in t.tracker.recorded.values()} if t is not None else {}

    @property
    def ports(self) -> set[int]:
        t = self._state.target
        return set(t.ports) if t is not None else set()

    def memory_bytes(self) -> int:
        """The memory of this session's process tree right now, in bytes.

        Each process counts its PSS (its share of pages it shares with
        others), or its USS where PSS is unreadable, or its RSS as a last
        resort; 0 before the session started or after it closed.
        """
        t = self._state.target
        if t is None or self.report is not None:
            return 0
        total = 0
        for p in t.tracker.discover().values():
            total += _process_memory(p.pid, p.create_time)
        return total

    # -- lifecycle -------------------------------------------------------
    def start(self) -> WebDriver:
        """Start Chrome; same as entering the ``with`` block."""
        if self._entered:
            raise RuntimeError(
                "this ChromeUltraAggressiveCleanup was already started; create a new one for each session"
            )
        self._entered = True
        opts = self.options
        t0 = time.monotonic()
        if opts.remote_url is not None:
            return self._start_remote(t0)
        # Resolve first: a bad driver or binary path fails before anything exists.
        binary = _launcher.resolve_binary(
            opts.binary, opts.options.binary_location if opts.options is not None else None
        )
        driver_path, driver_src = _launcher.resolve_driver(opts.driver_path, binary)  # binary: for wdm
        born_after = time.time()  # nothing older than this can carry our markers
        paths = _launcher.make_session_root(opts.temp_root, self.session_id)
        tracker = ProcessTracker(self.session_id, paths.root, born_after=born_after)
        target = TeardownTarget(self.session_id, tracker, paths.root, graceful=opts.graceful)
        self._state.target = target
        self._finalizer = weakref.finalize(self, _finalize, self._state)
        try:
            self._after_root_created()
            launched = _launcher.start_session(
                opts,
                self.session_id,
                paths,
                driver_path,
                binary,
                tracker.adopt_leader,
                tracker.adopt_child,
                started_at=t0,
                add_hook=self._state.hooks.append,
            )
            driver, service = launched.driver, launched.service
            self.preset_used, self.preset_fallback_reason = launched.preset, launched.fallback_reason
            target.driver = driver
            target.ports.add(service.port)
            target.devtools_port = launched.devtools_port
            if target.devtools_port:
                target.ports.add(target.devtools_port)
            procs = tracker.discover()
            _watchdog.update_record(self._state)
        except BaseException as err:
            self._undo_start(err)
            raise
        self.driver = driver
        log.info(
            "session %s started in %.0f ms: chromedriver %s (%s), %d process(es), dir %s",
            self.session_id,
            (time.monotonic() - t0) * 1000,
            driver_path,
            driver_src,
            len(procs),
            paths.root,
        )
        return driver

    def _start_remote(self, t0: float) -> WebDriver:
        """A session on a Selenium Grid: nothing local but the WebDriver client."""
        from ._remote import start_session

        self._finalizer = weakref.finalize(self, _finalize, self._state)
        try:
            # a selenium Remote WebDriver: the same API as the local Chrome one
            driver: Any = start_session(self._state)
        except BaseException as err:
            self._undo_start(err)
            raise
        self.driver = driver
        log.info(
            "session %s started in %.0f ms: remote session %s on %s",
            self.session_id,
            (time.monotonic() - t0) * 1000,
            driver.session_id,
            self.options.remote_url,
        )
        return driver

    def _undo_start(self, err: BaseException) -> None:
        """A start that failed after creating anything tears it down before the
        error propagates; a LaunchError carries that teardown's report."""
        report = self._state.teardown()
        if isinstance(err, LaunchError) and report is not None:
            err.report = err.details["report"] = report

    def _after_root_created(self) -> None:
        """Crash safety: the owner lock and record, the watchdog, the stale sweep."""
        _watchdog.on_session_started(self._state)

    def close(self) -> CleanupReport:
        """Tear the session down (once) and return the report.

        Raises CleanupIncomplete when ``raise_on_leak`` is set and
        verification found leftovers.
        """
        report = self._close()
        if report.passes == 0 and self.report is None:
            return report  # re-entered mid-teardown: the outer call decides
        if self.options.raise_on_leak and not report.ok:
            raise CleanupIncomplete(
                f"session {self.session_id} left {len(report.leftovers)} leftover(s): "
                + ", ".join(str(lo) for lo in report.leftovers),
                report=report,
            )
        return report

    def _close(self) -> CleanupReport:
        report = self._state.teardown()
        if report is None:  # re-entered from a signal handler mid-teardown
            # Nothing was verified by this call: say so (ok is False).
            return CleanupReport(
                self.session_id,
                (),
                (Leftover("unverified", "teardown is still running in an outer call"),),
                0.0,
                passes=0,
            )
        if self._finalizer is not None:
            self._finalizer.detach()
        self.driver = None
        return report

    def __enter__(self) -> WebDriver:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            try:
                self._close()
            except Exception as err:  # never mask the user's exception
                warnings.warn(f"embassy_cleanup teardown failed: {err!r}", RuntimeWarning, stacklevel=2)
            return
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.report is not None else ("open" if self._entered else "new")
        return f"<ChromeUltraAggressiveCleanup session={self.session_id} {state}>"


__all__ = ["ChromeUltraAggressiveCleanup", "EmbassyCleanupError"]
