"""Crash safety: nothing outlives its owner, even a SIGKILLed one.

Three layers, each covering what the one before cannot:

1. **The owner-death watchdog.**  One small process per owner process,
   started lazily with the first session that wants it and shared by all of
   that owner's sessions.  It reads a pipe whose write end only the owner
   holds: when the owner dies, by any means (SIGKILL, OOM killer, SIGTERM
   with Python's default handler), the kernel closes the write end and the
   watchdog sees EOF at once, then tears down every session the owner had
   registered and still had open.  A create-time-checked poll of the owner
   backs the pipe up (a ``fork()``-ed child could hold a copy of the write
   end).  The watchdog runs in its own session with no session marker, so
   no session's tree-kill can hit it; it exits with its owner.
2. **Ownership records** (``_records``): the owner holds a ``flock`` on
   each session root; the kernel drops it when the owner dies.
3. **The stale sweep** (``_sweep``): every session start sweeps the temp dir
   for roots whose lock can be taken (owner dead) and tears them down.

This module knows no kind of session.  The owner side sends versioned
``add``/``remove``/``reap`` messages (``reap``: a finalizer hands an open
session over, to be torn down now) (:data:`WATCHDOG_PROTOCOL`) naming a kind; the
watchdog side is handed a :class:`Reaper` per kind by its entry point
(``_watchdog_main``), validates every message with that kind's ``parse``,
and after the owner's death runs the local reapers first while the remote
ones (HTTP to a Grid) run in parallel threads, bounded as a whole.

The owner's writes never block for long: the pipe is non-blocking and each
message gets :data:`WRITE_TIMEOUT`.  A watchdog that died, stopped reading or
closed the pipe is replaced, and the replacement learns every open session
again from the registry the lifecycle hands in (:meth:`WatchdogClient.set_registry`).
A thread in the owner waits on the watchdog process, so a killed watchdog
is replaced at once, not at the next session start.

``PR_SET_PDEATHSIG`` is deliberately not used: it fires when the *thread*
that spawned the child exits, so a session created in a short-lived worker
thread would lose its browser while the owner lives on.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psutil

from . import _platform
from ._ownership import ENV_MARKER, OWNER_MARKER, owner_alive

log = logging.getLogger("embassy_cleanup")

#: The version every message carries; the watchdog refuses others.
WATCHDOG_PROTOCOL = 1
#: How often the watchdog also checks its owner's (pid, create time).
OWNER_POLL_S = 0.5
#: After the owner is seen dead, quiet polls to wait for what its pipe still
#: holds (a starved reader thread may not have read it yet) when no EOF comes.
DRAIN_POLLS = 4
#: Most time one message may take to write before the watchdog counts as hung.
WRITE_TIMEOUT = 2.0
#: Most time the watchdog gives all remote (Grid) reaps together.
REMOTE_BUDGET_S = 10.0
#: Longest message the watchdog accepts (an adopted driver's is the largest).
MAX_MESSAGE_BYTES = 1 << 20
#: What the watchdog process runs (``python -c WATCHDOG_ENTRY OWNER_PID OWNER_CREATE_TIME``);
#: not ``-m``: the package imports modules first, and runpy would run one twice.
WATCHDOG_ENTRY = "from embassy_cleanup._watchdog_main import main; raise SystemExit(main())"


# -- owner side -----------------------------------------------------------
class WatchdogClient:
    """The owner's handle on its watchdog: a process and a pipe's write end."""

    def __init__(self) -> None:
        # Reentrant: a signal handler that closes a session may interrupt a send.
        self._lock = threading.RLock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._wfd: int | None = None
        self._owner = os.getpid()
        self._registry: Callable[[], list[dict[str, Any]]] = list
        self._sending = False
        self._pending: list[bytes] = []
        self.restarts = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_in_child)

    def set_registry(self, registry: Callable[[], list[dict[str, Any]]]) -> None:
        """``registry()`` lists the ``add`` messages of every open session: a
        replacement watchdog is sent all of them."""
        self._registry = registry

    def _forget_in_child(self) -> None:
        # A fork()ed child must not keep the pipe open (the watchdog would
        # not see the owner's death) nor talk to the parent's watchdog.
        if self._wfd is not None:
            try:
                os.close(self._wfd)
            except OSError:
                pass
        self._wfd = None
        self.proc = None
        self._sending = False
        self._pending = []
        self._owner = os.getpid()

    def _start(self) -> None:
        owner = psutil.Process()
        rfd, wfd = os.pipe()  # both non-inheritable (PEP 446)
        env = {k: v for k, v in os.environ.items() if k not in (ENV_MARKER, OWNER_MARKER)}
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG_ENTRY, str(owner.pid), repr(owner.create_time())],
                stdin=rfd,
                stdout=subprocess.DEVNULL,
                stderr=_watchdog_log(),
                close_fds=True,
                env=env,
                **_platform.new_session_popen_kw(),
            )
        except BaseException:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        os.set_blocking(wfd, False)
        self.proc, self._wfd = proc, wfd
        threading.Thread(
            target=self._watch, args=(proc,), name="embassy-cleanup-watchdog-monitor", daemon=True
        ).start()
        log.debug("watchdog pid %d started for owner %d", proc.pid, owner.pid)

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for the watchdog to exit; replace it if sessions still need it."""
        proc.wait()
        with self._lock:
            if self.proc is not proc or self._owner != os.getpid() or self._sending:
                return  # replaced already, forked, or a send in progress will notice
            messages = self._registry()
            self._drop()
            if messages:
                log.warning("watchdog pid %d died (exit %s); starting another", proc.pid, proc.returncode)
                self._restart(messages)

    def _drop(self) -> None:
        if self._wfd is not None:
            try:
                os.close(self._wfd)
            except OSError:
                pass
        proc = self.proc
        self.proc, self._wfd = None, None
        if proc is not None and proc.poll() is None:  # hung: it is our child, end it
            proc.kill()
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                log.warning("watchdog pid %d did not exit after SIGKILL", proc.pid)

    def _restart(self, messages: list[dict[str, Any]]) -> None:
        self._start()
        self.restarts += 1
        for m in messages:
            self._write(_encode(m))

    def _write(self, data: bytes) -> None:
        """All of ``data``, within WRITE_TIMEOUT; TimeoutError or OSError otherwise."""
        assert self._wfd is not None
        deadline = time.monotonic() + WRITE_TIMEOUT
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._wfd, view)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the watchdog did not read for {WRITE_TIMEOUT} s") from None
                select.select([], [self._wfd], [], left)
                continue
            view = view[n:]

    def send(self, message: dict[str, Any]) -> int | None:
        """Send one message (starting or replacing the watchdog if needed);
        return the watchdog's pid."""
        data = _encode(message)
        with self._lock:
            if self._sending:  # re-entered (a signal handler): the outer call writes it
                self._pending.append(data)
                return self.pid
            self._sending = True
            try:
                if self._owner != os.getpid():
                    self._forget_in_child()
                if self.proc is not None and self.proc.poll() is not None:
                    log.warning(
                        "watchdog pid %d died (exit %s); starting another",
                        self.proc.pid,
                        self.proc.returncode,
                    )
                    self._drop()
                if self._wfd is None:
                    if message.get("op") != "add":
                        return None  # nothing registered there: nothing to remove
                    self._restart(self._registry())
                try:
                    self._write(data)
                    while self._pending:
                        self._write(self._pending.pop(0))
                except (OSError, TimeoutError) as err:  # BrokenPipeError, a hung reader
                    log.warning("watchdog: %s; starting another", err)
                    self._drop()
                    self._pending.clear()
                    self._restart(self._registry())
                    if message.get("op") == "add":
                        self._write(data)
                return self.pid
            finally:
                self._sending = False

    def close(self) -> None:
        """Close the pipe: the watchdog reads what was sent, tears down what is
        still registered (as after the owner's death) and exits."""
        with self._lock:
            if self._wfd is not None:
                os.close(self._wfd)
            self._wfd, self.proc = None, None

    @property
    def pid(self) -> int | None:
        """The watchdog's pid.  Taken under the lock: a replacement watchdog is
        reported only once every open session is registered with it, so
        "re-armed" means an owner SIGKILL from then on leaves nothing."""
        with self._lock:
            proc = self.proc
        return proc.pid if proc is not None else None


