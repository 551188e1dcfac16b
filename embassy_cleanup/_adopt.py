"""``adopt(driver)``: our staged teardown for a Chrome WebDriver started elsewhere.

A driver made by plain ``webdriver.Chrome()``, SeleniumBase or
undetected-chromedriver carries none of our markers: no session dir, no
``EMBASSY_CLEANUP_SESSION`` in its environment.  What can still be known,
and is recorded the moment the driver is adopted:

* chromedriver: ``driver.service.process`` (a ``Popen``), with its create
  time, so a PID reused later is never hit;
* the browser: ``capabilities["goog:processID"]``, accepted only when that
  process carries the profile dir on its command line;
* everything descending from those two (the zygotes, GPU, utilities,
  renderers), and every process of this user that carries the profile dir
  on its command line as a whole path (``--user-data-dir=<dir>``);
* the profile dir: ``capabilities["chrome"]["userDataDir"]``, and Chromium's
  singleton dir that the profile's ``SingletonSocket`` link points to;
* the ports: chromedriver's service port and the DevTools port.

From then on the six stages of ``run_teardown`` run as for our own
sessions.  What cannot be known is said in the report instead of guessed:
there is no env marker, and Chrome's two crashpad handlers re-parent to init
and carry nothing of the driver on their command lines, so they are not
tracked (they exit on their own once the browser is gone).

The profile dir is removed only when chromedriver created it (a
``org.chromium.Chromium.scoped_dir.XXXXXX`` dir directly in a temp dir) or
when the caller passes ``remove_profile=True``.  A ``--user-data-dir`` the
user chose is kept by default: it may be their real profile.

Crash safety (``watchdog=True``, the default): the adopted driver is
registered with the owner's watchdog (``_watchdog``) with the identities
recorded at adopt time and the dirs adopt would remove.  If the adopting
process dies (SIGKILL, the OOM killer), the watchdog kills those processes
and their descendants (renderers born since adopt are found then, below the
recorded browser and zygotes) and removes those dirs: :func:`reap_adopted`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import secrets
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

import psutil

from ._errors import CleanupIncomplete, ConfigError
from ._ownership import OwnedProcess, ProcessTracker, root_in_args
from ._report import CleanupReport, Leftover, Stage
from ._session import _release_driver
from ._teardown import (
    TERM_GRACE,
    TeardownInterrupted,
    TeardownOnce,
    TeardownTarget,
    _remove_tree,
    run_teardown,
)

log = logging.getLogger("embassy_cleanup")

#: The temp profile chromedriver creates when no ``--user-data-dir`` is given
#: (``scoped_dir``; older versions and Chrome-branded builds use the dotted
#: ``.org.chromium.Chromium.XXXXXX`` / ``.com.google.Chrome.XXXXXX`` names).
CHROMEDRIVER_PROFILE = re.compile(
    r"^((org\.chromium\.Chromium|com\.google\.Chrome)\.scoped_dir|\.(org\.chromium\.Chromium|com\.google\.Chrome))"
    r"\.\w{6}$"
)
#: Chromium's singleton dir (``SingletonSocket`` and ``SingletonCookie``) in the temp dir.
SINGLETON_DIR = re.compile(r"^\.?(org\.chromium\.Chromium|com\.google\.Chrome)\.\w{6}$")
_SINGLETON_FILES = {"SingletonSocket", "SingletonCookie", "SingletonLock"}
#: ``capabilities`` keys under which Chromium-based drivers name their profile dir.
_VENDOR_KEYS = ("chrome", "msedge")
_CHROMIUM_BROWSERS = {"chrome", "chromium", "chrome-headless-shell", "msedge", "microsoftedge"}

#: What adopted drivers can never offer, said in every adopted report.
NO_ENV_MARKER = "no env marker: found by chromedriver's process tree, the browser PID and --user-data-dir"
CRASHPAD_UNTRACKED = (
    "crashpad handlers are not tracked: they re-parent to init and carry no marker of an adopted "
    "driver (they exit once the browser is gone)"
)


@dataclass(frozen=True)
class AdoptFindings:
    """What ``adopt()`` found about a driver it did not start.

    ``profile_origin`` is ``"chromedriver"`` (a temp profile chromedriver
    created), ``"user"`` (a ``--user-data-dir`` someone chose) or ``None``
    (the capabilities name no profile dir).  ``limits`` lists what could not
    be known or done, with the reason.
    """

    driver_pid: int | None
    browser_pid: int | None
    processes: tuple[tuple[int, str, str], ...]  # (pid, name, via) at adopt time
    profile_dir: str | None
    profile_origin: str | None
    remove_profile: bool
    singleton_dir: str | None
    ports: tuple[int, ...]
    limits: tuple[str, ...]

    def summary(self) -> str:
        """One line for the report: what adoption found."""
        if self.profile_dir is None:
            profile = "no profile dir"
        else:
            origin = (
                "chromedriver's temp profile"
                if self.profile_origin == "chromedriver"
                else "chosen by the user"
            )
            profile = f"profile {self.profile_dir} ({origin}; {'removed' if self.remove_profile else 'kept'})"
        return (
            f"adopted: chromedriver {self.driver_pid or 'gone'}, browser {self.browser_pid or 'gone'}, "
            f"{len(self.processes)} process(es) at adopt time, {profile}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver_pid": self.driver_pid,
            "browser_pid": self.browser_pid,
            "processes": [{"pid": p, "name": n, "via": v} for p, n, v in self.processes],
            "profile_dir": self.profile_dir,
            "profile_origin": self.profile_origin,
            "remove_profile": self.remove_profile,
            "singleton_dir": self.singleton_dir,
            "ports": list(self.ports),
            "limits": list(self.limits),
        }


# -- validation -----------------------------------------------------------
def _check_driver(driver: Any) -> tuple[Any, dict[str, Any]]:
    """Return ``(service, capabilities)`` or raise ConfigError saying why not."""
    caps = getattr(driver, "capabilities", None)
    if not isinstance(caps, dict) or not hasattr(driver, "quit"):
        raise ConfigError(
            f"adopt() needs a Selenium WebDriver, got {type(driver).__name__}; "
            "pass the object webdriver.Chrome() returned",
            option="driver",
            value=type(driver).__name__,
        )
    service = getattr(driver, "service", None)
    if service is None or not hasattr(service, "process"):
        executor = getattr(driver, "command_executor", None)
        config = getattr(executor, "client_config", None)
        url = getattr(config, "remote_server_addr", None) or getattr(executor, "_url", None) or "a remote end"
        raise ConfigError(
            f"adopt() needs a local Chrome driver whose chromedriver runs on this machine, but this "
            f"{type(driver).__name__} has no chromedriver service (it talks to {url}): its browser "
            "runs elsewhere and cannot be torn down from here; end it with driver.quit()",
            option="driver",
            value=type(driver).__name__,
        )
    browser = str(caps.get("browserName") or "").lower()
    if browser and browser not in _CHROMIUM_BROWSERS:
        raise ConfigError(
            f"adopt() supports Chrome and Chromium drivers, got browserName={browser!r}; "
            "end this driver with driver.quit()",
            option="driver",
            value=browser,
        )
    return service, caps


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"cleanup_timeout must be a number of seconds, got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"cleanup_timeout must be a finite number of seconds > 0, got {value!r}",
            option="cleanup_timeout",
            value=value,
        )
    return float(value)


def _check_optional_bool(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {value!r} ({type(value).__name__})")
    return value


def _refuse_dangerous(path: str) -> None:
    """``remove_profile=True`` on ``/``, the home dir or the working dir would be a disaster."""
    real = os.path.realpath(path)
    home = os.path.realpath(os.path.expanduser("~"))
    if real == os.path.sep or real == home or os.getcwd().startswith(real.rstrip(os.sep) + os.sep):
        raise ConfigError(
            f"remove_profile=True would remove {path!r}, which is the root dir, the home dir or an "
            "ancestor of the working dir; refusing. Give the driver a --user-data-dir of its own",
            option="remove_profile",
            value=path,
        )


# -- discovery ------------------------------------------------------------
def _temp_dirs(env: dict[str, str]) -> set[str]:
    dirs = {tempfile.gettempdir(), "/tmp"}
    for key in ("TMPDIR", "TMP", "TEMP"):
        for source in (env, os.environ):
            if source.get(key):
                dirs.add(source[key])
    return {os.path.realpath(d) for d in dirs}


def profile_origin(path: str, driver_env: dict[str, str]) -> str:
    """``"chromedriver"`` when ``path`` is a temp profile chromedriver made
    (its name pattern, directly in a temp dir chromedriver could use), else
    ``"user"``."""
    real = os.path.realpath(path)
    if CHROMEDRIVER_PROFILE.match(os.path.basename(real)) and os.path.dirname(real) in _temp_dirs(driver_env):
        return "chromedriver"
    return "user"


def _singleton_dir(profile: str) -> str | None:
    """Chromium's singleton dir in the temp dir, from the profile's
    ``SingletonSocket`` link; None unless it looks exactly like one."""
    try:
        target = os.readlink(os.path.join(profile, "SingletonSocket"))
    except OSError:
        return None
    parent = os.path.dirname(target)
    if not os.path.isabs(parent) or not SINGLETON_DIR.match(os.path.basename(parent)):
        return None
    return parent


def _remove_singleton_dir(path: str) -> tuple[bool, str | None]:
    """Remove ``path`` if it holds only Chromium's singleton files.
    Returns ``(removed, problem)``."""
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return False, None
    except OSError as err:
        return False, f"cannot list {path!r}: {err.strerror or err}"
    if not names <= _SINGLETON_FILES:
        return False, f"{path!r} holds more than Chromium's singleton files: left alone"
    problem = _remove_tree(path)
    return problem is None, problem


class _AdoptState(TeardownOnce):
    """What teardown needs, apart from the public object (the finalizer holds it).

    Listed in ``_watchdog._live`` like a session's state: signal handlers
    tear it down, and a replacement watchdog learns it again."""

    adopted = True  # tells _watchdog which add message to send

    def __init__(
        self, label: str, target: TeardownTarget, found: AdoptFindings, budget: float, watchdog: bool
    ) -> None:
        super().__init__()
        self.label = label
        self.target = target
        self.found = found
        self.budget = budget
        self.watchdog = watchdog

    @property
    def session_id(self) -> str:  # type: ignore[override]
        return self.label

    def _run(self) -> CleanupReport:
        return run_teardown(self.target, self.budget)

    def _finish(self, report: CleanupReport) -> CleanupReport:
        _release_driver(self.target.driver)
        self.target.driver = None
        return _amend(report, self.found)


def _finish_singleton_dir(
    path: str, removed: list[str], notes: list[str], errors: list[str], leftovers: list[Leftover]
) -> None:
    """Remove Chromium's singleton dir once nothing of the driver runs (a
    running browser would re-create its socket); record the outcome in the
    profile stage's lists and the report's leftovers."""
    if any(lo.kind == "process" for lo in leftovers):
        notes.append(f"singleton dir {path} kept: a process of the driver still runs")
        return
    done, problem = _remove_singleton_dir(path)
    if done:
        removed.append(path)
    elif problem is not None:
        errors.append(problem)
    if os.path.lexists(path) and problem is None:
        leftovers.append(Leftover("dir", path))


def _amend(report: CleanupReport, found: AdoptFindings) -> CleanupReport:
    """Add what only adoption knows to the report: the singleton dir (removed
    once nothing of the driver runs), a kept profile dir, and the limits."""
    stages = list(report.stages)
    leftovers = list(report.leftovers)
    idx = {st.stage: i for i, st in enumerate(stages)}  # the last run of each stage
    profile = stages[idx[Stage.PROFILE]]
    removed, notes, errors = list(profile.removed), list(profile.notes), list(profile.errors)
    skipped = profile.skipped_reason
    if found.profile_dir is None:
        skipped = "the driver's capabilities name no profile dir"
    elif not found.remove_profile:
        skipped = None
        why = (
            "a --user-data-dir chosen by the user; pass remove_profile=True to remove it"
            if found.profile_origin == "user"
            else "remove_profile=False"
        )
        notes.append(f"kept {found.profile_dir} ({why})")
    if found.singleton_dir is not None:
        _finish_singleton_dir(found.singleton_dir, removed, notes, errors, leftovers)
    stages[idx[Stage.PROFILE]] = dataclasses.replace(
        profile, removed=tuple(removed), notes=tuple(notes), errors=tuple(errors), skipped_reason=skipped
    )
    verify = stages[idx[Stage.VERIFY]]
    stages[idx[Stage.VERIFY]] = dataclasses.replace(
        verify, notes=verify.notes + (found.summary(),) + found.limits
    )
    return dataclasses.replace(report, stages=tuple(stages), leftovers=tuple(leftovers))


def _finalize(state: _AdoptState) -> None:
    state.finalize_unclosed(
        f"embassy_cleanup: adopted driver {state.label}", "use 'with adopt(driver):' or call close()"
    )


class AdoptedSession:
    """A driver started elsewhere, under our teardown.  Made by :func:`adopt`.

    ``with adopt(driver) as d:`` gives back the same driver; on exit (or
    :meth:`close`) the six stages run once and :attr:`report` says what they
    did.  :attr:`found` says what adoption discovered and what it could not.
    """

    def __init__(self, state: _AdoptState, driver: Any, raise_on_leak: bool) -> None:
        self._state = state
        self.driver: Any = driver
        self.raise_on_leak = raise_on_leak
        self._finalizer = weakref.finalize(self, _finalize, state)

    @property
    def session_id(self) -> str:
        """The label the report and the logs use (``adopted-`` and the WebDriver session id)."""
        return self._state.label

    @property
    def found(self) -> AdoptFindings:
        """What adoption discovered: processes, profile dir and its origin, ports, limits."""
        return self._state.found

    @property
    def report(self) -> CleanupReport | None:
        """The cleanup report, once teardown has run."""
        return self._state.report

    @property
    def pids(self) -> dict[int, str]:
        """PID -> name of every process recorded for this driver so far."""
        return {p.pid: p.name for p in self._state.target.tracker.recorded.values()}

    def close(self) -> CleanupReport:
        """Tear the driver down (once) and return the report.

        Raises CleanupIncomplete when ``raise_on_leak`` is set and
        verification found leftovers.
        """
        report = self._close()
        if self.raise_on_leak and not report.ok:
            raise CleanupIncomplete(
                f"adopted driver {self.session_id} left {len(report.leftovers)} leftover(s): "
                + ", ".join(str(lo) for lo in report.leftovers),
                report=report,
            )
        return report

    def _close(self) -> CleanupReport:
        report = self._state.teardown()
        if report is None:  # a fork()-ed child: not ours to tear down
            return CleanupReport(
                self.session_id,
                (),
                (Leftover("unverified", "adopted in another process; torn down there"),),
                0.0,
                passes=0,
            )
        self._finalizer.detach()
        self.driver = None
        return report

    def __enter__(self) -> Any:
        return self.driver

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            try:
                self._close()
            except Exception as err:  # never mask the user's exception
                warnings.warn(f"embassy_cleanup teardown failed: {err!r}", RuntimeWarning, stacklevel=2)
            return
        self.close()

    def __repr__(self) -> str:
        return f"<AdoptedSession {self.session_id} {'closed' if self.report is not None else 'open'}>"


def adopt(
    driver: Any,
    *,
    cleanup_timeout: float = 10.0,
    remove_profile: bool | None = None,
    raise_on_leak: bool = False,
    graceful: bool = True,
    watchdog: bool = True,
) -> AdoptedSession:
    """Put a Chrome WebDriver created elsewhere under our staged teardown.

    ::

        session = adopt(webdriver.Chrome(options=opts))
        with session as driver:
            driver.get(url)
        print(session.report)           # what was quit, killed, removed, verified

    Discovery is recorded now: chromedriver (``driver.service.process``), the
    browser (``goog:processID``), their descendants and every process with
    the profile dir on its command line.  A browser that dies later, or a
    chromedriver killed before ``close()``, is still known by PID and create
    time.  See ``docs/adopt.md``.

    Args:
        driver: a local Selenium Chrome/Chromium WebDriver (it must have a
            chromedriver ``service``; a remote driver raises ConfigError).
        cleanup_timeout: the whole teardown budget in seconds (> 0).
        remove_profile: None (default) removes the profile dir only when
            chromedriver created it; True removes it whoever created it;
            False never removes it.
        raise_on_leak: ``close()`` raises :class:`CleanupIncomplete` when
            verification finds leftovers.
        graceful: try ``driver.quit()`` first; False goes straight to the kill
            stages.
        watchdog: register the driver with this process's watchdog, so that
            it is torn down even if this process is SIGKILLed (as for
            ``ChromeUltraAggressiveCleanup``); see ``docs/crash-safety.md``.
    """
    service, caps = _check_driver(driver)
    budget = _check_timeout(cleanup_timeout)
    remove_profile = _check_optional_bool("remove_profile", remove_profile)
    for name, value in (("raise_on_leak", raise_on_leak), ("graceful", graceful), ("watchdog", watchdog)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")

    limits = [NO_ENV_MARKER, CRASHPAD_UNTRACKED]
    vendor: dict[str, Any] = next((caps[k] for k in _VENDOR_KEYS if isinstance(caps.get(k), dict)), {})
    raw_profile = vendor.get("userDataDir")
    profile = os.path.abspath(raw_profile) if isinstance(raw_profile, str) and raw_profile else None

    # chromedriver: the Popen Selenium started, if it still runs.
    popen = service.process
    leader_proc: psutil.Process | None = None
    driver_env: dict[str, str] = {}
    if popen is not None and popen.poll() is None:
        try:
            leader_proc = psutil.Process(popen.pid)
        except psutil.Error:
            leader_proc = None
        try:  # only to know its temp dir; an unreadable environment is no reason to drop it
            driver_env = leader_proc.environ() if leader_proc is not None else {}
        except psutil.Error:
            driver_env = {}
    if leader_proc is None:
        limits.append("chromedriver was not running at adopt time")

    # the browser: goog:processID, believed only with the profile dir on its command line
    browser: OwnedProcess | None = None
    browser_pid = caps.get("goog:processID")
    if isinstance(browser_pid, int) and profile is not None:
        try:
            proc = psutil.Process(browser_pid)
            if root_in_args(profile, proc.cmdline()):
                browser = OwnedProcess(browser_pid, proc.create_time(), proc.name(), "capabilities")
            else:
                limits.append(f"goog:processID {browser_pid} does not carry the profile dir: ignored")
        except psutil.Error:
            limits.append(f"the browser (goog:processID {browser_pid}) was not running at adopt time")

    origin = profile_origin(profile, driver_env) if profile is not None else None
    if profile is None:
        limits.append("the capabilities name no userDataDir: no profile dir to remove or search by")
        remove = False
    else:
        remove = origin == "chromedriver" if remove_profile is None else remove_profile
        if remove:
            _refuse_dangerous(profile)

    births = [p.create_time() for p in (leader_proc,) if p is not None]
    births += [browser.create_time] if browser is not None else []
    born_after = min(births) if births else time.time()
    tracker = ProcessTracker("", profile or "", born_after=born_after)  # "": no env marker to search for
    if leader_proc is not None and popen is not None:
        leader = tracker.adopt_leader(popen)
        if leader is not None:  # say how we know it: from the service, not because we started it
            leader = dataclasses.replace(leader, via="service")
            tracker.leader = leader
            tracker.recorded[leader.pid] = leader
    if browser is not None:
        tracker.record([browser])
    procs = tracker.discover()

    ports: set[int] = set()
    port = getattr(service, "port", None)
    if isinstance(port, int) and port > 0:
        ports.add(port)
    devtools_port: int | None = None
    address = (caps.get("goog:chromeOptions") or {}).get("debuggerAddress") or ""
    if isinstance(address, str) and address.rpartition(":")[2].isdigit():
        devtools_port = int(address.rpartition(":")[2])
        ports.add(devtools_port)

    label = "adopted-" + (str(getattr(driver, "session_id", "") or "") or secrets.token_hex(6))[:12]
    found = AdoptFindings(
        driver_pid=leader_proc.pid if leader_proc is not None else None,
        browser_pid=browser.pid if browser is not None else None,
        processes=tuple(sorted((p.pid, p.name, p.via) for p in procs.values() if p.is_running())),
        profile_dir=profile,
        profile_origin=origin,
        remove_profile=remove,
        singleton_dir=_singleton_dir(profile) if profile is not None else None,
        ports=tuple(sorted(ports)),
        limits=tuple(limits),
    )
    target = TeardownTarget(
        label,
        tracker,
        profile if remove else None,  # the profile and os-kill stages act on this dir only
        ports=ports,
        driver=driver,
        graceful=graceful,
        devtools_port=devtools_port,
    )
    log.info(
        "%s adopted: %d process(es), profile %s (%s, %s)",
        label,
        len(found.processes),
        profile,
        origin,
        "will be removed" if remove else "kept",
    )
    state = _AdoptState(label, target, found, budget, watchdog)
    session = AdoptedSession(state, driver, raise_on_leak)
    _register(state)
    return session


# -- crash safety: the owner's watchdog -----------------------------------------------
def _register(state: _AdoptState) -> None:
    """List the adopted driver as live (signal handlers tear it down) and, with
    ``watchdog=True``, register it with this process's watchdog."""
    from . import _watchdog

    _watchdog._live[state.label] = state
    if not state.watchdog:
        return
    hook = _watchdog._CrashSafetyHook(None, registered=False)
    state.hooks.append(hook)
    pid = _watchdog._get_client().send(watchdog_message(state))
    hook.registered = True
    if pid is not None:
        state.target.tracker._exclude.add(pid)


