"""Starting Chrome: driver and binary resolution, the session root, the flags.

The launcher creates the session root (mode 0700, ``embassy_cleanup-<id>``)
and points everything Chrome writes into it: the profile, ``TMPDIR`` (where
Chromium puts its ``org.chromium.Chromium.*`` singleton and ``scoped_dir``
litter) and ``XDG_CONFIG_HOME``/``XDG_CACHE_HOME`` (crashpad's database,
which would otherwise grow in ``~/.config/chromium/Crash Reports``).
chromedriver is started in a new session with ``EMBASSY_CLEANUP_SESSION`` in
its environment, and is recorded the moment it exists.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import _platform
from ._errors import ConfigError, DriverNotFoundError, LaunchError
from ._options import SessionOptions
from ._ownership import ENV_MARKER, OWNER_MARKER, ROOT_PREFIX, owner_marker
from ._presets import merge_flags, preset_flags

if TYPE_CHECKING:  # pragma: no cover
    import subprocess

    from selenium.webdriver.chrome.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")

DRIVER_ENV = "CHROMEDRIVER_PATH"
BINARY_ENV = "CHROME_BINARY"
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


def resolve_driver(explicit: str | None) -> tuple[str, str]:
    """Find chromedriver; return ``(path, where it came from)``.

    Order: ``driver_path=``, ``$CHROMEDRIVER_PATH``, ``chromedriver`` on
    ``PATH``, Selenium Manager, webdriver-manager (when installed).  An
    explicit path or environment variable that is wrong is an error at once:
    silently falling back would run a driver the user did not ask for.
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
        from selenium.webdriver.common.selenium_manager import SeleniumManager

        out = SeleniumManager().binary_paths(["--browser", "chrome", "--offline", "--avoid-stats"])
        path = out.get("driver_path") or ""
        if path and os.access(path, os.X_OK):
            return path, "Selenium Manager"
        tried.append(("Selenium Manager", f"returned {path!r}"))
    except Exception as err:  # it raises many kinds; we only report them
        tried.append(("Selenium Manager", str(err).splitlines()[0] if str(err) else repr(err)))

    try:
        from webdriver_manager.chrome import ChromeDriverManager  # type: ignore[import-not-found]
    except ImportError:
        tried.append(("webdriver-manager", "not installed"))
    else:
        try:
            return ChromeDriverManager().install(), "webdriver-manager"
        except Exception as err:
            tried.append(("webdriver-manager", str(err).splitlines()[0]))

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
    root = os.path.join(base, f"{ROOT_PREFIX}{session_id}")
    try:
        os.mkdir(root, 0o700)
    except OSError as err:
        raise LaunchError(
            f"cannot create the session dir in {base!r} (from {source}): "
            f"{err.strerror or err}; pass temp_root= a writable directory",
            path=base,
        ) from err
    paths = SessionPaths(
        root=root,
        profile=os.path.join(root, "profile"),
        tmp=os.path.join(root, "tmp"),
        config=os.path.join(root, "config"),
        cache=os.path.join(root, "cache"),
    )
    try:
        for sub in (paths.profile, paths.tmp, paths.config, paths.cache):
            os.mkdir(sub, 0o700)
    except OSError as err:
        shutil.rmtree(root, ignore_errors=True)
        raise LaunchError(
            f"cannot populate the session dir {root!r}: {err.strerror or err}", path=root
        ) from err
    return paths


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


def chrome_arguments(opts: SessionOptions, profile_dir: str) -> list[str]:
    """The full flag list for a session, in the order Chrome will see it."""
    auto = []
    if opts.headless:
        auto.append("--headless=new")
    if not _platform.can_use_chrome_sandbox():
        auto.append("--no-sandbox")
    if _platform.dev_shm_too_small():
        auto.append("--disable-dev-shm-usage")
    start = list(opts.options.arguments) if opts.options is not None else []
    return merge_flags(
        start, preset_flags(opts.preset), auto, list(opts.extra_args), [f"--user-data-dir={profile_dir}"]
    )


# -- starting -------------------------------------------------------------
def _service_class() -> type:
    from selenium.webdriver.chrome.service import Service

    class OwnedService(Service):  # type: ignore[misc]
        """A chromedriver Service that reports its process the moment it exists,
        so a failure while waiting for it to answer still leaves it recorded."""

        on_spawn: Callable[[subprocess.Popen[bytes]], Any] | None = None

        def start(self) -> None:
            try:
                super().start()
            finally:
                proc = getattr(self, "process", None)
                if proc is not None and self.on_spawn is not None:
                    self.on_spawn(proc)
                    self.on_spawn = None

    return OwnedService


def start_driver(
    opts: SessionOptions,
    session_id: str,
    paths: SessionPaths,
    driver_path: str,
    binary: str | None,
    on_spawn: Callable[[subprocess.Popen[bytes]], Any],
) -> tuple[WebDriver, Any]:
    """Start chromedriver and Chrome; return ``(driver, service)``.

    Raises LaunchError with chromedriver's own words when Chrome does not
    start; the caller tears down whatever was started.
    """
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException

    options = webdriver.ChromeOptions()
    if opts.options is not None:
        for key, value in opts.options.experimental_options.items():
            options.add_experimental_option(key, value)
        for ext in opts.options.extensions:
            options.add_encoded_extension(ext)
        options.page_load_strategy = opts.options.page_load_strategy
    for arg in chrome_arguments(opts, paths.profile):
        options.add_argument(arg)
    if binary is not None:
        options.binary_location = binary

    service = _service_class()(
        executable_path=driver_path,
        env=child_env(opts, session_id, paths),
        popen_kw=_platform.new_session_popen_kw(),
    )
    service.on_spawn = on_spawn
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as err:
        # chromedriver's first line is often just "session not created"; the
        # reason follows ("from unknown error: ..."): keep both, drop the
        # documentation link and any stack trace.
        lines = [ln.strip() for ln in (err.msg or str(err)).splitlines() if ln.strip()]
        reason = "; ".join(ln.split("; For documentation")[0] for ln in lines[:2]) or repr(err)
        raise LaunchError(
            f"Chrome did not start: {reason}"
            f" (binary={options.binary_location or 'chromedriver default'!r}, "
            f"driver={driver_path!r}); check the binary and the flags in extra_args",
            path=options.binary_location or None,
        ) from err
    return driver, service


def read_devtools_port(profile_dir: str) -> int | None:
    """The DevTools port Chrome wrote into ``DevToolsActivePort``, if any."""
    try:
        with open(os.path.join(profile_dir, "DevToolsActivePort"), encoding="ascii") as fh:
            return int(fh.readline().strip())
    except (OSError, ValueError):
        return None