def _encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def _watchdog_log() -> Any:
    path = os.environ.get("EMBASSY_CLEANUP_WATCHDOG_LOG")
    if path:
        return open(path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.DEVNULL


_client: WatchdogClient | None = None
_client_lock = threading.Lock()


def client() -> WatchdogClient:
    """This process's watchdog client (created on first use)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = WatchdogClient()
        return _client


def watchdog_pid() -> int | None:
    """PID of this process's watchdog, if one runs."""
    return _client.pid if _client is not None else None


# -- watchdog side ----------------------------------------------------------
@dataclass(frozen=True)
class Reaper:
    """How the watchdog finishes one kind of session after its owner died.

    ``parse(body)`` validates an ``add`` message's body (ValueError says what
    is wrong; the message is then refused whole); ``reap(sid, parsed,
    exclude)`` tears the session down and returns one line for the log.
    ``remote`` reapers talk to another host: they run in parallel, after the
    local trees are being killed, bounded as a whole by REMOTE_BUDGET_S."""

    parse: Callable[[Any], Any]
    reap: Callable[[str, Any, set[int]], str]
    remote: bool = False


def _check(msg: Any, reapers: Mapping[str, Reaper]) -> tuple[str, str, Any]:
    """``(op, sid, parsed body)`` of a valid message; ValueError otherwise."""
    if not isinstance(msg, dict) or msg.get("v") != WATCHDOG_PROTOCOL:
        raise ValueError(f"not a version-{WATCHDOG_PROTOCOL} message")
    op, sid = msg.get("op"), msg.get("sid")
    if not isinstance(sid, str) or not 0 < len(sid) <= 64:
        raise ValueError(f"bad session id {sid!r}")
    if op in ("remove", "reap"):
        return op, sid, None
    if op != "add":
        raise ValueError(f"unknown op {op!r}")
    reaper = reapers.get(msg.get("kind"))  # type: ignore[arg-type]
    if reaper is None:
        raise ValueError(f"unknown kind {msg.get('kind')!r}")
    return op, sid, (msg["kind"], reaper.parse(msg.get("body")))


def _read_pipe(fd: int, chunks: queue.Queue[bytes]) -> None:
    """Blocking reads in a thread: portable where select() on a pipe is not."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        chunks.put(chunk)
        if not chunk:
            return


def _say(line: str) -> None:
    print(f"watchdog: {line}", file=sys.stderr, flush=True)


def serve(owner_pid: int, owner_create_time: float, reapers: Mapping[str, Reaper], fd: int = 0) -> int:
    """The watchdog's loop: track registrations until the owner is gone, then reap."""
    sessions: dict[str, tuple[str, Any]] = {}
    chunks: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=_read_pipe, args=(fd, chunks), daemon=True).start()
    buf = b""
    quiet_since_death = -1  # polls with nothing read since the owner was seen dead
    while True:
        try:
            chunk = chunks.get(timeout=OWNER_POLL_S)
        except queue.Empty:
            # The owner's death closes its end of the pipe, so EOF follows the
            # messages it wrote; only a forked child that kept the end open
            # would keep it from coming.  Never stop before reading what is
            # there: a registration sent just before the owner died counts.
            if quiet_since_death >= 0 or not owner_alive(owner_pid, owner_create_time):
                quiet_since_death += 1
                if quiet_since_death >= DRAIN_POLLS:
                    break
            continue
        if not chunk:
            break  # EOF: the owner is gone
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if len(buf) > MAX_MESSAGE_BYTES:
            _say(f"refused a message over {MAX_MESSAGE_BYTES} bytes")
            buf = b""
        for raw in lines:
            try:
                op, sid, parsed = _check(json.loads(raw), reapers)
            except ValueError as err:  # json errors are ValueErrors too
                _say(f"refused a message: {err}")
                continue
            if op == "add":
                sessions[sid] = parsed
            elif op == "reap" and sid in sessions:  # handed over by a finalizer
                handed = {sid: sessions.pop(sid)}
                threading.Thread(target=reap_all, args=(handed, reapers), daemon=True).start()
            else:
                sessions.pop(sid, None)
    reap_all(sessions, reapers)
    return 0


def reap_all(sessions: Mapping[str, tuple[str, Any]], reapers: Mapping[str, Reaper]) -> None:
    """Tear down every session: remote ones in parallel threads (bounded as a
    whole), local ones meanwhile, one after another; one failure never spares
    the others."""
    exclude = {os.getpid()}

    def one(sid: str, kind: str, parsed: Any) -> None:
        try:
            _say(f"session {sid}: {reapers[kind].reap(sid, parsed, exclude)}")
        except Exception as err:
            _say(f"session {sid} ({kind}): {err!r}")

    threads = [
        threading.Thread(target=one, args=(sid, kind, parsed), daemon=True)
        for sid, (kind, parsed) in sessions.items()
        if reapers[kind].remote
    ]
    deadline = time.monotonic() + REMOTE_BUDGET_S
    for th in threads:
        th.start()
    for sid, (kind, parsed) in sessions.items():
        if not reapers[kind].remote:
            one(sid, kind, parsed)
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))


def main(reapers: Mapping[str, Reaper], argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f'usage: python -c "{WATCHDOG_ENTRY}" OWNER_PID OWNER_CREATE_TIME', file=sys.stderr)
        return 2
    return serve(int(args[0]), float(args[1]), reapers)
