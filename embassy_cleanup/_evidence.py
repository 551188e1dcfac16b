"""The evidence a launch error carries: what chromedriver and the browser
wrote, and a hint when the cause is a known one.

chromedriver, the browser it launches (which inherits chromedriver's stdout
and stderr), the headless shell and Xvfb all write into one pipe; a daemon
thread reads it (a pipe nobody reads fills up and blocks its writers) and
keeps:

* the first :data:`OUTPUT_LIMIT` bytes in ``<session dir>/output.log``,
  removed with the session dir.  A page that logs to the console in a loop
  makes Chrome write a line per message to stderr, so the file stops there
  (with a last line saying so) instead of growing for the session's life;
* the last :data:`TAIL_LIMIT` bytes in memory, for the error message.

``EMBASSY_CLEANUP_DRIVER_LOG=/path`` (:data:`DRIVER_LOG_ENV`) keeps
chromedriver's verbose log at that path, outside the session dir: a file
(appended to), or a directory (one ``chromedriver-<session id>.log`` per
session).  chromedriver then writes the browser's stderr into that log, and a
launch error quotes its tail instead.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import time
from typing import Any, Sequence

from ._errors import ConfigError

log = logging.getLogger("embassy_cleanup")

#: Keeps chromedriver's verbose log at this path (a file or a directory).
DRIVER_LOG_ENV = "EMBASSY_CLEANUP_DRIVER_LOG"
#: The output file's name in the session dir.
OUTPUT_FILE = "output.log"
#: At most this many bytes of output go to ``output.log``.
OUTPUT_LIMIT = 1 << 20
#: The last bytes of output kept in memory for an error message.
TAIL_LIMIT = 16 << 10
#: How many lines of output a launch error quotes.
TAIL_LINES = 8
#: How long to wait for output that is still in the pipe when an error is built.
SETTLE_TIMEOUT = 0.3

# chromedriver's own banner: true, and no help to anyone reading an error.
_BANNER = (
    "Starting ChromeDriver ",
    "Only local connections are allowed.",
    "Please see https://chromedriver.chromium.org/security-considerations",
    "ChromeDriver was started successfully",
)
# A line of chromedriver's log file ("[1796049337.976][INFO]: ...") or a JSON
# continuation line of one: the verbose log's protocol traffic.
_DRIVER_LOG_LINE = re.compile(r"^\[\d+\.\d+\]\[(?!SEVERE|WARNING)")
# A line of Chromium's own logging: "[pid:tid:MMDD/hhmmss.micros:LEVEL:file(line)] ..."
CHROME_LOG_LINE = re.compile(r"^\[\d+:\d+:\d{4}/\d{6}\.\d+:")


class OutputCapture:
    """One pipe for the session's processes to write into, read by a daemon
    thread into ``path`` (bounded) and a bounded in-memory tail.

    ``writer`` is the pipe's write end to give each child as stdout and
    stderr; :meth:`close_writer` once every child is started, so that the
    thread sees end-of-file when the last of them exits.  The object is a
    teardown hook: ``session_closed`` waits (briefly) for the thread.
    """

    def __init__(self, path: str, limit: int = OUTPUT_LIMIT) -> None:
        self.path = path
        self.limit = limit
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._rfd, self._wfd = os.pipe()
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()
        self._tail = bytearray()
        self._written = 0
        self._last_data = 0.0
        self._thread = threading.Thread(target=self._pump, name="embassy-cleanup-output", daemon=True)
        self._thread.start()

    @property
    def writer(self) -> int:
        """The write end of the pipe (an fd for ``Popen(stdout=, stderr=)``)."""
        if self._wfd < 0:
            raise ValueError("the output pipe's write end is closed")
        return self._wfd

    def close_writer(self) -> None:
        """Close our copy of the write end (idempotent)."""
        fd, self._wfd = self._wfd, -1
        if fd >= 0:
            os.close(fd)

    def _pump(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._rfd, 65536)
                except OSError as err:  # not expected on a pipe; the writers get EPIPE
                    log.debug("reading the session's output: %s", err)
                    return
                if not data:
                    return
                with self._lock:
                    self._last_data = time.monotonic()
                    self._tail += data
                    del self._tail[:-TAIL_LIMIT]
                    room = self.limit - self._written
                    if room > 0:
                        self._write(data[:room], truncated=len(data) > room)
        finally:
            os.close(self._rfd)
            self._file.close()

    def _write(self, chunk: bytes, truncated: bool) -> None:
        self._written += len(chunk)
        if truncated:
            chunk += f"\n[embassy_cleanup: output stops here, at {self.limit} bytes]\n".encode()
        try:
            self._file.write(chunk)
        except OSError as err:  # a full disk, say: stop writing; the tail in memory still works
            log.debug("writing the session's output to %s: %s", self.path, err)
            self._written = self.limit

    def _pending(self) -> bool:
        try:
            readable, _, _ = select.select([self._rfd], [], [], 0)
        except (OSError, ValueError):  # closed already, or an OS whose select() takes only sockets
            return False
        return bool(readable)

    def lines(self, count: int = TAIL_LINES) -> list[str]:
        """The last ``count`` meaningful lines of output, once what the
        processes wrote so far has been read (waits at most
        :data:`SETTLE_TIMEOUT`)."""
        end = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < end and self._thread.is_alive():
            with self._lock:
                quiet = time.monotonic() - self._last_data > 0.02
            if quiet and not self._pending():
                break
            time.sleep(0.01)
        return meaningful_lines(self.text(), count)

    def text(self) -> str:
        """Everything in the in-memory tail (for matching hints)."""
        with self._lock:
            return self._tail.decode("utf-8", "replace")

    def session_closed(self, state: Any) -> None:
        """Teardown hook: the session's processes are gone, so the pipe is at
        end-of-file; wait for the reader thread (it closes the files)."""
        self.close_writer()
        self._thread.join(1.0)
        if self._thread.is_alive():
            log.debug("session %s: a process still holds the output pipe", getattr(state, "session_id", "?"))


def meaningful_lines(text: str, count: int) -> list[str]:
    """The last ``count`` non-empty lines of ``text``, without chromedriver's
    banner and the protocol lines of its verbose log."""
    out = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.startswith(_BANNER) or _DRIVER_LOG_LINE.match(line):
            continue
        if line[:1] in (" ", "\t", "}", "]", "{"):  # JSON of a verbose log entry
            continue
        out.append(line if len(line) <= 300 else line[:297] + "...")
    return out[-count:]


def tail_of_file(path: str, count: int = TAIL_LINES) -> list[str]:
    """The last meaningful lines of a log file (its last :data:`TAIL_LIMIT` bytes)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_LIMIT))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return meaningful_lines(text, count)


