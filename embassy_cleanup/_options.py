"""Validation of the options a session takes.

Each bad value raises :class:`ConfigError` (a ``ValueError``) or a
``TypeError`` naming the option, the value and the fix, before anything is
started.
"""

from __future__ import annotations

import math
import os
import shutil
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._errors import ConfigError
from ._presets import DEFAULT_PRESET, PRESETS, SHELL_PRESETS

#: The default ``start_timeout``, in seconds: a cold Chrome on a loaded
#: 2-CPU machine starts in 1-3 s; 30 s leaves room for a slow disk or a
#: busy Grid while failing twice as fast as chromedriver's own 60 s wait.
DEFAULT_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SessionOptions:
    headless: bool = True
    cleanup_timeout: float = 10.0
    preset: str = DEFAULT_PRESET
    extra_args: tuple[str, ...] = ()
    options: Any = None  # selenium ChromeOptions to start from
    binary: str | None = None
    driver_path: str | None = None
    temp_root: str | None = None
    graceful: bool = True
    raise_on_leak: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    watchdog: bool = True
    remote_url: str | None = None  # a Selenium Grid: see _remote and docs/grid.md
    start_timeout: float = DEFAULT_START_TIMEOUT
    virtual_display: bool = False  # headed Chrome in an Xvfb the session starts: see _xvfb


#: The Debian package that provides Xvfb, for ``virtual_display=True``.
XVFB_PACKAGE = "xvfb"
#: Flags the session must own: it creates the profile and talks to the browser
#: over its own DevTools connection.  Chrome keeps the last of a repeated flag,
#: so one passed by the user would silently win over the session's, or lose.
OWNED_FLAGS = {
    "--user-data-dir": (
        "the session creates and removes its own profile dir; use temp_root= to choose where it goes"
    ),
    "--remote-debugging-port": "chromedriver picks the DevTools port; the session needs it to tear down",
    "--remote-debugging-pipe": "chromedriver picks how it talks to the browser",
}


def check_bool(name: str, value: Any, allow_none: bool = False) -> Any:
    """``value`` if it is True or False (or None with ``allow_none``); TypeError otherwise."""
    if isinstance(value, bool) or (allow_none and value is None):
        return value
    allowed = "True, False or None" if allow_none else "True or False"
    raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")


