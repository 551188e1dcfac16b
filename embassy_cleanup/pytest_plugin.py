"""pytest plugin (entry point ``pytest11``): Chrome fixtures, a per-worker
browser pool, failure artifacts and an opt-in leak check.

Fixtures: ``chrome_session`` (a started :class:`ChromeUltraAggressiveCleanup`),
``chrome_driver`` (its WebDriver), ``chrome_pool`` (a session-scoped
:class:`ChromePool`, one per pytest-xdist worker) and ``pooled_driver`` (a
driver checked out of it for one test: a fresh browser context of a shared
browser, or with ``--chrome-isolation=browser`` a reset browser).
Their options come from the command line (``--chrome-headless``/``--chrome-headed``,
``--chrome-preset``, ``--chrome-cleanup-timeout``, ``--chrome-binary``,
``--chrome-driver-path``, ``--chrome-isolation``), else from the ini file
(``embassy_cleanup_headless``, ``embassy_cleanup_preset``,
``embassy_cleanup_cleanup_timeout``, ``embassy_cleanup_binary``,
``embassy_cleanup_driver_path``, ``embassy_cleanup_isolation``), and a test may
override any constructor option with ``@pytest.mark.embassy_cleanup(preset="minimal")``.

``--chrome-artifacts DIR`` saves a screenshot, the page source and the
browser console of every test that fails while holding a driver of these
fixtures, before its fixtures are torn down.

The leak check is off unless ``--chrome-leak-check`` or ``chrome_leak_check =
true`` turns it on.  Then every test runs with ``EMBASSY_CLEANUP_TEST=<run>:<n>``
in ``os.environ``, so everything it spawns inherits the marker, and after the
test's teardown the Chrome-family processes that carry it (or descend from
this process, born during the test) must be gone.  Each test also runs with
``TMPDIR`` pointing to a temp dir of its own, where chromedriver puts its
temp profiles: a profile left there is the test's even when its processes
died.  Otherwise the test gets an error at teardown naming them and their
dirs, and they are killed (by PID, identity-checked) and their dirs removed,
unless ``chrome_leak_keep``.  Under pytest-xdist each worker is its own
pytest process with its own run id, so a worker only ever blames its own
tests.  See ``docs/pytest.md``.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Iterator, cast

import psutil
import pytest
from selenium.webdriver.chrome.options import Options as ChromeOptions

from . import _platform
from ._dirs import CHROMEDRIVER_PROFILE, SINGLETON_DIR, profile_origin, remove_singleton_dir, remove_tree
from ._inventory import is_chrome_family
from ._ownership import ROOT_PREFIX
from ._pool import ISOLATION, ChromePool, Isolation
from ._presets import DEFAULT_PRESET, PRESETS
from ._session import ChromeUltraAggressiveCleanup

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.remote.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")

#: The environment variable that marks what one test spawned.
TEST_MARKER = "EMBASSY_CLEANUP_TEST"
#: The first words of every leak-check failure (tests match on it).
LEAK_HEADLINE = "chrome leak check"
#: Default seconds a test's Chrome may take to exit after its teardown.
DEFAULT_GRACE = 2.0
#: Default ``max_size`` of ``chrome_pool`` (per xdist worker).
DEFAULT_POOL_SIZE = 1
#: Default isolation of ``chrome_pool``'s tests: a browser context each, so no
#: test sees another's cookies or storage (docs/pytest.md says what
#: ``browser``, a reset browser, trades for its speed).
DEFAULT_ISOLATION: Isolation = "context"

_BORN_SLACK_S = 1.0  # clock slack between time.time() and /proc create times
_USER_DATA_DIR = re.compile(r"^--user-data-dir=(.+)$")
_SESSION_ROOT = re.compile(r"^(.*/" + re.escape(ROOT_PREFIX) + r"[0-9a-f]{12})(/.*)?$")


# -- options ------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("embassy_cleanup", "Chrome without leftovers (embassy_cleanup)")
    group.addoption(
        "--chrome-leak-check",
        action="store_true",
        default=None,
        help="fail a test whose Chrome processes or profile dirs outlive it (ini: chrome_leak_check)",
    )
    group.addoption(
        "--chrome-leak-keep",
        action="store_true",
        default=None,
        help="leave leaked Chrome processes and dirs in place for debugging (ini: chrome_leak_keep)",
    )
    group.addoption(
        "--chrome-headless",
        dest="chrome_headless",
        action="store_true",
        default=None,
        help="the fixtures' Chrome runs headless (ini: embassy_cleanup_headless, default true)",
    )
    group.addoption(
        "--chrome-headed",
        dest="chrome_headless",
        action="store_false",
        help="the fixtures' Chrome runs with a window",
    )
    group.addoption(
        "--chrome-preset",
        default=None,
        metavar="NAME",
        help=f"the fixtures' footprint preset: {', '.join(PRESETS)} (ini: embassy_cleanup_preset)",
    )
    group.addoption(
        "--chrome-cleanup-timeout",
        default=None,
        metavar="SECONDS",
        help="the fixtures' teardown budget (ini: embassy_cleanup_cleanup_timeout, default 10)",
    )
    group.addoption(
        "--chrome-binary",
        default=None,
        metavar="PATH",
        help="the Chrome binary the fixtures start (ini: embassy_cleanup_binary; "
        "default: $CHROME_BINARY, then chromium/google-chrome on PATH)",
    )
    group.addoption(
        "--chrome-driver-path",
        default=None,
        metavar="PATH",
        help="the chromedriver the fixtures use (ini: embassy_cleanup_driver_path; "
        "default: $CHROMEDRIVER_PATH, PATH, Selenium Manager, webdriver-manager)",
    )
    group.addoption(
        "--chrome-isolation",
        default=None,
        metavar="MODE",
        help=f"what pooled_driver gives each test: {' or '.join(ISOLATION)} "
        f"(a reset browser, or a fresh browser context; ini: embassy_cleanup_isolation, "
        f"default {DEFAULT_ISOLATION})",
    )
    group.addoption(
        "--chrome-artifacts",
        default=None,
        metavar="DIR",
        help="save a screenshot, the page source and the console log of each failed test "
        "that used a Chrome fixture into DIR (ini: embassy_cleanup_artifacts)",
    )
    parser.addini(
        "chrome_leak_check", "fail tests that leak Chrome (default false)", type="bool", default=False
    )
    parser.addini(
        "chrome_leak_keep", "keep what the leak check found (default false)", type="bool", default=False
    )
    parser.addini(
        "chrome_leak_grace", f"seconds a test's Chrome may take to exit (default {DEFAULT_GRACE})", default=""
    )
    parser.addini("embassy_cleanup_headless", "the fixtures' Chrome runs headless", type="bool", default=True)
    parser.addini("embassy_cleanup_preset", f"the fixtures' preset ({DEFAULT_PRESET})", default="")
    parser.addini("embassy_cleanup_cleanup_timeout", "the fixtures' teardown budget in seconds", default="")
    parser.addini("embassy_cleanup_binary", "the Chrome binary (relative to the ini file's dir)", default="")
    parser.addini("embassy_cleanup_driver_path", "chromedriver (relative to the ini file's dir)", default="")
    parser.addini(
        "embassy_cleanup_artifacts",
        "dir for failure artifacts (relative to the ini file's dir; default: none saved)",
        default="",
    )
    parser.addini(
        "embassy_cleanup_isolation",
        f"what pooled_driver gives each test: {' or '.join(ISOLATION)} (default {DEFAULT_ISOLATION})",
        default="",
    )
    parser.addini(
        "embassy_cleanup_pool_size",
        f"most browsers chrome_pool keeps per worker (default {DEFAULT_POOL_SIZE})",
        default="",
    )


def _pick(config: pytest.Config, cli: str, ini: str) -> tuple[Any, str]:
    """The value of an option and where it came from (CLI beats ini)."""
    value = config.getoption(cli)
    if value is not None:
        return value, f"--{cli.replace('_', '-')}"
    return config.getini(ini), f"the ini option {ini}"


def _seconds(raw: Any, where: str, default: float) -> float:
    if raw in ("", None):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise pytest.UsageError(f"invalid number of seconds {raw!r} from {where}; give a number > 0, e.g. 10")
    return value


def _pool_size(raw: Any) -> int:
    if raw in ("", None):
        return DEFAULT_POOL_SIZE
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise pytest.UsageError(
            f"invalid pool size {raw!r} from the ini option embassy_cleanup_pool_size; "
            "give a whole number >= 1, e.g. 2"
        )
    return value


def _isolation(raw: Any, where: str) -> Isolation:
    if raw in ("", None):
        return DEFAULT_ISOLATION
    if raw in ISOLATION:
        return cast(Isolation, raw)
    raise pytest.UsageError(f"invalid isolation {raw!r} from {where}; choose one of {', '.join(ISOLATION)}")


def _path(config: pytest.Config, cli: str, ini: str) -> tuple[str | None, str]:
    """A path option, absolute: a command-line value is relative to the
    directory pytest was started in, an ini value to the ini file's dir."""
    value = config.getoption(cli)
    if value:
        return os.path.join(config.invocation_params.dir, value), f"--{cli.replace('_', '-')}"
    value = config.getini(ini)
    if value:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return os.path.join(base, value), f"the ini option {ini}"
    return None, ""


