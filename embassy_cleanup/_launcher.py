"""Starting Chrome: driver and binary resolution, the session root, the flags.

The launcher creates the session root (mode 0700, ``embassy_cleanup-<id>``)
and points everything Chrome writes into it: the profile, ``TMPDIR`` (where
Chromium puts its ``org.chromium.Chromium.*`` singleton and ``scoped_dir``
litter) and ``XDG_CONFIG_HOME``/``XDG_CACHE_HOME`` (crashpad's database,
which would otherwise grow in ``~/.config/chromium/Crash Reports``).
chromedriver is started in a new session with ``EMBASSY_CLEANUP_SESSION`` in
its environment, and is recorded the moment it exists.

The whole start is bounded by ``start_timeout`` (:mod:`._clock`): a
LaunchError names what was not ready (``component``: the driver did not
listen, the browser did not open DevTools, the shell or Xvfb did not come
up) and quotes the last lines chromedriver and the browser wrote
(:mod:`._evidence`).  ``options=`` reaches the session whole
(:func:`copy_user_options`).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common import utils
from selenium.webdriver.common.selenium_manager import SeleniumManager

from . import _platform
from ._clock import Budget, Expired, run_bounded
from ._dirs import free_space_note
from ._errors import ConfigError, DriverNotFoundError, LaunchError
from ._evidence import (
    OUTPUT_FILE,
    TAIL_LINES,
    OutputCapture,
    driver_log_args,
    driver_log_path,
    hint_for,
    not_chrome_hint,
    tail_of_file,
)
from ._options import DEFAULT_START_TIMEOUT, SessionOptions
from ._ownership import ENV_MARKER, OWNER_MARKER, ROOT_PREFIX, owner_marker
from ._presets import SHELL_FALLBACK, SHELL_PRESETS, merge_flags, preset_flags
from ._xvfb import start_xvfb

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.chrome.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")

#: Called with each process the session starts, the moment it exists.
_OnSpawn = Callable[[subprocess.Popen[bytes]], Any]

DRIVER_ENV = "CHROMEDRIVER_PATH"
BINARY_ENV = "CHROME_BINARY"
SHELL_ENV = "CHROME_HEADLESS_SHELL"
#: Where the headless shell is looked for, before PATH: Debian's real binary
#: (``/usr/bin/chromium-headless-shell`` is an sh wrapper that does not exec,
#: so the shell would run as a child of sh), and Chrome for Testing's.
SHELL_PATHS = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/opt/google/chrome-headless-shell/chrome-headless-shell",
)
SHELL_NAMES = ("chrome-headless-shell", "chromium-headless-shell")
#: The switches chromedriver 156 adds when it launches a browser itself
#: (read off the browser's command line), minus its logging ones: the
#: headless shell, which the session launches, gets them too, so a page
#: behaves the same under both (popups allowed, no hang monitor,
#: ``navigator.webdriver`` set).  Chromedriver's ``--disable-features`` list
#: is merged with ours by ``merge_flags``, as chromedriver itself does.
CHROMEDRIVER_DEFAULT_FLAGS = (
    "--allow-pre-commit-input",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-client-side-phishing-detection",
    "--disable-features=IgnoreDuplicateNavs,Prewarm",
    "--disable-hang-monitor",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--enable-automation",
    "--no-service-autorun",
    "--test-type=webdriver",
    "--use-mock-keychain",
)
_BINARY_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# -- resolution ---------------------------------------------------------
def _check_executable(path: str, source: str, what: str, fix: str) -> str:
    if not os.path.exists(path):
        raise DriverNotFoundError(
            f"{what} not found at {path!r} (from {source}); {fix}", tried=[(source, "missing")]
        )
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise DriverNotFoundError(
            f"{what} at {path!r} (from {source}) is not an executable file; {fix}",
            tried=[(source, "not executable")],
        )
    return path


def resolve_driver(explicit: str | None, binary: str | None = None) -> tuple[str, str]:
    """Find chromedriver; return ``(path, where it came from)``.

    Order: ``driver_path=``, ``$CHROMEDRIVER_PATH``, ``chromedriver`` on
    ``PATH``, Selenium Manager, webdriver-manager (when installed; it is asked
    for the driver of ``binary``'s version, see
    :func:`driver_from_webdriver_manager`).  An explicit path or environment
    variable that is wrong is an error at once: silently falling back would
    run a driver the user did not ask for.
    """
    fix = "install chromium-driver (Debian) or pass driver_path="
    if explicit is not None:
        return _check_executable(explicit, "driver_path=", "chromedriver", fix), "driver_path="
    env_path = os.environ.get(DRIVER_ENV)
    if env_path:
        source = f"${DRIVER_ENV}"
        return _check_executable(env_path, source, "chromedriver", fix), source

    tried: list[tuple[str, str]] = [("driver_path=", "not given"), (f"${DRIVER_ENV}", "not set")]
    on_path = shutil.which("chromedriver")
    if on_path:
        return on_path, "PATH"
    tried.append(("PATH", "no chromedriver on PATH"))

    try:
        out = SeleniumManager().binary_paths(["--browser", "chrome", "--offline", "--avoid-stats"])
        path = out.get("driver_path") or ""
        if path and os.access(path, os.X_OK):
            return path, "Selenium Manager"
        tried.append(("Selenium Manager", f"returned {path!r}"))
    except Exception as err:  # it raises many kinds; we only report them
        tried.append(("Selenium Manager", str(err).splitlines()[0] if str(err) else repr(err)))

    wdm_path, outcome = driver_from_webdriver_manager(binary)
    if wdm_path is not None:
        return wdm_path, outcome
    tried.append(("webdriver-manager", outcome))

    raise DriverNotFoundError(f"chromedriver not found; {fix}", tried=tried)


def resolve_binary(explicit: str | None, from_options: str | None = None) -> str | None:
    """The Chrome binary: ``binary=``, the ``binary_location`` of ``options=``,
    ``$CHROME_BINARY``, then the usual names on PATH.  None lets chromedriver
    use its own default."""
    fix = "install chromium (Debian) or pass binary="
    if explicit is not None:
        return _check_executable(explicit, "binary=", "Chrome", fix)
    if from_options:
        return _check_executable(from_options, "options.binary_location", "Chrome", fix)
    env_path = os.environ.get(BINARY_ENV)
    if env_path:
        return _check_executable(env_path, f"${BINARY_ENV}", "Chrome", fix)
    for name in _BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# -- webdriver-manager ----------------------------------------------------
#: Seconds ``<binary> --version`` and ``<driver> --version`` may take.
VERSION_TIMEOUT = 10.0
#: webdriver-manager's browser types (``ChromeType.CHROMIUM``/``GOOGLE``) by value.
WDM_CHROMIUM = "chromium"
WDM_GOOGLE = "google-chrome"
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class BrowserVersion:
    """What ``<binary> --version`` printed.

    ``kind`` is webdriver-manager's browser type (:data:`WDM_CHROMIUM` or
    :data:`WDM_GOOGLE`); ``build`` is the first three parts of the version,
    which is what webdriver-manager matches a driver by (its own version
    probe reads three parts too); ``full`` is the whole version; ``line`` the
    line it came from."""

    kind: str
    build: str
    full: str
    line: str


def read_browser_version(binary: str) -> BrowserVersion | None:
    """Run ``binary --version`` and read which browser and version it is.

    None when it does not say (not a Chrome, it failed, it took longer than
    :data:`VERSION_TIMEOUT`), and on Windows, where ``chrome.exe --version``
    opens a browser window instead of printing (webdriver-manager then reads
    the version from the registry itself)."""
    if _platform.PLATFORM == "windows":
        return None
    for line in _version_output(binary).splitlines():
        m = _VERSION.search(line)
        if m:
            name = line[: m.start()].lower()
            kind = WDM_CHROMIUM if "chromium" in name else WDM_GOOGLE
            return BrowserVersion(kind, ".".join(m.group(1, 2, 3)), m.group(0), line.strip())
    return None


def _major(version: str | None) -> str | None:
    m = _VERSION.search(version or "")
    return m.group(1) if m else None


def read_driver_version(path: str) -> str | None:
    """``ChromeDriver 156.0.8078.114`` from ``path --version``, or None."""
    out = _version_output(path).strip()
    return out.splitlines()[0].split(" (")[0] or None if out else None


def _version_output(path: str) -> str:
    """What ``path --version`` printed on stdout ("" when it failed); stderr
    is dropped (Debian's chromium wrapper script prints noise there)."""
    try:
        return subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=VERSION_TIMEOUT,
            check=False,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("%s --version: %r", path, err)
        return ""


class PinnedBrowserVersion:
    """webdriver-manager's ``OperationSystemManager`` with the browser version
    fixed to the one our binary reported.

    webdriver-manager would otherwise find the version itself by running
    ``chromium``/``google-chrome`` from PATH, which need not be the binary the
    session starts.  Everything else is delegated to the real manager."""

    def __init__(self, inner: Any, kind: str, build: str) -> None:
        self._inner = inner
        self._kind = kind
        self._build = build

    def get_browser_version_from_os(self, browser_type: str | None = None) -> str | None:
        if browser_type in (None, self._kind):
            return self._build
        return self._inner.get_browser_version_from_os(browser_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def driver_from_webdriver_manager(binary: str | None) -> tuple[str | None, str]:
    """Ask webdriver-manager for the chromedriver that matches ``binary``.

    The browser's kind and version come from ``binary --version``: for
    Chromium it asks with ``ChromeType.CHROMIUM``, for Google Chrome with
    ``ChromeType.GOOGLE``, and in both cases for the driver of that browser
    build (not the latest release).  Without a readable version (no binary,
    Windows, an unexpected output) it asks for webdriver-manager's default,
    the latest Google chromedriver (Chromium by type when the path says
    ``chromium``), and says so.

    Returns ``(path, source)`` when it got a driver, ``(None, reason)`` when
    not (not installed, offline, no such version); both name what was asked
    for, and both are logged.
    """
    # Imported here, not at the top: webdriver-manager is optional, and
    # importing it loads a .env file from the working directory into
    # os.environ (python-dotenv), which importing embassy_cleanup must not do.
    try:
        from webdriver_manager.chrome import ChromeDriverManager  # type: ignore[import-not-found]
        from webdriver_manager.core.os_manager import OperationSystemManager  # type: ignore[import-not-found]
    except ImportError:
        return None, "not installed"
    browser = read_browser_version(binary) if binary is not None else None
    if browser is not None:
        asked = (
            f"the chromedriver for {browser.kind} {browser.build} (from {binary} --version: {browser.line!r})"
        )
        pinned = PinnedBrowserVersion(OperationSystemManager(), browser.kind, browser.build)
        manager = ChromeDriverManager(
            chrome_type=browser.kind,
            os_system_manager=pinned,  # type: ignore[arg-type]  # duck-typed: delegates the rest
        )
    else:
        kind = WDM_CHROMIUM if binary is not None and "chromium" in os.path.basename(binary).lower() else None
        why = "no Chrome binary found" if binary is None else f"{binary} --version gave no version"
        asked = f"webdriver-manager's default chromedriver for {kind or WDM_GOOGLE} ({why})"
        manager = ChromeDriverManager(chrome_type=kind) if kind else ChromeDriverManager()
    log.info("webdriver-manager: asking for %s", asked)
    try:
        path = manager.install()
    except Exception as err:  # offline, no such version, a broken cache: report, never crash here
        text = str(err).strip()
        reason = f"asked for {asked}: {text.splitlines()[0] if text else repr(err)}"
        log.warning("webdriver-manager: %s", reason)
        return None, reason
    got = read_driver_version(path)
    log.info("webdriver-manager: got %s (%s)", path, got or "version unreadable")
    source = f"webdriver-manager, {got or 'chromedriver'} for " + (
        f"{browser.kind} {browser.build}" if browser is not None else "the default browser"
    )
    if browser is not None and _major(got) not in (None, _major(browser.build)):
        log.warning(
            "webdriver-manager returned %s (%s) for %s %s: the major versions differ and chromedriver "
            "will likely refuse the browser; clear webdriver-manager's cache (~/.wdm) or pass driver_path=",
            path,
            got,
            browser.kind,
            browser.full,
        )
    return path, source


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def resolve_headless_shell() -> str | None:
    """The headless shell binary: ``$CHROME_HEADLESS_SHELL`` (an error if it
    is wrong: the user asked for that file), then :data:`SHELL_PATHS`, then
    :data:`SHELL_NAMES` on PATH when they are real executables, not scripts.
    None when none is installed (the caller falls back)."""
    env_path = os.environ.get(SHELL_ENV)
    if env_path:
        return _check_executable(
            env_path, f"${SHELL_ENV}", "the headless shell", "install chromium-headless-shell (Debian)"
        )
    for path in SHELL_PATHS:
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    for name in SHELL_NAMES:
        found = shutil.which(name)
        if found and _is_elf(os.path.realpath(found)):
            return found
    return None


# -- the session root ---------------------------------------------------
@dataclass(frozen=True)
class SessionPaths:
    root: str
    profile: str
    tmp: str
    config: str
    cache: str


# Chrome puts its singleton socket at $TMPDIR/org.chromium.Chromium.XXXXXX/SingletonSocket.
_SINGLETON_TAIL = os.path.join("org.chromium.Chromium.XXXXXX", "SingletonSocket")


def max_temp_root_length() -> int | None:
    """The longest ``temp_root`` whose sessions can still start Chrome, or None."""
    limit = _platform.UNIX_SOCKET_PATH_MAX
    if limit is None:
        return None
    used = len(os.path.join("", f"{ROOT_PREFIX}{'0' * 12}", "tmp", _SINGLETON_TAIL)) + 1
    return limit - used


def make_session_root(temp_root: str | None, session_id: str) -> SessionPaths:
    """Create the session root (0700) and its sub-dirs; raise LaunchError
    naming the dir when it cannot be created (read-only, full, no access)."""
    base = os.path.abspath(temp_root if temp_root is not None else tempfile.gettempdir())
    source = "temp_root=" if temp_root is not None else "the system temp dir"
    longest = max_temp_root_length()
    if longest is not None and len(base) > longest:
        raise ConfigError(
            f"temp_root {base!r} is {len(base)} characters long (from {source}); Chrome's "
            f"singleton socket under it would exceed the {_platform.UNIX_SOCKET_PATH_MAX}-byte "
            f"Unix socket path limit and Chrome would exit at start; use a directory path of "
            f"at most {longest} characters",
            option="temp_root",
            value=base,
        )

    def failed(what: str, path: str, err: OSError) -> LaunchError:
        return LaunchError(
            f"cannot {what} {path!r} (from {source}): {err.strerror or err}{free_space_note(base)}; "
            "free some space or pass temp_root= a writable directory",
            path=path,
        )

    root = os.path.join(base, f"{ROOT_PREFIX}{session_id}")
    try:
        os.mkdir(root, 0o700)
    except OSError as err:
        raise failed("create the session dir in", base, err) from err
    subs = [os.path.join(root, sub) for sub in ("profile", "tmp", "config", "cache")]
    try:
        for sub in subs:
            os.mkdir(sub, 0o700)
    except OSError as err:
        shutil.rmtree(root, ignore_errors=True)
        raise failed("populate the session dir", root, err) from err
    return SessionPaths(root, *subs)


def child_env(opts: SessionOptions, session_id: str, paths: SessionPaths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(opts.env)
    env.update(
        {
            ENV_MARKER: session_id,
            OWNER_MARKER: owner_marker(),
            "TMPDIR": paths.tmp,
            "TMP": paths.tmp,
            "TEMP": paths.tmp,
            "XDG_CONFIG_HOME": paths.config,
            "XDG_CACHE_HOME": paths.cache,
        }
    )
    return env


def chrome_arguments(opts: SessionOptions, profile_dir: str, shell: bool = False) -> list[str]:
    """The full flag list for a session, in the order Chrome will see it
    (``shell``: for the headless shell, which is headless by nature and takes
    no ``--headless`` flag)."""
    auto = []
    if opts.headless and not shell:
        auto.append("--headless=new")
    if not _platform.can_use_chrome_sandbox():
        auto.append("--no-sandbox")
    if _platform.dev_shm_too_small():
        auto.append("--disable-dev-shm-usage")
    start = list(opts.options.arguments) if opts.options is not None else []
    preset = preset_flags(opts.preset)
    if wants_extensions(opts):
        # The preset's --disable-extensions would make Chrome ignore the
        # extensions of options= without a word (a measured "None" instead
        # of the content script's mark): the user's explicit choice wins.
        preset = [f for f in preset if f != "--disable-extensions"]
    return merge_flags(start, preset, auto, list(opts.extra_args), [f"--user-data-dir={profile_dir}"])


def wants_extensions(opts: SessionOptions) -> bool:
    """Whether ``options=`` or ``extra_args`` load an extension."""
    args = list(opts.extra_args) + (list(opts.options.arguments) if opts.options is not None else [])
    has_files = opts.options is not None and bool(opts.options.extensions)
    return has_files or any(a.startswith("--load-extension=") for a in args)


# -- what the user set on options= ---------------------------------------------------
#: Keys of ``goog:chromeOptions`` the session sets itself: the flags are merged
#: by :func:`chrome_arguments`, the binary is resolved by :func:`resolve_binary`.
_MERGED_CHROME_KEYS = frozenset({"args", "binary"})


def copy_user_options(target: Any, user: Any, *, chrome_options: bool = True) -> Any:
    """Copy onto ``target`` (a fresh ChromeOptions) everything set on ``user``.

    Every capability (``acceptInsecureCerts``, ``goog:loggingPrefs``,
    ``unhandledPromptBehavior``, ``pageLoadStrategy``, ``timeouts``,
    ``proxy`` ...) and, with ``chrome_options``, every ``goog:chromeOptions``
    entry (prefs, experimental options, encoded extensions, mobile
    emulation) but the flags and the binary, which the caller sets.  Read
    through ``to_capabilities()``, Selenium's own serialisation, so a
    setting added in a later Selenium is carried too.
    """
    if user is None:
        return target
    caps = user.to_capabilities()
    key = getattr(user, "KEY", "goog:chromeOptions")
    for name, value in caps.items():
        if name != key:
            target.set_capability(name, value)
    if chrome_options:
        for name, value in (caps.get(key) or {}).items():
            if name == "extensions":
                for ext in value:
                    target.add_encoded_extension(ext)
            elif name not in _MERGED_CHROME_KEYS:
                target.add_experimental_option(name, value)
    return target


# -- starting -------------------------------------------------------------
#: How long ``driver.quit()`` waits for chromedriver to exit once asked (Selenium's bound).
SHUTDOWN_WAIT = 30.0


class OwnedService(Service):  # type: ignore[misc]
    """A chromedriver Service that reports its process the moment it exists,
    so a failure while waiting for it to answer still leaves it recorded,
    and that waits for it to listen only until the start's deadline."""

    on_spawn: _OnSpawn | None = None

    # chromedriver listens on the loopback address; Selenium reaches it as
    # "localhost", which needs /etc/hosts (absent in a bare chroot or a
    # minimal image: "Can not connect to the Service") and may resolve to
    # ::1 first.  The address itself needs neither.
    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_connectable(self) -> bool:
        return bool(utils.is_connectable(self.port, host="127.0.0.1"))

    def send_remote_shutdown_command(self) -> None:
        """Ask chromedriver to exit, then wait for the process to end.

        Selenium's version polls the port once a second after the request:
        whenever chromedriver closes it a moment after answering, which
        here is one ``quit()`` in two, ``quit()`` sleeps a whole second for
        nothing.  Waiting on the process ends as soon as it does; the bound
        is Selenium's, and ``stop()`` terminates what outlives it."""
        try:
            urllib.request.urlopen(f"{self.service_url}/shutdown", timeout=10).close()  # noqa: S310
        except (OSError, http.client.HTTPException):  # refused, timed out, cut off: gone or deaf
            return
        try:
            self.process.wait(SHUTDOWN_WAIT)
        except subprocess.TimeoutExpired:
            log.debug("chromedriver %s still runs %s s after /shutdown", self.process.pid, SHUTDOWN_WAIT)

    def start(self) -> None:
        """No-op once :meth:`start_within` ran (``webdriver.Chrome`` calls it)."""
        if getattr(self, "process", None) is None:
            self.start_within(Budget(DEFAULT_START_TIMEOUT))

    def start_within(self, deadline: Budget) -> int | None:
        """Spawn chromedriver and wait until it listens; return None, or
        its exit status when it exited first.  Raises :class:`Expired`
        at ``deadline``.  Selenium's own wait is 70 polls (~33 s), and
        takes an exit status of 0 for "still running"."""
        try:
            self._start_process(self.path)
        finally:
            proc = getattr(self, "process", None)
            if proc is not None and self.on_spawn is not None:
                self.on_spawn(proc)
                self.on_spawn = None
        delay = 0.005
        while True:
            code = self.process.poll()
            if code is not None:
                return int(code)
            if self.is_connectable():
                return None
            if deadline.expired():
                raise Expired("chromedriver")
            time.sleep(min(delay, deadline.remaining()))
            delay = min(delay * 2, 0.1)


def webdriver_reason(err: Any) -> str:
    """The reason in a WebDriverException, in one line.

    chromedriver's first line is often just "session not created"; the reason
    follows ("from unknown error: ..."): keep both, drop the documentation
    link and any stack trace."""
    lines = [ln.strip() for ln in (getattr(err, "msg", None) or str(err)).splitlines() if ln.strip()]
    return "; ".join(ln.split("; For documentation")[0] for ln in lines[:2]) or repr(err)


def _close_connection(driver: Any) -> None:
    """``on_late`` for a new-session call given up on: the session's processes
    are being killed, so only the HTTP connection is left to close."""
    driver.command_executor.close()


@dataclass
class _Start:
    """One start in progress: what every step needs to wait and to report."""

    opts: SessionOptions
    session_id: str
    paths: SessionPaths
    driver_path: str
    deadline: Budget
    capture: OutputCapture
    driver_log: str | None

    def output(self) -> list[str]:
        """The last lines chromedriver and the browser wrote (from the verbose
        log when one is kept: chromedriver then writes the browser's stderr there)."""
        lines = self.capture.lines()
        if self.driver_log:
            lines = (lines + tail_of_file(self.driver_log))[-TAIL_LINES:]
        return lines

    def bound(self) -> str:
        return f"{self.deadline.seconds:g} s (start_timeout={self.deadline.seconds:g})"

    def error(
        self,
        msg: str,
        component: str,
        path: str | None,
        reason: str = "",
        fallback_hint: Callable[[list[str]], str | None] | None = None,
    ) -> LaunchError:
        """A LaunchError carrying the output and, for a known cause, a hint."""
        output = self.output()
        env_display = self.opts.env.get("DISPLAY", os.environ.get("DISPLAY"))
        hint = hint_for(
            "\n".join([reason, self.capture.text(), *output]),
            headless=self.opts.headless,
            display=env_display,
        )
        if hint is None and fallback_hint is not None:
            hint = fallback_hint(output)
        if self.driver_log:
            msg += f"; chromedriver's verbose log: {self.driver_log}"
        return LaunchError(msg, path=path, component=component, output=output, hint=hint)

    def start_service(self, on_spawn: _OnSpawn) -> OwnedService:
        """Start chromedriver, writing into the capture; return its Service once
        it listens.  LaunchError naming it when it exits or does not listen in time."""
        service = OwnedService(
            executable_path=self.driver_path,
            env=child_env(self.opts, self.session_id, self.paths),
            popen_kw=_platform.new_session_popen_kw(),
            # a file object, not the int fd: Service.stop() os.close()s an int
            log_output=os.fdopen(self.capture.writer, "wb", closefd=False),
            service_args=driver_log_args(self.driver_log),
        )
        service.on_spawn = on_spawn
        where = f"127.0.0.1:{service.port}"
        try:
            code = service.start_within(self.deadline)
        except Expired:
            raise self.error(
                f"chromedriver {self.driver_path!r} did not listen on {where} within {self.bound()}",
                "driver",
                self.driver_path,
                fallback_hint=self._not_chromedriver,
            ) from None
        except OSError as err:
            raise self.error(
                f"chromedriver {self.driver_path!r} did not start: {err.strerror or err}",
                "driver",
                self.driver_path,
            ) from err
        if code is not None:
            raise self.error(
                f"chromedriver {self.driver_path!r} exited with status {code} before it listened on {where}",
                "driver",
                self.driver_path,
                fallback_hint=self._not_chromedriver,
            )
        return service

    def _not_chromedriver(self, output: list[str]) -> str | None:
        if any("ChromeDriver" in ln for ln in output):
            return None
        return (
            f"{self.driver_path!r} wrote nothing chromedriver writes at start; is it chromedriver? "
            f"'{self.driver_path} --version' should print 'ChromeDriver ...'; pass driver_path= the "
            "driver (Debian: /usr/bin/chromedriver from chromium-driver)"
        )

    def new_session(self, service: Any, options: Any) -> WebDriver:
        """The WebDriver session, abandoned at the deadline (:class:`Expired`)."""
        return run_bounded(
            lambda: webdriver.Chrome(service=service, options=options),
            self.deadline,
            f"embassy-cleanup-start-{self.session_id}",
            on_late=_close_connection,
        )


def _start_chrome(start: _Start, binary: str | None, on_spawn: _OnSpawn) -> tuple[WebDriver, Any]:
    """Start chromedriver and Chrome; return ``(driver, service)``.

    Raises LaunchError with chromedriver's own words and the browser's output
    when Chrome does not start, or names what was not ready when
    ``start_timeout`` passes; the caller tears down whatever was started.
    """
    options = copy_user_options(webdriver.ChromeOptions(), start.opts.options)
    for arg in chrome_arguments(start.opts, start.paths.profile):
        options.add_argument(arg)
    if binary is not None:
        options.binary_location = binary
    shown = f"binary={options.binary_location or 'chromedriver default'!r}, driver={start.driver_path!r}"

    service = start.start_service(on_spawn)
    try:
        driver = start.new_session(service, options)
    except Expired:
        opened = read_devtools_port(start.paths.profile) is not None
        what = (
            "Chrome opened DevTools, but chromedriver did not create the session"
            if opened
            else "Chrome did not open DevTools"
        )
        raise start.error(
            f"{what} within {start.bound()} ({shown})", "browser", options.binary_location or None
        ) from None
    except WebDriverException as err:
        reason = webdriver_reason(err)
        raise start.error(
            f"Chrome did not start: {reason} ({shown}); check the binary and the flags in extra_args",
            "browser",
            options.binary_location or None,
            reason=reason,
            fallback_hint=lambda output: (
                not_chrome_hint(options.binary_location, output) if "exited" in reason else None
            ),
        ) from err
    return driver, service


def attach_driver(
    opts: SessionOptions,
    session_id: str,
    paths: SessionPaths,
    driver_path: str,
    devtools_port: int,
    on_spawn: _OnSpawn,
    bidi: bool = True,
) -> WebDriver:
    """Another chromedriver and WebDriver session on the session's running
    browser (``debuggerAddress``), started like the session's own: in its own
    process session, with the session's markers, recorded by ``on_spawn`` the
    moment it exists.  ``bidi``: with WebDriver BiDi (user contexts)."""
    options = webdriver.ChromeOptions()
    options.debugger_address = f"127.0.0.1:{devtools_port}"
    options.enable_bidi = bidi
    if opts.options is not None:
        options.page_load_strategy = opts.options.page_load_strategy
    service = OwnedService(
        executable_path=driver_path,
        env=child_env(opts, session_id, paths),
        popen_kw=_platform.new_session_popen_kw(),
    )
    service.on_spawn = on_spawn
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as err:
        raise LaunchError(
            f"chromedriver could not attach to the browser at 127.0.0.1:{devtools_port}: "
            f"{webdriver_reason(err)}; the browser may have died",
            path=driver_path,
        ) from err
    return driver


def read_devtools_port(profile_dir: str) -> int | None:
    """The DevTools port Chrome wrote into ``DevToolsActivePort``, if any."""
    try:
        with open(os.path.join(profile_dir, "DevToolsActivePort"), encoding="ascii") as fh:
            return int(fh.readline().strip())
    except (OSError, ValueError):
        return None


# -- the headless shell ------------------------------------------------------
@dataclass
class Launched:
    """What start-up produced: the driver, its service, the preset in effect
    (``"minimal"`` when ``"headless-shell"`` fell back), the DevTools port,
    and the headless shell's process when the session started one."""

    driver: WebDriver
    service: Any
    preset: str
    devtools_port: int | None
    shell: subprocess.Popen[bytes] | None = None
    fallback_reason: str | None = None
    display: str | None = None  # the Xvfb display (":7") with virtual_display=True


def start_session(
    opts: SessionOptions,
    session_id: str,
    paths: SessionPaths,
    driver_path: str,
    binary: str | None,
    on_spawn: _OnSpawn,
    on_browser: _OnSpawn,
    started_at: float | None = None,
    add_hook: Callable[[Any], object] | None = None,
) -> Launched:
    """Start the browser and chromedriver for ``opts.preset``, within
    ``opts.start_timeout`` seconds of ``started_at`` (a ``time.monotonic()``).

    For a shell preset, the session starts the headless shell itself (it has
    no page target until it is given a URL, and chromedriver launching it
    fails with "unable to discover open pages"), then attaches chromedriver
    through ``debuggerAddress``.  ``on_browser`` gets the Popen of each
    process the session starts itself (the shell, Xvfb) the moment it
    exists.  No shell installed: the ``"minimal"`` preset on the Chrome
    binary, with a WARNING.  ``add_hook`` gets the teardown hooks (the
    output capture, the virtual display) as soon as they exist.
    """
    deadline = Budget(opts.start_timeout, start=started_at)
    capture = OutputCapture(os.path.join(paths.root, OUTPUT_FILE))
    start = _Start(opts, session_id, paths, driver_path, deadline, capture, driver_log_path(session_id))
    hooks = add_hook if add_hook is not None else (lambda hook: None)
    hooks(start.capture)
    try:
        display = None
        if opts.virtual_display:
            try:
                vd = start_xvfb(
                    child_env(opts, session_id, paths), start.capture.writer, on_browser, start.deadline
                )
            except LaunchError as err:  # quote what Xvfb wrote
                raise start.error(err.msg, "display", err.path) from err
            hooks(vd)
            display = vd.display
            opts = start.opts = dataclasses.replace(opts, env={**opts.env, "DISPLAY": display})
        launched = _start_browser(start, binary, on_spawn, on_browser)
        launched.display = display
        return launched
    finally:
        start.capture.close_writer()  # every child has its copy: EOF once they all exit


def _start_browser(start: _Start, binary: str | None, on_spawn: _OnSpawn, on_browser: _OnSpawn) -> Launched:
    opts = start.opts
    if opts.preset not in SHELL_PRESETS:
        driver, service = _start_chrome(start, binary, on_spawn)
        return Launched(driver, service, opts.preset, read_devtools_port(start.paths.profile))
    shell = resolve_headless_shell()
    if shell is not None:
        return _start_shell_session(start, shell, on_spawn, on_browser)
    reason = (
        f"preset {opts.preset!r}: no headless shell found (${SHELL_ENV} not set, none of "
        f"{', '.join(SHELL_PATHS + SHELL_NAMES)}); using preset {SHELL_FALLBACK!r} on "
        f"{binary or 'the default Chrome'} instead; install chromium-headless-shell (Debian) "
        "for about half the memory"
    )
    log.warning("session %s: %s", start.session_id, reason)
    start.opts = dataclasses.replace(opts, preset=SHELL_FALLBACK)
    driver, service = _start_chrome(start, binary, on_spawn)
    return Launched(driver, service, SHELL_FALLBACK, read_devtools_port(start.paths.profile), None, reason)


def _start_shell_session(start: _Start, shell: str, on_spawn: _OnSpawn, on_browser: _OnSpawn) -> Launched:
    opts, session_id, paths = start.opts, start.session_id, start.paths
    args = merge_flags(list(CHROMEDRIVER_DEFAULT_FLAGS), chrome_arguments(opts, paths.profile, shell=True))
    # Port 0: the shell picks a free port and writes it to DevToolsActivePort
    # (never a port range of ours).  about:blank gives chromedriver a page.
    cmd = [shell, *[a for a in args if not a.startswith("--remote-debugging-port")]]
    cmd += ["--remote-debugging-port=0", "about:blank"]
    try:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=start.capture.writer,  # a pipe that is read: it never fills and blocks the shell
            stderr=start.capture.writer,
            env=child_env(opts, session_id, paths),
            **_platform.new_session_popen_kw(),
        )
    except OSError as err:
        raise start.error(
            f"the headless shell {shell!r} did not start: {err.strerror or err}", "shell", shell
        ) from err
    on_browser(popen)
    port = _wait_for_devtools(popen, paths.profile, shell, start)

    # chromedriver only attaches: the session capabilities apply, the shell's
    # flags were set above (validate() refuses chromeOptions the attach would drop)
    options = copy_user_options(webdriver.ChromeOptions(), opts.options, chrome_options=False)
    options.debugger_address = f"127.0.0.1:{port}"
    service = start.start_service(on_spawn)
    shown = f"shell={shell!r}, driver={start.driver_path!r}"
    try:
        driver = start.new_session(service, options)
    except Expired:
        raise start.error(
            f"chromedriver did not attach to the headless shell on port {port} "
            f"within {start.bound()} ({shown})",
            "shell",
            shell,
        ) from None
    except WebDriverException as err:
        reason = webdriver_reason(err)
        raise start.error(
            f"chromedriver could not attach to the headless shell on port {port}: {reason} ({shown})",
            "shell",
            shell,
            reason=reason,
        ) from err
    log.debug(
        "session %s: headless shell %s (pid %d) on DevTools port %d", session_id, shell, popen.pid, port
    )
    return Launched(driver, service, opts.preset, port, popen)


def _wait_for_devtools(popen: subprocess.Popen[bytes], profile_dir: str, shell: str, start: _Start) -> int:
    """The DevTools port once the shell has written it and has a page target;
    LaunchError with the shell's own last words if it exits or never does."""
    delay = 0.002
    while True:
        port = read_devtools_port(profile_dir)
        if port is not None and _has_page(port, start.deadline):
            return port
        code = popen.poll()
        exited = code is not None
        if exited or start.deadline.expired():
            what = (
                f"exited with status {code}"
                if code is not None
                else f"opened no DevTools page within {start.bound()}"
            )
            raise start.error(
                f"the headless shell {shell!r} {what}; check the flags in extra_args",
                "shell",
                shell,
                fallback_hint=(lambda output: not_chrome_hint(shell, output)) if exited else None,
            )
        time.sleep(min(delay, start.deadline.remaining()))
        delay = min(delay * 2, 0.05)


def _has_page(port: int, deadline: Budget) -> bool:
    """Whether the DevTools endpoint lists a page target yet."""
    try:
        timeout = max(0.05, min(1.0, deadline.remaining()))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as resp:  # noqa: S310
            return any(t.get("type") == "page" for t in json.loads(resp.read()))
    except (OSError, ValueError):
        return False
