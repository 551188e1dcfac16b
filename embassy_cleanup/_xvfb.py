"""A virtual display for headed Chrome on a server: Xvfb, started and owned
by the session (``virtual_display=True``).

Xvfb picks a free display number itself (``-displayfd``: it tries :0, :1 ...
until one is free and writes the number it got to the fd we pass), so two
sessions never race for one.  It is started in a new session with the
session's markers in its environment and recorded the moment it exists, like
the headless shell, so the six teardown stages end it and verify it gone.

Xvfb creates its socket file in ``/tmp/.X11-unix/X<n>`` whatever ``TMPDIR``
says (and, in builds that lock, ``/tmp/.X<n>-lock``; Debian 12's Xvfb with
``-displayfd`` writes none, measured), and removes it only on a polite exit.
After a SIGKILL it stays, so the display is also a teardown hook:
``session_closed`` removes the file when it is still the one our (now dead)
Xvfb created, never another server's.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import _platform
from ._clock import Budget
from ._errors import LaunchError

log = logging.getLogger("embassy_cleanup")

#: The screen Xvfb emulates: Chrome's default window fits in it.
SCREEN = "1920x1080x24"
#: Where Xvfb keeps its lock files and sockets (fixed in the X server).
X_LOCK_DIR = "/tmp"
X_SOCKET_DIR = "/tmp/.X11-unix"


@dataclass
class VirtualDisplay:
    """A running Xvfb: its process, its display (``":7"``), and the inode of
    the socket file it created (its identity, for the cleanup after it)."""

    popen: subprocess.Popen[bytes]
    display: str
    socket_inode: int | None = None

    @property
    def number(self) -> int:
        return int(self.display.lstrip(":"))

    @property
    def socket_path(self) -> str:
        return os.path.join(X_SOCKET_DIR, f"X{self.number}")

    @property
    def lock_path(self) -> str:
        return os.path.join(X_LOCK_DIR, f".X{self.number}-lock")

    def session_closed(self, state: Any) -> None:
        """Teardown hook: remove what a killed Xvfb left in ``/tmp``.

        The socket file goes only while it is still the one our Xvfb created
        (same inode) and nothing listens on it; a lock file (builds that
        write one) only while it names our Xvfb's PID.  Our Xvfb is dead
        by now: a live one is reported, and its files left alone."""
        sid = getattr(state, "session_id", "?")
        if self.popen.poll() is None:
            log.warning("session %s: Xvfb (pid %d) still runs after teardown", sid, self.popen.pid)
            return
        try:
            ours = self.socket_inode is not None and os.stat(self.socket_path).st_ino == self.socket_inode
        except OSError:
            ours = False  # removed by Xvfb itself on a polite exit
        bound = _platform.unix_socket_paths() if ours else set()
        if ours and self.socket_path not in bound:
            _unlink(self.socket_path, sid)
        try:
            with open(self.lock_path, encoding="ascii") as fh:
                if int(fh.read().strip() or 0) == self.popen.pid:
                    _unlink(self.lock_path, sid)
        except (OSError, ValueError):
            pass


def _unlink(path: str, sid: str) -> None:
    try:
        os.unlink(path)
        log.debug("session %s: removed Xvfb's %s", sid, path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("session %s: cannot remove Xvfb's %s: %s", sid, path, err)


def start_xvfb(
    env: Mapping[str, str],
    output_fd: int,
    on_spawn: Callable[[subprocess.Popen[bytes]], Any],
    deadline: Budget,
) -> VirtualDisplay:
    """Start Xvfb on a free display; return it once it accepts clients.

    ``on_spawn`` records the process the moment it exists; LaunchError (and
    the caller's teardown) when it exits or does not answer by ``deadline``.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:  # validate() checked; it may have been removed since
        raise LaunchError("virtual_display=True: Xvfb is not installed; install the Debian package xvfb")
    rfd, wfd = os.pipe()
    try:
        try:
            popen = subprocess.Popen(
                [xvfb, "-displayfd", str(wfd), "-screen", "0", SCREEN, "-nolisten", "tcp"],
                stdin=subprocess.DEVNULL,
                stdout=output_fd,
                stderr=output_fd,
                env=dict(env),
                pass_fds=(wfd,),
                **_platform.new_session_popen_kw(),
            )
        except OSError as err:
            raise LaunchError(
                f"Xvfb {xvfb!r} did not start: {err.strerror or err}", path=xvfb, component="display"
            ) from err
        finally:
            os.close(wfd)
        on_spawn(popen)
        number = _read_display(rfd, popen, deadline)
    finally:
        os.close(rfd)
    if number is None:
        try:  # the displayfd pipe ends a moment before the process does
            code: int | None = popen.wait(min(1.0, max(0.05, deadline.remaining())))
        except subprocess.TimeoutExpired:
            code = None
        what = (
            f"exited with status {code} before it opened a display"
            if code is not None
            else f"opened no display within {deadline.seconds:g} s (start_timeout)"
        )
        raise LaunchError(f"Xvfb {xvfb!r} {what}", path=xvfb, component="display")
    display = VirtualDisplay(popen, f":{number}")
    try:
        display.socket_inode = os.stat(display.socket_path).st_ino
    except OSError:  # no /tmp/.X11-unix (not root, say): only the abstract socket
        pass
    log.debug("Xvfb (pid %d) on display %s", popen.pid, display.display)
    return display


def _read_display(rfd: int, popen: subprocess.Popen[bytes], deadline: Budget) -> int | None:
    """The display number Xvfb writes to ``-displayfd`` once it is ready."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline.remaining()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([rfd], [], [], min(remaining, 0.1))
        if not readable:
            if popen.poll() is not None:
                return None
            continue
        chunk = os.read(rfd, 64)
        if not chunk:  # Xvfb closed it: it exited
            return None
        data += chunk
    try:
        return int(data.strip())
    except ValueError:
        return None
