"""The watchdog process's entry point: it hands the watchdog one reaper per
kind of session (``python -c "from embassy_cleanup._watchdog_main import
main; ..."``, see ``_watchdog.WATCHDOG_ENTRY``).

This is the only module that knows every kind; ``_watchdog`` knows none.
A new kind adds its reaper here.
"""

from __future__ import annotations

from . import _watchdog
from ._adopt import ADOPTED_REAPER
from ._remote import REMOTE_REAPER
from ._sweep import LOCAL_REAPER

#: The reaper of each kind, by the kind's name (``_lifecycle.Kind.kind``).
REAPERS = {"local": LOCAL_REAPER, "remote": REMOTE_REAPER, "adopted": ADOPTED_REAPER}


def main(argv: list[str] | None = None) -> int:
    return _watchdog.main(REAPERS, argv)
