"""embassy_cleanup: Chrome under Selenium that leaves nothing behind.

The public API is what this module exports; everything in ``_``-modules is
private.  The layers, bottom up (see docs/architecture.md):

``_platform``   what differs between operating systems
``_ownership``  which processes are this session's; the only code that signals
``_launcher``   the session dir, the flags, chromedriver and Chrome
``_teardown``   the six stages, run from a plan, and the report
``_watchdog``   crash safety: cleanup when the owner dies (knows no kind)
``_lifecycle``  the one lifecycle every kind of session shares
``_session``    the context manager: a local or a remote session
``_adopt``      the same lifecycle for a driver started elsewhere
``_pool``       ChromePool: sessions reused across jobs
``cli``         the ``embassy-cleanup`` command

``tests/test_layers.py`` enforces the order: no import cycles, and no
private name imported from another module.
"""

from __future__ import annotations

from ._adopt import AdoptedSession, adopt
from ._errors import (
    CleanupIncomplete,
    ConfigError,
    DriverNotFoundError,
    EmbassyCleanupError,
    GridError,
    LaunchError,
    LeaseExpiredError,
    PoolClosedError,
    PoolError,
    PoolFullError,
    PoolTimeoutError,
    SessionClosedError,
)
from ._pool import ChromePool, PoolStats
from ._presets import PRESETS
from ._report import CleanupReport, Leftover, Outcome, ProcessAction, Stage, StageResult
from ._session import ChromeUltraAggressiveCleanup
from ._signals import install_signal_handlers, uninstall_signal_handlers
from ._sweep import sweep_stale

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
    "Outcome",
    "Leftover",
    "Stage",
    "PRESETS",
    "EmbassyCleanupError",
    "ConfigError",
    "DriverNotFoundError",
    "LaunchError",
    "GridError",
    "CleanupIncomplete",
    "SessionClosedError",
    "PoolError",
    "PoolClosedError",
    "PoolFullError",
    "PoolTimeoutError",
    "LeaseExpiredError",
    "__version__",
]
