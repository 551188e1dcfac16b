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
3. **The stale sweep**: every session start sweeps the temp dir for roots
   whose lock can be taken (owner dead) and tears them down.  This is what
   cleans up after a reboot, or after the watchdog itself was SIGKILLed.

``PR_SET_PDEATHSIG`` is deliberately not used: it fires when the *thread*
that spawned the child exits, so a session created in a short-lived worker
thread would lose its browser while the owner lives on.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import psutil

from . import _platform, _records
from ._ownership import ENV_MARKER, OWNER_MARKER

log = logging.getLogger("embassy_cleanup")

#: How often the watchdog also checks its owner's (pid, create time).
OWNER_POLL_S = 0.5
#: How long the watchdog waits for a dead owner's lock before acting anyway.
LOCK_WAIT_S = 1.0

_live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_warned_init = False


# -- owner side -----------------------------------------------------------
class _WatchdogClient:
    """The owner's handle on its watchdog: a process and a pipe's write end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._wfd: int | None = None
        self._owner = os.getpid()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_in_child)

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
        self._owner = os.getpid()
        # Nor keep the parent's owner locks: closing our copies leaves the
        # parent's locks in place (flock holds until the last copy closes),
        # and a sweep then sees the parent's sessions exactly as it should.
        for state in list(_live.values()):
            for hook in state.hooks:
                if isinstance(hook, _CrashSafetyHook) and hook.lock is not None:
                    hook.lock.forget()

    def _start(self) -> None:
        owner = psutil.Process()
        rfd, wfd = os.pipe()  # both non-inheritable (PEP 446)
        env = {k: v for k, v in os.environ.items() if k not in (ENV_MARKER, OWNER_MARKER)}
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    # Not "-m embassy_cleanup._watchdog": the package imports this
                    # module first, so runpy would run it a second time (and warn).
                    WATCHDOG_ENTRY,
                    str(owner.pid),
                    repr(owner.create_time()),
                ],
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
        self._wfd = wfd
        log.debug("watchdog pid %d started for owner %d", self.proc.pid, owner.pid)

    def send(self, message: dict[str, Any]) -> int | None:
        """Send one message (starting the watchdog if needed); return its pid."""
        line = (json.dumps(message) + "\n").encode()
        with self._lock:
            if self._owner != os.getpid():
                self._forget_in_child()
            if self.proc is not None and self.proc.poll() is not None:
                log.warning(
                    "watchdog pid %d died (exit %s); starting another", self.proc.pid, self.proc.returncode
                )
                if self._wfd is not None:
                    os.close(self._wfd)
                self.proc, self._wfd = None, None
            if self._wfd is None:
                if message.get("op") != "add":
                    return None
                self._start()
                # A replacement watchdog must also learn the sessions the
                # dead one was guarding.
                for state in live_sessions():
                    if _guarded(state) and state.session_id != message.get("sid"):
                        os.write(self._wfd, _add_message(state))  # type: ignore[arg-type]
            assert self._wfd is not None and self.proc is not None
            os.write(self._wfd, line)  # < PIPE_BUF: atomic
            return self.proc.pid

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _guarded(state: Any) -> bool:
    """Whether a live state asked for the watchdog (an adopted driver's state has no opts)."""
    opts = getattr(state, "opts", None)
    return bool(opts.watchdog if opts is not None else getattr(state, "watchdog", False))


def _add_message(state: Any) -> bytes:
    if getattr(state, "adopted", False):  # a driver started elsewhere (_adopt)
        from ._adopt import watchdog_message

        return (json.dumps(watchdog_message(state)) + "\n").encode()
    if getattr(state.target, "remote_session_id", None) is not None:  # a Grid session (_remote)
        from ._remote import add_message

        return (json.dumps(add_message(state)) + "\n").encode()
    return (json.dumps({"op": "add", "sid": state.session_id, "root": state.target.root}) + "\n").encode()


def _watchdog_log() -> Any:
    path = os.environ.get("EMBASSY_CLEANUP_WATCHDOG_LOG")
    if path:
        return open(path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.DEVNULL


_client: _WatchdogClient | None = None
_client_lock = threading.Lock()


def _get_client() -> _WatchdogClient:
    global _client
    with _client_lock:
        if _client is None:
            _client = _WatchdogClient()
        return _client


def watchdog_pid() -> int | None:
    """PID of this process's watchdog, if one runs."""
    return _client.pid if _client is not None else None


class _CrashSafetyHook:
    """Attached to a session's state: undoes the registration at teardown."""

    def __init__(self, lock: _records.OwnerLock | None, registered: bool) -> None:
        self.lock = lock
        self.registered = registered

    def session_closed(self, state: Any) -> None:
        if self.registered:
            _get_client().send({"op": "remove", "sid": state.session_id})
        if self.lock is not None:
            self.lock.release()


def on_session_started(state: Any) -> None:
    """Called right after the session root exists, before Chrome starts."""
    global _warned_init
    target = state.target
    opts = state.opts
    if _platform.running_as_init() and not _warned_init:
        _warned_init = True
        log.warning(
            "running as PID 1 with no init: orphaned processes re-parent to this process and "
            "nobody else reaps them; embassy_cleanup reaps its own, but run the container "
            "with --init (or tini) so everything else is reaped too"
        )
    lock = _records.OwnerLock(target.root)
    hook = _CrashSafetyHook(lock, registered=False)
    state.hooks.append(hook)
    update_record(state)
    _live[state.session_id] = state
    if opts.watchdog:
        pid = _get_client().send({"op": "add", "sid": state.session_id, "root": target.root})
        hook.registered = True
        if pid is not None:
            target.tracker._exclude.add(pid)
    try:
        swept = _records.sweep_stale(opts.temp_root, exclude=_excluded())
    except Exception as err:  # a sweep problem must not stop a session from starting
        log.warning("stale sweep failed: %s", err)
    else:
        if swept:
            log.info("swept %d stale session(s) left by dead owners", len(swept))


def _excluded() -> set[int]:
    pid = watchdog_pid()
    return {pid} if pid is not None else set()


def update_record(state: Any) -> None:
    """(Re)write the session's record with what it knows now."""
    target = state.target
    owner = psutil.Process()
    _records.write_record(
        target.root,
        {
            "session_id": state.session_id,
            "owner_pid": owner.pid,
            "owner_create_time": owner.create_time(),
            "root": target.root,
            "pids": [[p.pid, p.create_time, p.name] for p in target.tracker.recorded.values()],
            "ports": sorted(target.ports),
            "created": target.tracker.born_after,
        },
    )


def live_sessions() -> list[Any]:
    """States of this process's sessions not yet torn down."""
    return [s for s in list(_live.values()) if s.report is None]


# -- watchdog side ----------------------------------------------------------
def _owner_alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reap_session(sid: str, root: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    lock = _records.try_lock_dead_owner(root)
    while lock is False and time.monotonic() < deadline:
        time.sleep(0.01)
        lock = _records.try_lock_dead_owner(root)
    try:
        report = _records.reap_orphaned(root, sid, exclude={os.getpid()})
        print(f"watchdog: session {sid}: {'ok' if report.ok else 'LEFTOVERS'}\n{report}", file=sys.stderr)
    finally:
        if isinstance(lock, int) and not isinstance(lock, bool):
            os.close(lock)


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


def serve(owner_pid: int, owner_create_time: float, fd: int = 0) -> int:
    """The watchdog's loop: track registrations until the owner is gone."""
    sessions: dict[str, dict[str, Any]] = {}
    chunks: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=_read_pipe, args=(fd, chunks), daemon=True).start()
    buf = b""
    while True:
        try:
            chunk = chunks.get(timeout=OWNER_POLL_S)
        except queue.Empty:
            if not _owner_alive(owner_pid, owner_create_time):
                break
            continue
        if not chunk:
            break  # EOF: the owner is gone
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("op") == "add" and (
                isinstance(msg.get("root"), str)
                or isinstance(msg.get("remote_sid"), str)
                or isinstance(msg.get("adopted"), dict)
            ):
                sessions[str(msg["sid"])] = msg
            elif msg.get("op") == "remove":
                sessions.pop(str(msg.get("sid")), None)
    # Remote (Grid) sessions first: one HTTP request each frees a Grid slot.
    for sid, msg in sessions.items():
        if isinstance(msg.get("remote_sid"), str):
            from ._remote import reap_remote

            outcome = reap_remote(sid, str(msg.get("remote_url")), msg["remote_sid"])
            print(f"watchdog: remote session {sid} ({msg['remote_sid']}): {outcome}", file=sys.stderr)
    for sid, msg in sessions.items():
        try:
            if isinstance(msg.get("root"), str):
                _reap_session(sid, msg["root"])
            elif isinstance(msg.get("adopted"), dict):  # a driver started elsewhere (_adopt)
                from ._adopt import reap_adopted

                report = reap_adopted(sid, msg["adopted"], exclude={os.getpid()})
                outcome = "ok" if report.ok else "LEFTOVERS"
                print(f"watchdog: session {sid}: {outcome}\n{report}", file=sys.stderr)
        except Exception as err:  # one session's failure must not spare the others
            print(f"watchdog: session {sid}: {err!r}", file=sys.stderr)
    return 0


#: What the watchdog process runs (``python -c WATCHDOG_ENTRY OWNER_PID OWNER_CREATE_TIME``).
WATCHDOG_ENTRY = "from embassy_cleanup._watchdog import main; raise SystemExit(main())"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f'usage: python -c "{WATCHDOG_ENTRY}" OWNER_PID OWNER_CREATE_TIME', file=sys.stderr)
        return 2
    return serve(int(args[0]), float(args[1]))


if __name__ == "__main__":
    raise SystemExit(main())
