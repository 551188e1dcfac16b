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
* the profile dir: ``capabilities["chrome"]["userDataDir"]``, Chromium's
  singleton dir that the profile's ``SingletonSocket`` link points to, and
  chromedriver's second, empty scoped dir when it is provably this
  chromedriver's (:func:`_scratch_dir`);
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

import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

from . import _platform
from ._dirs import (
    CHROMEDRIVER_PROFILE,
    SINGLETON_DIR,
    KnownEmptyDir,
    find_scratch_dir,
    profile_origin,
    singleton_dir_of,
    temp_dirs,
)
from ._errors import ConfigError
from ._lifecycle import Lifecycle, SessionHandle
from ._options import check_bool, check_seconds
from ._ownership import OwnedProcess, ProcessTracker, root_in_args
from ._report import CleanupReport
from ._teardown import LOCAL_PLAN, TERM_GRACE, Plan, TeardownInterrupted, TeardownTarget, run_teardown
from ._watchdog import Reaper
from ._webdriver import CommandGuard, release_driver

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.remote.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")

#: ``capabilities`` keys under which Chromium-based drivers name their profile dir.
_VENDOR_KEYS = ("chrome", "msedge")
_CHROMIUM_BROWSERS = {"chrome", "chromium", "chrome-headless-shell", "msedge", "microsoftedge"}

#: What adopted drivers can never offer, said in every adopted report.
NO_ENV_MARKER = "no env marker: found by chromedriver's process tree, the browser PID and --user-data-dir"
#: The profile stage's note on a profile dir it keeps, and why.
KEPT_PROFILE = "kept {path} ({why})"
WHY_USER_PROFILE = "a --user-data-dir chosen by the user; pass remove_profile=True to remove it"
WHY_NOT_REMOVED = "remove_profile=False"
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
    scratch_dir: KnownEmptyDir | None = None

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
            "scratch_dir": self.scratch_dir.path if self.scratch_dir is not None else None,
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


# -- the kind ---------------------------------------------------------------
class AdoptedKind:
    """A driver started elsewhere (``_lifecycle.Kind``): the local plan, on a
    target that names what adoption found (a kept profile, Chromium's
    singleton dir, the limits of what could be known)."""

    kind: ClassVar[str] = "adopted"

    def __init__(self, target: TeardownTarget, found: AdoptFindings) -> None:
        self.target = target
        self.found = found

    def plan(self) -> tuple[TeardownTarget, Plan]:
        return self.target, LOCAL_PLAN

    def watchdog_record(self) -> dict[str, Any]:
        """What the watchdog needs after the owner's death.

        ``procs`` are the identities recorded so far (chromedriver, the
        browser, and what discovery found at adopt time); ``dirs`` the profile
        dir only if adopt would remove it; ``singleton_dir`` Chromium's
        singleton dir, which is removed only if it holds nothing but the
        singleton files; ``scratch_dir`` chromedriver's empty scoped dir by
        identity (path, device, inode, ctime).  A kept profile dir is never sent:
        the watchdog cannot touch what it is not told."""
        found = self.found
        tracker = self.target.tracker
        return {
            "procs": [[p.pid, p.create_time, p.name] for p in tracker.processes() if p.is_running()],
            "dirs": [found.profile_dir] if found.remove_profile and found.profile_dir else [],
            "profile_kept": found.profile_dir is not None and not found.remove_profile,
            "singleton_dir": found.singleton_dir,
            "scratch_dir": found.scratch_dir.to_list() if found.scratch_dir is not None else None,
            "ports": list(found.ports),
            "born_after": tracker.born_after,
        }

    def release(self) -> None:
        release_driver(self.target.driver)
        self.target.driver = None

    def forget_in_child(self) -> None:
        """An adopted driver holds no lock."""