def _executable(path: str | None, where: str, what: str, example: str) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        problem = "not found" if not os.path.lexists(path) else "not an executable file"
        raise pytest.UsageError(
            f"{what} {path!r} from {where}: {problem}; give the path to {what}, e.g. {example}"
        )
    return os.path.normpath(path)


@dataclass(frozen=True)
class Settings:
    """The plugin's settings, validated once at configure time."""

    session_kwargs: dict[str, Any] = field(default_factory=dict)
    leak_check: bool = False
    leak_keep: bool = False
    leak_grace: float = DEFAULT_GRACE
    artifacts: str | None = None  # absolute; None: save nothing
    pool_size: int = 1
    isolation: Isolation = DEFAULT_ISOLATION  # of chrome_pool


def read_settings(config: pytest.Config) -> Settings:
    """Read and validate every option; a bad value is a UsageError naming its source."""
    headless, _ = _pick(config, "chrome_headless", "embassy_cleanup_headless")
    preset, where = _pick(config, "chrome_preset", "embassy_cleanup_preset")
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise pytest.UsageError(
            f"invalid Chrome preset {preset!r} from {where}; choose one of {', '.join(PRESETS)}"
        )
    timeout, where = _pick(config, "chrome_cleanup_timeout", "embassy_cleanup_cleanup_timeout")
    check, _ = _pick(config, "chrome_leak_check", "chrome_leak_check")
    keep, _ = _pick(config, "chrome_leak_keep", "chrome_leak_keep")
    kwargs: dict[str, Any] = {
        "headless": bool(headless),
        "preset": preset,
        "cleanup_timeout": _seconds(timeout, where, 10.0),
    }
    binary = _executable(
        *_path(config, "chrome_binary", "embassy_cleanup_binary"), "the Chrome binary", "/usr/bin/chromium"
    )
    if binary is not None:
        kwargs["binary"] = binary
    driver = _executable(
        *_path(config, "chrome_driver_path", "embassy_cleanup_driver_path"),
        "chromedriver",
        "/usr/bin/chromedriver",
    )
    if driver is not None:
        kwargs["driver_path"] = driver
    artifacts, where = _path(config, "chrome_artifacts", "embassy_cleanup_artifacts")
    if artifacts is not None:
        artifacts = os.path.normpath(artifacts)
        try:
            os.makedirs(artifacts, exist_ok=True)
        except OSError as err:
            raise pytest.UsageError(
                f"cannot use the artifacts dir {artifacts!r} from {where}: {err.strerror or err}; "
                "give a directory that exists or can be created"
            ) from err
    return Settings(
        session_kwargs=kwargs,
        leak_check=bool(check),
        leak_keep=bool(keep),
        leak_grace=_seconds(
            config.getini("chrome_leak_grace"), "the ini option chrome_leak_grace", DEFAULT_GRACE
        ),
        artifacts=artifacts,
        pool_size=_pool_size(config.getini("embassy_cleanup_pool_size")),
        isolation=_isolation(*_pick(config, "chrome_isolation", "embassy_cleanup_isolation")),
    )


