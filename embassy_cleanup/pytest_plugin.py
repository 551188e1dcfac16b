"""pytest plugin (entry point ``pytest11``): Chrome fixtures and an opt-in leak check.

Fixtures: ``chrome_session`` (a started :class:`ChromeUltraAggressiveCleanup`)
and ``chrome_driver`` (its WebDriver).  Their options come from the command
line (``--chrome-headless``/``--chrome-headed``, ``--chrome-preset``,
``--chrome-cleanup-timeout``), else from the ini file
(``embassy_cleanup_headless``, ``embassy_cleanup_preset``,
``embassy_cleanup_cleanup_timeout``), and a test may override any
constructor option with ``@pytest.mark.embassy_cleanup(preset="minimal")``.

The leak check is off unless ``--chrome-leak-check`` or ``chrome_leak_check =
true`` turns it on.  Then every test runs with ``EMBASSY_CLEANUP_TEST=<run>:<n>``
in ``os.environ``, so everything it spawns inherits the marker, and after the
test's teardown the Chrome-family processes that carry it (or descend from
this process, born during the test) must be gone.  Each test also runs with
``TMPDIR`` pointing to a temp dir of its own, where chromedriver puts its
temp profiles: a profile left there is the test's even when its processes
died.  Otherwise the test gets an error at teardown naming them and their
dirs, and they are killed (by PID, identity-checked) and their dirs removed,
unless ``chrome_leak_keep``.  See ``docs/pytest.md``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Generator, Iterator

import psutil
import pytest

from . import _platform
from ._dirs import CHROMEDRIVER_PROFILE, SINGLETON_DIR, profile_origin, remove_singleton_dir, remove_tree
from ._inventory import is_chrome_family
from ._ownership import ROOT_PREFIX
from ._presets import DEFAULT_PRESET, PRESETS
from ._session import ChromeUltraAggressiveCleanup

log = logging.getLogger("embassy_cleanup")

#: The environment variable that marks what one test spawned.
TEST_MARKER = "EMBASSY_CLEANUP_TEST"
#: The first words of every leak-check failure (tests match on it).
LEAK_HEADLINE = "chrome leak check"
#: Default seconds a test's Chrome may take to exit after its teardown.
DEFAULT_GRACE = 2.0

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
        help="chrome_driver runs headless (ini: embassy_cleanup_headless, default true)",
    )
    group.addoption(
        "--chrome-headed",
        dest="chrome_headless",
        action="store_false",
        help="chrome_driver runs with a window",
    )
    group.addoption(
        "--chrome-preset",
        default=None,
        metavar="NAME",
        help=f"chrome_driver's footprint preset: {', '.join(PRESETS)} (ini: embassy_cleanup_preset)",
    )
    group.addoption(
        "--chrome-cleanup-timeout",
        default=None,
        metavar="SECONDS",
        help="chrome_driver's teardown budget (ini: embassy_cleanup_cleanup_timeout, default 10)",
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
    parser.addini("embassy_cleanup_headless", "chrome_driver runs headless", type="bool", default=True)
    parser.addini("embassy_cleanup_preset", f"chrome_driver's preset ({DEFAULT_PRESET})", default="")
    parser.addini("embassy_cleanup_cleanup_timeout", "chrome_driver's teardown budget in seconds", default="")


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


@dataclass(frozen=True)
class Settings:
    """The plugin's settings, validated once at configure time."""

    session_kwargs: dict[str, Any] = field(default_factory=dict)
    leak_check: bool = False
    leak_keep: bool = False
    leak_grace: float = DEFAULT_GRACE


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
    return Settings(
        session_kwargs={
            "headless": bool(headless),
            "preset": preset,
            "cleanup_timeout": _seconds(timeout, where, 10.0),
        },
        leak_check=bool(check),
        leak_keep=bool(keep),
        leak_grace=_seconds(
            config.getini("chrome_leak_grace"), "the ini option chrome_leak_grace", DEFAULT_GRACE
        ),
    )


_SETTINGS = pytest.StashKey[Settings]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "embassy_cleanup(**options): ChromeUltraAggressiveCleanup options for the chrome_driver fixture",
    )
    settings = read_settings(config)
    config.stash[_SETTINGS] = settings
    if settings.leak_check:  # off by default: then no hook of the check is even registered
        config.pluginmanager.register(LeakCheck(settings), "embassy_cleanup-leak-check")


# -- fixtures -----------------------------------------------------------------
@pytest.fixture
def chrome_session(request: pytest.FixtureRequest) -> Iterator[ChromeUltraAggressiveCleanup]:
    """A started ChromeUltraAggressiveCleanup; torn down after the test, which
    fails if the teardown report is not ok."""
    kwargs = dict(request.config.stash[_SETTINGS].session_kwargs)
    for mark in reversed(list(request.node.iter_markers("embassy_cleanup"))):
        kwargs.update(mark.kwargs)
    cleanup = ChromeUltraAggressiveCleanup(**kwargs)
    cleanup.start()
    try:
        yield cleanup
    finally:
        report = cleanup.close()
        if not report.ok:
            pytest.fail(f"embassy_cleanup teardown left leftovers:\n{report}", pytrace=False)


@pytest.fixture
def chrome_driver(chrome_session: ChromeUltraAggressiveCleanup) -> Any:
    """A Selenium Chrome WebDriver inside ChromeUltraAggressiveCleanup."""
    return chrome_session.driver


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
        os.environ[TEST_MARKER] = f"{self.run}:{fixturedef.scope}:{fixturedef.argname}"
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