def watchdog_message(state: _AdoptState) -> dict[str, Any]:
    """The watchdog's ``add`` message for an adopted driver.

    ``procs`` are the identities recorded so far (chromedriver, the browser,
    and what discovery found at adopt time); ``dirs`` the profile dir only if
    adopt would remove it; ``singleton_dir`` Chromium's singleton dir, which
    is removed only if it holds nothing but the singleton files.  A kept
    profile dir is never sent: the watchdog cannot touch what it is not told.
    """
    found = state.found
    tracker = state.target.tracker
    procs = [[p.pid, p.create_time, p.name] for p in tracker.recorded.values() if p.is_running()]
    return {
        "op": "add",
        "sid": state.label,
        "root": None,
        "adopted": {
            "procs": procs,
            "dirs": [found.profile_dir] if found.remove_profile and found.profile_dir else [],
            "profile_kept": found.profile_dir is not None and not found.remove_profile,
            "singleton_dir": found.singleton_dir,
            "ports": list(found.ports),
            "born_after": tracker.born_after,
        },
    }


@dataclass(frozen=True)
class Registration:
    """An adopted driver as the watchdog knows it (a checked ``adopted`` body)."""

    procs: tuple[OwnedProcess, ...]
    dirs: tuple[str, ...]
    profile_kept: bool
    singleton_dir: str | None
    ports: tuple[int, ...]
    born_after: float