class AdoptedSession(SessionHandle):
    """A driver started elsewhere, under our teardown.  Made by :func:`adopt`.

    ``with adopt(driver) as d:`` gives back the same driver; on exit (or
    :meth:`close`) the six stages run once and :attr:`report` says what they
    did.  :attr:`found` says what adoption discovered and what it could not.
    """

    _what = "embassy_cleanup: adopted driver"
    _fix = "use 'with adopt(driver):' or call close()"

    def __init__(self, lifecycle: Lifecycle, kind: AdoptedKind, driver: Any, raise_on_leak: bool) -> None:
        self._lifecycle = lifecycle
        self._kind = kind
        self.driver: WebDriver | None = driver
        self.raise_on_leak = raise_on_leak
        self._arm_finalizer()

    @property
    def session_id(self) -> str:
        """The label the report and the logs use (``adopted-`` and the WebDriver session id)."""
        return self._lifecycle.session_id

    @property
    def found(self) -> AdoptFindings:
        """What adoption discovered: processes, profile dir and its origin, ports, limits."""
        return self._kind.found

    @property
    def pids(self) -> dict[int, str]:
        """PID -> name of every process recorded for this driver so far."""
        return {p.pid: p.name for p in self._kind.target.tracker.processes()}

    def _after_close(self) -> None:
        self.driver = None

    def __enter__(self) -> WebDriver:
        if self.driver is None:
            raise RuntimeError(f"adopted driver {self.session_id} was already torn down")
        return self.driver

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
    budget = check_seconds("cleanup_timeout", cleanup_timeout)
    remove_profile = check_bool("remove_profile", remove_profile, allow_none=True)
    for name, value in (("raise_on_leak", raise_on_leak), ("graceful", graceful), ("watchdog", watchdog)):
        check_bool(name, value)

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
        # say how we know it: from the service, not because we started it
        tracker.adopt_leader(popen, via="service")
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

    scratch = (
        _scratch_dir(profile, origin, leader_proc, browser, driver_env, limits)
        if profile is not None and leader_proc is not None and browser is not None
        else None
    )
    label = "adopted-" + (str(getattr(driver, "session_id", "") or "") or secrets.token_hex(6))[:12]
    found = AdoptFindings(
        driver_pid=leader_proc.pid if leader_proc is not None else None,
        browser_pid=browser.pid if browser is not None else None,
        processes=tuple(sorted((p.pid, p.name, p.via) for p in procs.values() if p.is_running())),
        profile_dir=profile,
        profile_origin=origin,
        remove_profile=remove,
        singleton_dir=singleton_dir_of(profile) if profile is not None else None,
        ports=tuple(sorted(ports)),
        limits=tuple(limits),
        scratch_dir=scratch,
    )
    target = TeardownTarget(
        label,
        tracker,
        profile if remove else None,  # the profile and os-kill stages act on this dir only
        ports=ports,
        driver=driver,
        commands=CommandGuard(driver, label),
        graceful=graceful,
        devtools_port=devtools_port,
        kept_note=KEPT_PROFILE.format(path=profile, why=_why_kept(found))
        if profile is not None and not remove
        else None,
        no_dir_reason=NO_PROFILE,
        singleton_dir=found.singleton_dir,
        empty_dirs=(scratch,) if scratch is not None else (),
        notes=(found.summary(), *found.limits),
    )
    log.info(
        "%s adopted: %d process(es), profile %s (%s, %s)",
        label,
        len(found.processes),
        profile,
        origin,
        "will be removed" if remove else "kept",
    )
    kind = AdoptedKind(target, found)
    lifecycle = Lifecycle(label, kind, budget, watchdog)
    session = AdoptedSession(lifecycle, kind, driver, raise_on_leak)
    pid = lifecycle.register()
    if pid is not None:
        tracker.exclude(pid)
    return session


def _scratch_dir(
    profile: str,
    origin: str | None,
    driver: psutil.Process,
    browser: OwnedProcess,
    env: dict[str, str],
    limits: list[str],
) -> KnownEmptyDir | None:
    """chromedriver's second, empty scoped dir (for extensions), when it is
    provably this chromedriver's.

    Nothing names it, but chromedriver makes it with the profile, before it
    starts the browser: the one empty scoped dir of ours made in that window,
    in the temp dir chromedriver uses (:func:`find_scratch_dir`), is its,
    unless another chromedriver of this user that uses the same temp dir was
    already running then.  When that cannot be ruled out it is kept, and
    ``limits`` says why.  (A chromedriver that made one in the same window
    and has exited since cannot be seen; its dir would be empty litter of a
    dead session.)
    """
    parents = {os.path.dirname(os.path.realpath(profile))} if origin == "chromedriver" else temp_dirs(env)
    try:
        made_after = driver.create_time()
    except psutil.Error:
        return None
    shift = _platform.create_time_offset()  # process and file clocks, compared
    scratch, why = find_scratch_dir(parents, profile, made_after + shift, browser.create_time + shift)
    if why is not None:
        limits.append(f"chromedriver's empty scoped dir: {why}")
    if scratch is None:
        return None
    rival = _rival_chromedriver(os.path.dirname(scratch.path), driver.pid, browser.create_time)
    if rival is not None:
        limits.append(
            f"chromedriver's empty scoped dir {scratch.path} kept: chromedriver {rival} of this user, "
            "with the same temp dir, was running when it was made"
        )
        return None
    return scratch