def check_seconds(name: str, value: Any) -> float:
    """``value`` as float seconds if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{name} must be a finite number of seconds > 0, got {value!r}", option=name, value=value
        )
    return float(value)


def _check_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = os.fspath(value)
    if not path:
        raise ConfigError(f"{name} must not be empty; pass None to use the default", option=name)
    return str(path)


def _check_owned_flag(arg: str, source: str) -> None:
    """ConfigError for a flag the session owns, or for a page URL, in ``source``."""
    if not arg.startswith("-"):
        raise ConfigError(
            f"{source} entry {arg!r} is not a Chrome flag: a page URL on the command line would "
            "open a second first page; open pages with driver.get() once the session has started",
            option=source,
            value=arg,
        )
    key = arg.split("=", 1)[0]
    if key in OWNED_FLAGS:
        raise ConfigError(
            f"{source} must not set {key}: {OWNED_FLAGS[key]}",
            option=source,
            value=arg,
        )


def validate(
    *,
    headless: Any = True,
    cleanup_timeout: Any = 10.0,
    preset: Any = DEFAULT_PRESET,
    extra_args: Any = (),
    options: Any = None,
    binary: Any = None,
    driver_path: Any = None,
    temp_root: Any = None,
    graceful: Any = True,
    raise_on_leak: Any = False,
    env: Any = None,
    watchdog: Any = True,
    remote_url: Any = None,
    start_timeout: Any = DEFAULT_START_TIMEOUT,
    virtual_display: Any = False,
) -> SessionOptions:
    """Check every option; return them as a frozen :class:`SessionOptions`."""
    for name, flag in (
        ("headless", headless),
        ("graceful", graceful),
        ("raise_on_leak", raise_on_leak),
        ("watchdog", watchdog),
        ("virtual_display", virtual_display),
    ):
        check_bool(name, flag)
    cleanup_timeout = check_seconds("cleanup_timeout", cleanup_timeout)
    start_timeout = check_seconds("start_timeout", start_timeout)

    if not isinstance(preset, str):
        raise TypeError(f"preset must be a string, got {type(preset).__name__}")
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}",
            option="preset",
            value=preset,
        )

    if preset in SHELL_PRESETS and not headless:
        raise ConfigError(
            f"preset {preset!r} runs Chromium's headless shell, which has no window; "
            "pass headless=True, or choose preset='minimal' for a headed browser",
            option="preset",
            value=preset,
        )

    if isinstance(extra_args, (str, bytes)) or not isinstance(extra_args, Sequence):
        raise TypeError(f"extra_args must be a list of flags like ['--lang=en'], got {extra_args!r}")
    for arg in extra_args:
        if not isinstance(arg, str) or not arg.startswith("--"):
            raise ConfigError(
                f"extra_args entry {arg!r} is not a Chrome flag (flags start with '--')",
                option="extra_args",
                value=arg,
            )
        _check_owned_flag(arg, "extra_args")

    if options is not None:
        from selenium.webdriver.chrome.options import Options as ChromeOptions

        if not isinstance(options, ChromeOptions):
            raise TypeError(
                f"options must be a selenium.webdriver.ChromeOptions, got {type(options).__name__}"
            )
        if preset in SHELL_PRESETS and (options.extensions or options.experimental_options):
            raise ConfigError(
                f"with preset {preset!r} the session starts the headless shell itself and chromedriver "
                "only attaches to it, so the extensions and experimental options of options= "
                f"({sorted(options.experimental_options) + ['extensions'] * bool(options.extensions)}) "
                "would be ignored; drop them or choose preset='minimal'",
                option="options",
                value=sorted(options.experimental_options),
            )
        for arg in options.arguments:
            _check_owned_flag(arg, "options")
        attach_to = options.debugger_address or options.experimental_options.get("debuggerAddress")
        if attach_to:
            raise ConfigError(
                "options must not set debuggerAddress: the session starts its own browser; to "
                "take charge of a browser that is already running, use embassy_cleanup.adopt()",
                option="options",
                value=attach_to,
            )

    binary = _check_path("binary", binary)
    driver_path = _check_path("driver_path", driver_path)
    temp_root = _check_path("temp_root", temp_root)
    if temp_root is not None and not os.path.isdir(temp_root):
        raise ConfigError(
            f"temp_root {temp_root!r} is not an existing directory; create it or pass another",
            option="temp_root",
            value=temp_root,
        )

    if env is None:
        env = {}
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, got {type(env).__name__}")
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"env entries must be str to str, got {k!r}: {v!r}")

    if virtual_display:
        _check_virtual_display(headless, remote_url)

    if remote_url is not None:
        remote_url = check_remote_options(remote_url, driver_path=driver_path, env=env)

    return SessionOptions(
        headless=headless,
        cleanup_timeout=float(cleanup_timeout),
        preset=preset,
        extra_args=tuple(extra_args),
        options=options,
        binary=binary,
        driver_path=driver_path,
        temp_root=temp_root,
        graceful=graceful,
        raise_on_leak=raise_on_leak,
        env=dict(env),
        watchdog=watchdog,
        remote_url=remote_url,
        start_timeout=start_timeout,
        virtual_display=virtual_display,
    )


def check_remote_options(url: Any, *, driver_path: Any, env: Any) -> str:
    """Validate ``remote_url`` and the options that cannot go with it."""
    if not isinstance(url, str):
        raise TypeError(f"remote_url must be a string like 'http://grid:4444', got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"remote_url {url!r} is not an http(s) URL of a Selenium Grid; pass e.g. 'http://127.0.0.1:4444'",
            option="remote_url",
            value=url,
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(f"remote_url {url!r}: {err}", option="remote_url", value=url) from None
    if parts.query or parts.fragment:
        raise ConfigError(
            f"remote_url {url!r} must not carry a query or fragment; pass the Grid's base URL",
            option="remote_url",
            value=url,
        )
    if driver_path is not None:
        raise ConfigError(
            "driver_path= cannot be used with remote_url=: chromedriver runs on the Grid node "
            "(configure it there)",
            option="driver_path",
            value=driver_path,
        )
    if env:
        raise ConfigError(
            "env= cannot be used with remote_url=: the browser's environment is the Grid node's",
            option="env",
            value=dict(env),
        )
    return url.strip().rstrip("/")


def _check_virtual_display(headless: bool, remote_url: Any) -> None:
    if headless:
        raise ConfigError(
            "virtual_display=True runs headed Chrome in Xvfb, but headless=True needs no display; "
            "pass headless=False with it, or drop virtual_display",
            option="virtual_display",
            value=True,
        )
    if remote_url is not None:
        raise ConfigError(
            "virtual_display=True cannot be used with remote_url=: the browser runs on the Grid "
            "node, whose display is the node's",
            option="virtual_display",
            value=True,
        )
    if shutil.which("Xvfb") is None:
        raise ConfigError(
            f"virtual_display=True needs Xvfb, which is not installed (no Xvfb on PATH); install "
            f"the Debian package {XVFB_PACKAGE} (apt-get install {XVFB_PACKAGE})",
            option="virtual_display",
            value=True,
        )