def _check_dir(path: Any, what: str) -> str:
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path.rstrip("/"):
        raise ValueError(f"{what} must be an absolute, normalised path, got {path!r}")
    real = os.path.realpath(path)
    if real == os.path.sep or real == os.path.realpath(os.path.expanduser("~")):
        raise ValueError(f"{what} {path!r} is the root dir or the home dir: refusing")
    return path


def parse_registration(body: Any) -> Registration:
    """Check the ``adopted`` body of a watchdog message; ValueError says what is wrong.

    The watchdog removes the dirs it names, so a malformed one is refused
    whole rather than acted on in part."""
    if not isinstance(body, dict):
        raise ValueError(f"the adopted registration must be an object, got {type(body).__name__}")
    raw = body.get("procs")
    if not isinstance(raw, list) or not raw:
        raise ValueError("the adopted registration names no processes")
    procs = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or isinstance(item[0], bool)
            or not isinstance(item[0], int)
            or item[0] <= 1
            or isinstance(item[1], bool)
            or not isinstance(item[1], (int, float))
            or not math.isfinite(item[1])
            or item[1] <= 0
            or not isinstance(item[2], str)
        ):
            raise ValueError(f"a process must be [pid > 1, create time > 0, name], got {item!r}")
        procs.append(OwnedProcess(item[0], float(item[1]), item[2], "recorded"))
    dirs = body.get("dirs", [])
    if not isinstance(dirs, list):
        raise ValueError(f"dirs must be a list, got {dirs!r}")
    singleton = body.get("singleton_dir")
    if singleton is not None:
        singleton = _check_dir(singleton, "singleton_dir")
        if not SINGLETON_DIR.match(os.path.basename(singleton)):
            raise ValueError(f"singleton_dir {singleton!r} is not named like Chromium's singleton dir")
    ports = body.get("ports", [])
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        raise ValueError(f"ports must be a list of TCP ports, got {ports!r}")
    born_after = body.get("born_after", 0.0)
    if isinstance(born_after, bool) or not isinstance(born_after, (int, float)) or not born_after >= 0:
        raise ValueError(f"born_after must be epoch seconds, got {born_after!r}")
    return Registration(
        procs=tuple(procs),
        dirs=tuple(_check_dir(d, "a dir to remove") for d in dirs),
        profile_kept=body.get("profile_kept") is True,
        singleton_dir=singleton,
        ports=tuple(ports),
        born_after=float(born_after),
    )