def _rival_chromedriver(parent: str, ours: int, before: float) -> int | None:
    """Another chromedriver of this user, started before ``before``, that may
    make scoped dirs in ``parent`` (its temp dir, or an unreadable environment)."""
    for row in _platform.process_table():
        if row.pid == ours or row.zombie or not row.name.startswith("chromedriver"):
            continue
        if _platform.born_before(before, row.create_time):
            continue  # started after the dir was made
        try:
            proc = psutil.Process(row.pid)
            if not _platform.same_user(proc):
                continue
            env = proc.environ()
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            return row.pid
        if os.path.realpath(parent) in temp_dirs(env):
            return row.pid
    return None


def _why_kept(found: AdoptFindings) -> str:
    return WHY_USER_PROFILE if found.profile_origin == "user" else WHY_NOT_REMOVED


# -- owner death: the watchdog's reaper ---------------------------------------------
@dataclass(frozen=True)
class Registration:
    """An adopted driver as the watchdog knows it (a checked ``adopted`` body)."""

    procs: tuple[OwnedProcess, ...]
    dirs: tuple[str, ...]
    profile_kept: bool
    singleton_dir: str | None
    ports: tuple[int, ...]
    born_after: float
    scratch_dir: KnownEmptyDir | None = None


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
    scratch = _check_scratch(body.get("scratch_dir"))
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
        scratch_dir=scratch,
    )


def _check_scratch(raw: Any) -> KnownEmptyDir | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) != 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in raw[1:])
    ):
        raise ValueError(f"scratch_dir must be [path, device, inode, ctime_ns], got {raw!r}")
    path = _check_dir(raw[0], "scratch_dir")
    if not CHROMEDRIVER_PROFILE.match(os.path.basename(path)):
        raise ValueError(f"scratch_dir {path!r} is not named like chromedriver's scoped dir")
    return KnownEmptyDir(path, raw[1], raw[2], raw[3])


#: The watchdog's budget for one adopted driver, as for a session (``_sweep``).
REAP_BUDGET_S = 5.0
NO_PROFILE = "the driver's capabilities name no profile dir"
KEPT_UNKNOWN = "the profile dir was kept (chosen by the user): the watchdog was not told its path"


def reap_adopted(sid: str, body: Any, exclude: Any = (), budget: float = REAP_BUDGET_S) -> CleanupReport:
    """The watchdog's part: tear down an adopted driver whose owner died.

    The recorded processes and their descendants born after them (found now:
    renderers started since adopt hang below the recorded browser and
    zygotes) get SIGTERM, ``TERM_GRACE`` to exit, then SIGKILL, each signal
    identity-checked: Chrome gets the chance to write a profile the user
    keeps.  Then the other stages run as usual: stragglers, the dir the owner
    said adopt would remove, the singleton dir once nothing runs, verification.
    """
    return _reap(sid, parse_registration(body), exclude, budget)


def _reap(sid: str, reg: Registration, exclude: Any = (), budget: float = REAP_BUDGET_S) -> CleanupReport:
    # A removable profile is ours to search by (as adopt's own teardown does);
    # a kept one is not named at all.
    root = reg.dirs[0] if reg.dirs else None
    tracker = ProcessTracker("", root or "", exclude=exclude, born_after=reg.born_after)
    tracker.record(reg.procs)
    target = TeardownTarget(
        sid,
        tracker,
        root,
        ports=set(reg.ports),
        graceful=False,
        term_grace=TERM_GRACE,
        kept_note=KEPT_UNKNOWN if reg.profile_kept else None,
        no_dir_reason=NO_PROFILE,
        singleton_dir=reg.singleton_dir,
        empty_dirs=(reg.scratch_dir,) if reg.scratch_dir is not None else (),
    )
    try:
        return run_teardown(target, budget)
    except TeardownInterrupted as held:  # finished; hand on the original Ctrl-C
        raise held.original from None


def _reap_parsed(sid: str, reg: Registration, exclude: set[int]) -> str:
    report = _reap(sid, reg, exclude)
    return f"{'ok' if report.ok else 'LEFTOVERS'}\n{report}"


ADOPTED_REAPER = Reaper(parse=parse_registration, reap=_reap_parsed)


__all__ = [
    "adopt",
    "AdoptedSession",
    "AdoptFindings",
    "CHROMEDRIVER_PROFILE",
    "SINGLETON_DIR",
    "profile_origin",
]
