"""embassy_cleanup: Chrome under Selenium that leaves nothing behind.

The public API is what this module exports; everything in ``_``-modules is
private.  The layers, bottom up (see docs/architecture.md):

``_platform``   what differs between operating systems
``_ownership``  which processes are this session's; the only code that signals
``_launcher``   the session dir, the flags, chromedriver and Chrome
``_teardown``   the six stages and the report
``_watchdog``   crash safety: cleanup when the owner dies
``_session``    the context manager, built from the above
``_pool``       ChromePool: sessions reused across jobs, with their lifecycle
``_adopt``      the same teardown for a driver started elsewhere
``cli``         the ``embassy-cleanup`` command
"""

from __future__ import annotations

from ._adopt import AdoptedSession, adopt
from ._errors import (
    CleanupIncomplete,
    ConfigError,
    DriverNotFoundError,
    EmbassyCleanupError,
    LaunchError,
    LeaseExpiredError,
    NotOwnedError,
    PoolClosedError,
    PoolError,
    PoolFullError,
    PoolTimeoutError,
    StageTimeout,
)
from ._pool import ChromePool, PoolStats
from ._presets import PRESETS
from ._records import sweep_stale
from ._report import CleanupReport, Leftover, ProcessAction, Stage, StageResult
from ._session import ChromeUltraAggressiveCleanup
from ._signals import install_signal_handlers, uninstall_signal_handlers

__version__ = "0.1.0"

__all__ = [
    "ChromeUltraAggressiveCleanup",
    "ChromePool",
    "PoolStats",
    "adopt",
    "AdoptedSession",
    "sweep_stale",
    "install_signal_handlers",
    "uninstall_signal_handlers",
    "CleanupReport",
    "StageResult",
    "ProcessAction",
    "Leftover",
    "Stage",
    "PRESETS",
    "EmbassyCleanupError",
    "ConfigError",
    "DriverNotFoundError",
    "LaunchError",
    "NotOwnedError",
    "StageTimeout",
    "CleanupIncomplete",
    "PoolError",
    "PoolClosedError",
    "PoolFullError",
    "PoolTimeoutError",
    "LeaseExpiredError",
    "__version__",
]