#: The watchdog's budget for one adopted driver, as for a session (``reap_orphaned``).
REAP_BUDGET_S = 5.0


def reap_adopted(
    sid: str, body: Any, exclude: Iterable[int] = (), budget: float = REAP_BUDGET_S
) -> CleanupReport:
    """The watchdog's part: tear down an adopted driver whose owner died.

    The recorded processes and their descendants born after them (found now:
    renderers started since adopt hang below the recorded browser and
    zygotes) get SIGTERM, ``TERM_GRACE`` to exit, then SIGKILL, each signal
    identity-checked.  Chrome gets the chance to write a profile the user
    keeps.  Then the staged teardown (no quit, SIGKILL at once) catches
    stragglers, removes the dirs the owner said adopt would remove, and
    verifies; the singleton dir goes once nothing of the driver runs.
    """
    reg = parse_registration(body)
    t0 = time.monotonic()
    # A removable profile is ours to search by (as adopt's own teardown does);
    # a kept one is not named at all.
    root = reg.dirs[0] if reg.dirs else None
    tracker = ProcessTracker("", root or "", exclude=exclude, born_after=reg.born_after)
    tracker.record(reg.procs)
    first = [p for p in tracker.discover().values() if p.is_running()]
    polite: list[Any] = []
    if first:
        polite, _survivors = tracker.kill_tree(first, TERM_GRACE, min(2.0, budget / 2))
    target = TeardownTarget(sid, tracker, root, ports=set(reg.ports), driver=None, graceful=False)
    try:
        report = run_teardown(target, max(0.5, budget - (time.monotonic() - t0)))
    except TeardownInterrupted as held:  # finished; hand on the original Ctrl-C
        raise held.original from None
    stages = list(report.stages)
    leftovers = list(report.leftovers)
    idx = {st.stage: i for i, st in enumerate(stages)}
    if polite:  # the polite pass belongs to the first tree-kill
        first_kill = next(i for i, st in enumerate(stages) if st.stage == Stage.KILL_TREE)
        kill = stages[first_kill]
        note = f"SIGTERM first, {TERM_GRACE} s grace, then SIGKILL: {len(polite)} process(es)"
        stages[first_kill] = dataclasses.replace(kill, killed=tuple(polite) + kill.killed, notes=(note,))
    profile = stages[idx[Stage.PROFILE]]
    removed, notes, errors = list(profile.removed), list(profile.notes), list(profile.errors)
    skipped = profile.skipped_reason
    for extra in reg.dirs[1:]:
        problem = _remove_tree(extra)
        if problem is None:
            removed.append(extra)
        else:
            errors.append(problem)
            leftovers.append(Leftover("dir", extra))
    if reg.profile_kept:
        skipped = None
        notes.append("the profile dir was kept (chosen by the user): the watchdog was not told its path")
    if reg.singleton_dir is not None:
        _finish_singleton_dir(reg.singleton_dir, removed, notes, errors, leftovers)
    stages[idx[Stage.PROFILE]] = dataclasses.replace(
        profile, removed=tuple(removed), notes=tuple(notes), errors=tuple(errors), skipped_reason=skipped
    )
    return dataclasses.replace(
        report, stages=tuple(stages), leftovers=tuple(leftovers), duration_s=time.monotonic() - t0
    )



__all__ = ["adopt", "AdoptedSession", "AdoptFindings"]
