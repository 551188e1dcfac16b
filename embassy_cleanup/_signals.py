"""Opt-in signal handling: run teardown on SIGTERM/SIGHUP, then carry on.

A library must not take signals over by default, so nothing here runs unless
the application calls :func:`install_signal_handlers`.  Without it, the
watchdog still cleans up after a SIGTERM (Python's default handler ends the
process without running ``finally`` blocks); with it, teardown runs in the
process itself, gracefully, and then the previous handler runs, or the
default action (the process ends with the signal, as it would have).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterable, Union

from ._lifecycle import live_sessions

log = logging.getLogger("embassy_cleanup")

_Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, None]
_previous: dict[int, _Handler] = {}


def _default_signals() -> list[int]:
    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


def _handle(signum: int, frame: FrameType | None) -> None:
    sessions = live_sessions()
    log.info("signal %d: tearing down %d open session(s)", signum, len(sessions))
    for state in sessions:
        try:
            state.teardown()
        except Exception as err:  # keep going: the other sessions still need it
            log.warning("teardown of session %s on signal %d failed: %s", state.session_id, signum, err)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or unknown): end the process the way the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_signal_handlers(signals: Iterable[int] | None = None) -> list[int]:
    """Make SIGTERM and SIGHUP (or ``signals``) tear down every open session
    of this process first, then run the previous handler or the default
    action.  Must be called from the main thread.  Returns the signals
    installed; calling it again is harmless."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers() must be called from the main thread")
    chosen = list(signals) if signals is not None else _default_signals()
    for signum in chosen:
        current = signal.getsignal(signum)
        if current is _handle:
            continue
        _previous[signum] = current
        signal.signal(signum, _handle)
    return chosen


def uninstall_signal_handlers() -> None:
    """Put back the handlers that were there before."""
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handle:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous[signum]