_SETTINGS = pytest.StashKey[Settings]()
#: The drivers a test holds from our fixtures, for its failure artifacts.
_HELD = pytest.StashKey[list["Held"]]()
#: How each browser (by WebDriver session id) gives its console: see Console.
_CONSOLES = pytest.StashKey[dict[str, "Console"]]()
_LEAK_CHECK_NAME = "embassy_cleanup-leak-check"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "embassy_cleanup(**options): ChromeUltraAggressiveCleanup options for the chrome fixtures",
    )
    settings = read_settings(config)
    config.stash[_SETTINGS] = settings
    config.stash[_CONSOLES] = {}
    if settings.leak_check:  # off by default: then no hook of the check is even registered
        config.pluginmanager.register(LeakCheck(settings), _LEAK_CHECK_NAME)


# -- fixtures -----------------------------------------------------------------
def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("embassy_cleanup"))):
        kwargs.update(mark.kwargs)
    return kwargs


def _with_console_log(kwargs: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """With artifacts on: ``options=`` (the test's own, copied, or a new one)
    also asks chromedriver to keep every console entry (``goog:loggingPrefs``)."""
    if settings.artifacts is None:
        return kwargs
    options = kwargs.get("options")
    options = copy.deepcopy(options) if options is not None else ChromeOptions()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return {**kwargs, "options": options}


@pytest.fixture
def chrome_session(request: pytest.FixtureRequest) -> Iterator[ChromeUltraAggressiveCleanup]:
    """A started ChromeUltraAggressiveCleanup; torn down after the test, which
    fails if the teardown report is not ok."""
    settings = request.config.stash[_SETTINGS]
    kwargs = _with_console_log({**settings.session_kwargs, **_marker_options(request)}, settings)
    cleanup = ChromeUltraAggressiveCleanup(**kwargs)
    driver = cleanup.start()
    try:
        _hold(request, "chrome_driver", driver)
        yield cleanup
    finally:
        report = cleanup.close()
        if not report.ok:
            pytest.fail(f"embassy_cleanup teardown left leftovers:\n{report}", pytrace=False)


@pytest.fixture
def chrome_driver(chrome_session: ChromeUltraAggressiveCleanup) -> WebDriver:
    """A Selenium Chrome WebDriver inside ChromeUltraAggressiveCleanup."""
    driver = chrome_session.driver
    assert driver is not None  # chrome_session started it
    return driver


@pytest.fixture(scope="session")
def chrome_pool(request: pytest.FixtureRequest) -> Iterator[ChromePool]:
    """A ChromePool for the whole run, one per pytest-xdist worker (each
    worker is its own process, and session fixtures are per process).

    Its browsers start on first checkout and are reused across tests.  Each
    checkout is a fresh browser context of a shared browser, removed and
    verified gone when it comes back; with ``--chrome-isolation=browser`` it
    is a whole browser that the pool resets when it comes back (one window,
    ``about:blank``, cookies and cache cleared).  Closed at the end of the run,
    which fails the last test's teardown if a browser did not tear down clean."""
    config = request.config
    settings = config.stash[_SETTINGS]
    kwargs = _with_console_log(dict(settings.session_kwargs), settings)
    leak_check = config.pluginmanager.get_plugin(_LEAK_CHECK_NAME)
    if isinstance(leak_check, LeakCheck):
        # The browsers start lazily, during the first test that checks one
        # out: mark them as the pool's, or that test would be blamed for them.
        kwargs["env"] = {TEST_MARKER: leak_check.fixture_marker("session", "chrome_pool")}
    # evict: a test whose marker asks for other options replaces an idle browser
    # instead of waiting for one when the pool is full.
    pool = ChromePool(max_size=settings.pool_size, on_full="evict", isolation=settings.isolation, **kwargs)
    try:
        yield pool
    finally:
        bad = [r for r in pool.close() if not r.ok]
        if bad:
            text = "\n".join(str(r) for r in bad)
            pytest.fail(f"embassy_cleanup: chrome_pool teardown left leftovers:\n{text}", pytrace=False)


@pytest.fixture
def pooled_driver(request: pytest.FixtureRequest, chrome_pool: ChromePool) -> Iterator[WebDriver]:
    """A driver checked out of ``chrome_pool`` for this test: a fresh browser
    context that is removed after the test, or with
    ``--chrome-isolation=browser`` a browser that goes back and is reset.  An
    ``embassy_cleanup`` marker's options select a browser started with them
    (browsers are shared only between tests with the same options)."""
    settings = request.config.stash[_SETTINGS]
    overrides = _marker_options(request)
    if "options" in overrides:
        overrides = _with_console_log(overrides, settings)
    if "env" in overrides:
        leak_check = request.config.pluginmanager.get_plugin(_LEAK_CHECK_NAME)
        if isinstance(leak_check, LeakCheck):
            marker = leak_check.fixture_marker("session", "chrome_pool")
            overrides["env"] = {**overrides["env"], TEST_MARKER: marker}
    with chrome_pool.session(**overrides) as driver:
        _hold(request, "pooled_driver", driver)
        yield driver


# -- failure artifacts ----------------------------------------------------------
@dataclass
class Held:
    """A driver a test holds from one of our fixtures."""

    fixture: str
    driver: Any
    console: Console | None


#: Records console calls in the page when chromedriver keeps only warnings and errors.
CONSOLE_HOOK = """
(() => {
  if (window.__embassyCleanupConsole) return;
  const out = (window.__embassyCleanupConsole = []);
  const text = (a) => {
    if (typeof a === "string") return a;
    try { return JSON.stringify(a); } catch (e) { return String(a); }
  };
  for (const level of ["debug", "log", "info", "warn", "error"]) {
    const original = console[level];
    console[level] = function (...args) {
      out.push({level: level, message: args.map(text).join(" "), timestamp: Date.now()});
      return original.apply(this, args);
    };
  }
  window.addEventListener("error", (e) =>
    out.push({level: "error", message: "uncaught " + (e.message || String(e)), timestamp: Date.now()}));
  window.addEventListener("unhandledrejection", (e) =>
    out.push({level: "error", message: "unhandled rejection " + text(e.reason), timestamp: Date.now()}));
})();
"""
_PROBE = "embassy_cleanup: console log probe"


@dataclass
class Console:
    """How one browser gives its console.  ``full``: ``get_log("browser")``
    has every entry (``goog:loggingPrefs`` reached the session).  Otherwise
    chromedriver keeps only warnings and errors, and ``hooked`` says whether
    :data:`CONSOLE_HOOK` runs in each new document (through CDP)."""

    full: bool
    hooked: bool
    note: str = ""


def _prepare_console(config: pytest.Config, driver: Any) -> Console | None:
    """Find out (once per browser) how its console can be read, and empty
    ``get_log``'s buffer, which a pooled browser carries over from the
    previous test."""
    consoles = config.stash[_CONSOLES]
    known = consoles.get(driver.session_id)
    try:
        if known is None:
            driver.execute_script("console.info(arguments[0])", _PROBE)
        entries = driver.get_log("browser")
    except Exception as err:
        log.warning("chrome artifacts: cannot read the browser console: %r", err)
        return None
    if known is not None:
        return known
    if any(_PROBE in str(e.get("message", "")) for e in entries):
        known = Console(full=True, hooked=False)
    else:
        known = Console(full=False, hooked=False)
        cdp = getattr(driver, "execute_cdp_cmd", None)
        try:
            if cdp is None:
                raise AttributeError("a remote driver has no execute_cdp_cmd")
            cdp("Page.addScriptToEvaluateOnNewDocument", {"source": CONSOLE_HOOK})
            driver.execute_script(CONSOLE_HOOK)  # the page already open
            known.hooked = True
        except Exception as err:
            known.note = f"the console hook could not be installed: {err!r}"
            log.warning("chrome artifacts: %s", known.note)
    consoles[driver.session_id] = known
    return known


def _hold(request: pytest.FixtureRequest, fixture: str, driver: Any) -> None:
    config = request.config
    console = _prepare_console(config, driver) if config.stash[_SETTINGS].artifacts else None
    request.node.stash.setdefault(_HELD, []).append(Held(fixture, driver, console))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 160


def artifact_stem(nodeid: str) -> str:
    """A file name for a test: its nodeid with ``::`` as ``__`` and every run
    of other characters outside ``[A-Za-z0-9._-]`` as ``_``; a long one is
    cut and ends in a hash of the whole nodeid, so names stay unique."""
    stem = _UNSAFE.sub("_", nodeid.replace("::", "__")).strip("_.") or "test"
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha1(nodeid.encode("utf-8")).hexdigest()[:10]
        stem = f"{stem[: _MAX_STEM - 11]}-{digest}"
    return stem


def _entry_line(entry: dict[str, Any]) -> str:
    try:
        ts = float(entry.get("timestamp", 0)) / 1000
        when = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        when = "?"
    return f"{when} {str(entry.get('level', '?')).upper()} {entry.get('message', '')}"


def console_text(held: Held) -> str:
    """The console log file's text: every ``get_log("browser")`` entry, and
    when those are only the warnings and errors, also what the console hook
    saw."""
    driver, console = held.driver, held.console
    lines = []
    entries = driver.get_log("browser")
    if console is not None and console.full:
        lines.append('# driver.get_log("browser"): every console entry since the test got the driver')
    else:
        lines.append(
            '# driver.get_log("browser"): warnings and errors only (chromedriver\'s default: '
            "goog:loggingPrefs did not reach the session)"
        )
    lines += [_entry_line(e) for e in entries]
    if console is not None and not console.full:
        if console.hooked:
            hooked = driver.execute_script("return window.__embassyCleanupConsole || []")
            lines.append("# console calls and uncaught errors in the current page (embassy_cleanup's hook)")
            lines += [_entry_line(e) for e in hooked]
        else:
            lines.append(f"# no console hook: {console.note}")
    return "\n".join(lines) + "\n"


def save_artifacts(directory: str, nodeid: str, held: list[Held]) -> list[str]:
    """Save each held driver's screenshot, page source and console log;
    return one line per file (or per failure to save one)."""
    out = []
    stem = artifact_stem(nodeid)
    for n, h in enumerate(held):
        base = os.path.join(directory, stem if len(held) == 1 else f"{stem}-{n + 1}-{h.fixture}")
        steps = (
            ("screenshot", ".png", lambda d=h.driver: d.get_screenshot_as_png()),
            ("page source", ".html", lambda d=h.driver: d.page_source.encode("utf-8")),
            ("console log", ".console.log", lambda h=h: console_text(h).encode("utf-8")),
        )
        for what, ext, read in steps:
            try:
                data = read()
                with open(base + ext, "wb") as fh:
                    fh.write(data)
                out.append(f"{what}: {base + ext}")
            except Exception as err:  # a crashed browser must not hide the test's own failure
                first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                out.append(f"{what}: not saved ({type(err).__name__}: {first})")
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On a failed setup or call, while the fixtures still run: save the
    artifacts of the drivers the test holds."""
    outcome = yield
    if call.when == "teardown":
        if _HELD in item.stash:
            del item.stash[_HELD]  # the drivers are gone: do not keep them alive with the item
        return
    report = outcome.get_result()
    held = item.stash.get(_HELD, None)
    directory = item.config.stash[_SETTINGS].artifacts
    if not report.failed or not held or directory is None:
        return
    lines = save_artifacts(directory, item.nodeid, held)
    report.sections.append(("chrome artifacts", "\n".join(lines)))


# -- the leak check -----------------------------------------------------------
@dataclass(frozen=True)
class Leak:
    """One Chrome-family process a test left running."""

    pid: int
    create_time: float
    name: str
    how: str  # "marker" (EMBASSY_CLEANUP_TEST) or "descendant" (of the test process)
    user_data_dir: str | None


@dataclass(frozen=True)
class LeakedDir:
    path: str
    kind: str  # "chromedriver temp profile", "embassy_cleanup session dir", "singleton dir", "kept"


def _marker_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(TEST_MARKER)
    except Exception:  # gone, denied, or an environ area Chrome rewrote with its title
        return None


def find_leaks(marker: str, started: float, me: int | None = None) -> list[Leak]:
    """Chrome-family processes of this user that the test marked ``marker``
    spawned: carrying the marker, or born during the test under a process
    that does (or under this process, with no other test's marker between).
    Names only classify what is already the test's; they never select."""
    me = os.getpid() if me is None else me
    table: dict[int, tuple[psutil.Process, int, float, str]] = {}
    for proc in psutil.process_iter(["ppid", "create_time", "name", "status"]):
        info = proc.info
        if info["create_time"] is None or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if proc.pid != me and not _platform.same_user(proc):
            continue
        table[proc.pid] = (proc, info["ppid"] or 0, info["create_time"], info["name"] or "?")
    verdicts: dict[int, str | None] = {}

    def verdict(pid: int) -> str | None:
        """How ``pid`` is the test's ("marker", "descendant") or None."""
        chain: list[int] = []
        cur: int | None = pid
        found: str | None = None
        while cur is not None:
            if cur in verdicts:
                found = verdicts[cur]
                break
            if cur == me:
                found = "descendant"
                break
            entry = table.get(cur)
            if entry is None or entry[2] + _BORN_SLACK_S < started:
                break  # not ours, or born before the test: cannot be the test's
            chain.append(cur)
            value = _marker_of(entry[0])
            if value is not None:
                found = "marker" if value == marker else None
                break
            cur = entry[1] if entry[1] != cur else None
        for step in chain:
            verdicts[step] = found
        return found

    leaks = []
    for pid, (proc, _ppid, ctime, name) in table.items():
        if pid == me or ctime + _BORN_SLACK_S < started or not is_chrome_family(name):
            continue
        how = verdict(pid)
        if how is None:
            continue
        udd = None
        try:
            for arg in proc.cmdline():
                m = _USER_DATA_DIR.match(arg)
                if m:
                    udd = m.group(1)
        except psutil.Error:
            pass
        leaks.append(Leak(pid, ctime, name, how, udd))
    return sorted(leaks, key=lambda lk: lk.pid)


def dirs_of(leaks: list[Leak]) -> list[LeakedDir]:
    """The dirs the leaked processes use, and whether the test made them:
    chromedriver's temp profiles, our session dirs and Chromium's singleton
    dirs are disposable; any other ``--user-data-dir`` was chosen and is kept."""
    out: dict[str, LeakedDir] = {}
    for lk in leaks:
        if lk.user_data_dir is None:
            continue
        path = os.path.abspath(lk.user_data_dir)
        session = _SESSION_ROOT.match(path)
        if session:
            out.setdefault(session.group(1), LeakedDir(session.group(1), "embassy_cleanup session dir"))
            continue
        kind = "chromedriver temp profile" if profile_origin(path, {}) == "chromedriver" else "kept"
        out.setdefault(path, LeakedDir(path, kind))
        try:
            link = os.readlink(os.path.join(path, "SingletonSocket"))
            single = os.path.dirname(link)
            if SINGLETON_DIR.match(os.path.basename(single)):
                out.setdefault(single, LeakedDir(single, "singleton dir"))
        except OSError:
            pass
    return [d for d in out.values() if os.path.lexists(d.path)]


def stray_dirs(test_tmp: str, known: list[LeakedDir]) -> list[LeakedDir]:
    """chromedriver temp profiles left in the test's own ``TMPDIR`` with no
    process of the test using them (a browser that crashed or was killed,
    chromedriver SIGKILLed).  Chromium's singleton dirs there, which a clean
    ``quit()`` leaves too, are removed quietly: they are Chromium's litter,
    not the test's fault."""
    seen = {d.path for d in known}
    out = []
    try:
        names = sorted(os.listdir(test_tmp))
    except OSError:
        return []
    for name in names:
        path = os.path.join(test_tmp, name)
        if path in seen or not os.path.isdir(path) or os.path.islink(path):
            continue
        if CHROMEDRIVER_PROFILE.match(name):
            out.append(LeakedDir(path, "chromedriver temp profile, no process left"))
        elif SINGLETON_DIR.match(name):
            remove_singleton_dir(path)
    return out


def clean_leaks(leaks: list[Leak], dirs: list[LeakedDir]) -> list[str]:
    """SIGKILL the leaked processes (identity-checked), reap our children
    among them, remove the disposable dirs; return problems."""
    problems = []
    for lk in leaks:
        _platform.signal_process(lk.pid, lk.create_time, force=True)
    still = _platform.wait_gone([(lk.pid, lk.create_time) for lk in leaks], 5.0)
    problems += [f"pid {pid} survived SIGKILL" for pid in sorted(still)]
    me = os.getpid()
    for lk in leaks:
        try:
            proc = psutil.Process(lk.pid)
            if proc.ppid() == me and abs(proc.create_time() - lk.create_time) < 0.01:
                _platform.reap_child(lk.pid)
        except psutil.Error:
            continue
    for d in dirs:
        if d.kind == "singleton dir":  # only if it holds nothing but Chromium's singleton files
            err = remove_singleton_dir(d.path)[1]
        elif d.kind != "kept":
            err = remove_tree(d.path)
        else:
            err = None
        if err is not None:
            problems.append(err)
    return problems


def describe(
    nodeid: str, leaks: list[Leak], dirs: list[LeakedDir], cleaned: bool, problems: list[str]
) -> str:
    """The failure text: what was left, and what was done about it."""
    removable = [d for d in dirs if d.kind != "kept"]
    lines = [
        f"{LEAK_HEADLINE}: {nodeid} left {len(leaks)} Chrome process(es) and {len(removable)} dir(s) "
        "it started:"
    ]
    for lk in leaks:
        via = "carries " + TEST_MARKER if lk.how == "marker" else "descends from the test process"
        udd = f", --user-data-dir={lk.user_data_dir}" if lk.user_data_dir else ""
        lines.append(f"  pid {lk.pid} {lk.name} ({via}{udd})")
    for d in dirs:
        lines.append(f"  dir {d.path} ({d.kind if d.kind != 'kept' else 'chosen by the test: not removed'})")
    if cleaned:
        lines.append(
            "The leak check killed them and removed those dirs (chrome_leak_keep = true keeps them)."
        )
    else:
        lines.append("They were left in place (chrome_leak_keep).")
    lines += [f"  cleanup problem: {p}" for p in problems]
    lines.append(
        "Quit every driver (driver.quit() in a finally block), or use the chrome_driver fixture, "
        "ChromeUltraAggressiveCleanup or embassy_cleanup.adopt(driver)."
    )
    return "\n".join(lines)


class LeakCheck:
    """The per-test marker and the check after teardown (registered only when on)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.count = 0
        self.current: tuple[str, float] | None = None
        self.test_tmp: str | None = None  # this test's TMPDIR
        self.outer_tmp: str | None = None  # TMPDIR outside the tests
        self.keep_tmp = False
        # Python's own temp dir is read (and cached) now, so that neither the
        # tests' tempfile calls nor pytest's tmp_path follow the per-test TMPDIR.
        self.base = tempfile.mkdtemp(prefix="elc-", dir=tempfile.gettempdir())

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def fixture_marker(self, scope: str, name: str) -> str:
        """The marker for what a fixture of ``scope`` starts: never a test's."""
        return f"{self.run}:{scope}:{name}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        self.count += 1
        marker = f"{self.run}:{self.count}"
        self.current = (marker, time.time())
        old = os.environ.get(TEST_MARKER)
        os.environ[TEST_MARKER] = marker
        self.outer_tmp = os.environ.get("TMPDIR")
        self.test_tmp = os.path.join(self.base, str(self.count))
        self.keep_tmp = False
        os.mkdir(self.test_tmp)
        os.environ["TMPDIR"] = self.test_tmp
        try:
            yield
        finally:
            self.current = None
            _restore("TMPDIR", self.outer_tmp)
            _restore(TEST_MARKER, old)
            if not self.keep_tmp:
                shutil.rmtree(self.test_tmp, ignore_errors=True)
            self.test_tmp = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Iterator[None]:
        """What a module-, class- or session-scoped fixture starts outlives the
        test that first asked for it by design: mark it as the fixture's."""
        if fixturedef.scope == "function" or self.current is None:
            yield
            return
        saved = os.environ.get(TEST_MARKER)
        saved_tmp = os.environ.get("TMPDIR")
        os.environ[TEST_MARKER] = self.fixture_marker(fixturedef.scope, fixturedef.argname)
        _restore("TMPDIR", self.outer_tmp)  # its temp files outlive this test
        try:
            yield
        finally:
            _restore(TEST_MARKER, saved)
            _restore("TMPDIR", saved_tmp)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        if call.when != "teardown" or self.current is None:
            return
        marker, started = self.current
        report = outcome.get_result()
        leaks = find_leaks(marker, started)
        if leaks:  # quit() returned; its helpers may still be exiting: wait on them, then look again
            _platform.wait_gone([(lk.pid, lk.create_time) for lk in leaks], self.settings.leak_grace)
            leaks = find_leaks(marker, started)
        dirs = dirs_of(leaks)
        if self.test_tmp is not None:
            dirs += stray_dirs(self.test_tmp, dirs)
        if not leaks and not dirs:
            return
        self.keep_tmp = self.settings.leak_keep
        problems = [] if self.settings.leak_keep else clean_leaks(leaks, dirs)
        text = describe(item.nodeid, leaks, dirs, not self.settings.leak_keep, problems)
        log.warning("%s", text)
        if report.longrepr:
            text = f"{report.longrepr}\n\n{text}"
        report.outcome = "failed"
        report.longrepr = text


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
