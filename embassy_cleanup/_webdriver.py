"""What we do to a Selenium WebDriver client object, in one place.

* :func:`quit_within` runs ``driver.quit()`` with a deadline (a hung browser
  makes it wait for minutes);
* :func:`release_driver` closes what the client still holds once its
  processes are gone: the HTTP connection pool and chromedriver's pipes;
* :class:`CommandGuard` sits in front of the driver's command executor: it
  counts the commands in flight (teardown skips a graceful ``quit()`` that
  would only queue behind them), and once teardown starts every command but
  our own ``quit`` fails with :class:`SessionClosedError`, at once, and so
  does a command cut off by the teardown.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from selenium.webdriver.remote.command import Command

from ._clock import Call, call_with_deadline
from ._errors import SessionClosedError

log = logging.getLogger("embassy_cleanup")


def quit_within(driver: Any, timeout: float) -> Call[None]:
    """``driver.quit()`` for at most ``timeout`` seconds (see ``_clock``)."""
    return call_with_deadline(driver.quit, timeout, "embassy-cleanup-quit")


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (WebDriver errors carry stack traces)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def release_driver(driver: Any) -> None:
    """Close what the WebDriver still holds once its processes are dead: the
    HTTP connection to chromedriver and chromedriver's pipes.  ``quit()`` does
    this itself; when it was skipped (graceful=False, a frozen browser) they
    would stay open until garbage collection, and a long-running owner's fds
    would grow with every session."""
    if driver is None:
        return
    try:
        driver.command_executor.close()
    except Exception as err:  # best effort: the processes are already gone
        log.debug("closing the WebDriver connection: %s", err)
    proc = getattr(getattr(driver, "service", None), "process", None)
    for stream in (
        getattr(proc, "stdin", None),
        getattr(proc, "stdout", None),
        getattr(proc, "stderr", None),
    ):
        if stream is not None:
            try:
                stream.close()
            except Exception as err:
                log.debug("closing a chromedriver pipe: %s", err)


class CommandGuard:
    """Guards one WebDriver's command executor (see the module docstring)."""

    def __init__(self, driver: Any, session_id: str) -> None:
        self.session_id = session_id
        self._lock = threading.Lock()
        self._in_flight = 0
        self.closed_at: float | None = None
        executor = driver.command_executor
        self._execute = executor.execute
        executor.execute = self  # an instance attribute: this driver only

    def pending(self) -> int:
        """Commands from other threads still waiting for an answer."""
        return self._in_flight

    def close(self) -> None:
        """Teardown starts: from now on, commands fail with SessionClosedError."""
        if self.closed_at is None:
            self.closed_at = time.time()

    def _error(self, cut_off: bool) -> SessionClosedError:
        when = time.strftime("%H:%M:%S", time.localtime(self.closed_at))
        what = (
            "was cut off: the session's teardown started"
            if cut_off
            else "was refused: the session was torn down"
        )
        return SessionClosedError(
            f"this WebDriver command {what} at {when} (session {self.session_id}); start a new session",
            session_id=self.session_id,
            closed_at=self.closed_at,
        )

    def __call__(self, command: str, params: dict[str, Any] | None = None) -> Any:
        ours = command == Command.QUIT  # the quit stage's own quit() goes through
        if self.closed_at is not None and not ours:
            raise self._error(cut_off=False)
        with self._lock:
            self._in_flight += not ours
        try:
            return self._execute(command, params)
        except Exception as err:
            if self.closed_at is not None and not ours:
                raise self._error(cut_off=True) from err
            raise
        finally:
            with self._lock:
                self._in_flight -= not ours