def driver_log_path(session_id: str) -> str | None:
    """Where ``$EMBASSY_CLEANUP_DRIVER_LOG`` asks for chromedriver's verbose log, or None."""
    value = os.environ.get(DRIVER_LOG_ENV, "")
    if not value:
        return None
    if os.path.isdir(value):
        return os.path.join(os.path.abspath(value), f"chromedriver-{session_id}.log")
    parent = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(parent):
        raise ConfigError(
            f"{value!r} (from ${DRIVER_LOG_ENV}) cannot be chromedriver's log: its directory "
            f"{parent!r} does not exist; create it, or point ${DRIVER_LOG_ENV} at an existing "
            "file or directory",
            option=DRIVER_LOG_ENV,
            value=value,
        )
    return os.path.abspath(value)


def driver_log_args(path: str | None) -> list[str]:
    """chromedriver's arguments for a verbose log at ``path`` (none without one)."""
    return [f"--log-path={path}", "--verbose", "--append-log"] if path else []


# -- hints -------------------------------------------------------------------------
_SHARED_LIBRARY = re.compile(r"error while loading shared libraries: ([^\s:]+)")
_NO_DISPLAY = re.compile(
    r"Missing X server or \$DISPLAY|cannot open display|Unable to open X display|"
    r"Failed to connect to the X server|ozone_platform_x11\.cc.*(?:failed|Failed)"
)
_SANDBOX = re.compile(
    r"No usable sandbox|Running as root without --no-sandbox|setuid sandbox|"
    r"Failed to move to new namespace|zygote_host_impl_linux|Operation not permitted.*namespace"
)
_DEV_SHM = re.compile(r"/dev/shm|Creating shared memory in .* failed|shared memory.*No space left")
_PROFILE_IN_USE = re.compile(
    r"profile appears to be in use|ProcessSingleton|SingletonLock|user data directory is already in use"
)


def hint_for(text: str, *, headless: bool, display: str | None) -> str | None:
    """A hint for a known cause found in ``text`` (output and error), or None."""
    lib = _SHARED_LIBRARY.search(text)
    if lib:
        return (
            f"a shared library is missing: {lib.group(1)}; install the package that provides it "
            f"(Debian: apt-file search {lib.group(1)}), or reinstall chromium"
        )
    if _NO_DISPLAY.search(text) or (not headless and not display and "Chrome instance exited" in text):
        return (
            f"headed Chrome needs an X server, and none answers at DISPLAY={display or ''!r}; pass "
            "headless=True, or virtual_display=True to run it in Xvfb (Debian package xvfb)"
        )
    if _SANDBOX.search(text):
        return (
            "Chrome's sandbox cannot start here; run as a normal user on a system with user "
            "namespaces enabled, or pass extra_args=['--no-sandbox'] (added by itself when "
            "running as root or when user namespaces are off)"
        )
    if _DEV_SHM.search(text):
        return (
            "/dev/shm is too small or not writable for Chrome's shared memory; pass "
            "extra_args=['--disable-dev-shm-usage'], or give the container more "
            "(docker run --shm-size=1g)"
        )
    if _PROFILE_IN_USE.search(text):
        return (
            "another Chrome process holds the profile dir; the session's profile is its own, so "
            "this is a Chrome started by the flags in extra_args or options="
        )
    return None


def not_chrome_hint(binary: str | None, output: Sequence[str]) -> str | None:
    """A hint when the browser exited without one line of Chromium's logging:
    the binary is most likely not Chrome at all."""
    if any(CHROME_LOG_LINE.match(ln) or "DevTools listening" in ln for ln in output):
        return None
    what = repr(binary) if binary else "chromedriver's default browser"
    return (
        f"{what} exited without writing anything Chromium writes; is it a Chrome or "
        "Chromium binary? Pass binary= the browser (e.g. /usr/bin/chromium)"
    )
