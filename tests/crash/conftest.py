"""Fixtures for the crash-safety tests (issue 3; F4, F5, F11, F13).

``crash`` is a small kit:

* ``crash.spawn(...)`` starts ``_owner.py`` in a child interpreter (an *owner*
  process whose sessions live in the test run's sessions dir) and, once it is
  ready, knows its sessions, their pids and its watchdog's pid.  Every owner
  is SIGKILLed and reaped at the end of the test, by its own Popen (its
  recorded pid); every watchdog it reported is held by ``(pid, create
  time)`` and, if it has not exited 5 s later, killed by that identity.
* ``crash.snapshot(session)`` holds every process of a session (found by the
  session root marker, plus the pids the owner recorded) by identity;
  ``crash.wait_gone(...)`` polls until none of them runs and the root is
  gone, and returns how long that took.

Nothing here finds processes by name.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable

import psutil
import pytest

from tests import _helpers as h

OWNER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_owner.py")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The bound the tests assert; the target (FAULTS.md F4/F5) is about 1 s.
GONE_WITHIN_S = 5.0


def alive(proc: psutil.Process) -> bool:
    """Running, and still the process we hold (create time checked)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def hold(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """A psutil handle on ``pid`` if it runs (and has ``create_time``)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None
        return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except psutil.NoSuchProcess:
        return None


class OwnerProc:
    """One ``_owner.py`` child: its Popen, its answers, its logs."""

    def __init__(self, args: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        logs = os.path.join(h.RUN_ROOT, "owner-logs")
        os.makedirs(logs, exist_ok=True)
        fd, self.stderr_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".stderr", dir=logs)
        os.close(fd)
        self.watchdog_log_path = self.stderr_path[: -len(".stderr")] + ".watchdog"
        child_env = dict(os.environ)
        child_env.pop("EMBASSY_CLEANUP_SESSION", None)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT_ROOT, child_env.get("PYTHONPATH")) if p)
        child_env["EMBASSY_CLEANUP_WATCHDOG_LOG"] = self.watchdog_log_path
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.update(env or {})
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, OWNER_SCRIPT, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_env,
            )
        self._buf = b""
        self.info: dict[str, Any] = {}
        self.watchdog: psutil.Process | None = None

    # -- talking to it ----------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line the owner prints (fails the test on timeout/EOF)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"owner {self.name} said nothing for {timeout} s; stderr:\n{self.stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                rc = self.proc.wait(10)
                pytest.fail(
                    f"owner {self.name} ended (status {rc}) before answering; stderr:\n{self.stderr()}"
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait for the owner's description; hold its watchdog by identity."""
        self.info = self.read(timeout)
        wd = self.info.get("watchdog_pid")
        if wd is not None:
            self.watchdog = hold(wd)
            assert self.watchdog is not None, f"owner {self.name} reported watchdog {wd}, not running"
        return self.info

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def cmd(self, line: str, timeout: float = 60.0) -> dict[str, Any]:
        self.send(line)
        answer = self.read(timeout)
        assert "error" not in answer, f"owner {self.name}: {line!r} failed: {answer['error']}"
        return answer

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.info["sessions"]

    def kill(self, sig: int) -> float:
        """Send ``sig`` to the owner (by its Popen); return the monotonic time it was sent."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        return t0

    def wait(self, timeout: float = 30.0) -> int:
        """The owner's exit status; if it hangs, fail with the stacks of all its threads."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR2)  # _owner.py's faulthandler dumps every thread
            time.sleep(1)
            raise AssertionError(
                f"owner {self.name} still runs {timeout} s later; its stderr:\n{self.stderr()[-6000:]}"
            ) from None

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def watchdog_log(self) -> str:
        try:
            with open(self.watchdog_log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    # -- the end ----------------------------------------------------------
    def finish(self) -> None:
        """Kill (if still running) and reap the owner; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(30)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass


class CrashKit:
    def __init__(self, record_property) -> None:
        self.owners: list[OwnerProc] = []
        self._record_property = record_property

    # -- owners -----------------------------------------------------------
    def spawn(
        self,
        sessions: int = 1,
        *,
        watchdog: bool = True,
        thread: bool = False,
        temp_root: str = h.SESSIONS_ROOT,
        extra: Iterable[str] = (),
        ready: bool = True,
        name: str = "owner",
    ) -> OwnerProc:
        args = ["--temp-root", temp_root, "--sessions", str(sessions), *extra]
        if not watchdog:
            args.append("--no-watchdog")
        if thread:
            args.append("--thread")
        owner = OwnerProc(args, name)
        self.owners.append(owner)
        if ready:
            owner.ready()
        return owner

    # -- sessions ---------------------------------------------------------
    @staticmethod
    def snapshot(session: dict[str, Any]) -> dict[int, psutil.Process]:
        """Every running process of ``session``: what carries its root marker,
        and what the owner recorded, each held by identity."""
        procs = {p.pid: p for p in h.processes_under(session["root"])}
        for pid, ct in session["pids"].items():
            proc = hold(int(pid), ct)
            if proc is not None:
                procs.setdefault(proc.pid, proc)
        return procs

    @staticmethod
    def running(procs: dict[int, psutil.Process]) -> list[int]:
        return sorted(pid for pid, p in procs.items() if alive(p))

    @staticmethod
    def lost(procs: dict[int, psutil.Process]) -> list[int]:
        """The pids of ``procs`` that no longer run."""
        return sorted(pid for pid, p in procs.items() if not alive(p))

    def gone(self, snaps: dict[str, dict[int, psutil.Process]]) -> bool:
        """True when nothing of any of these sessions (root -> snapshot) is left."""
        for root, procs in snaps.items():
            if os.path.lexists(root) or self.running(procs):
                return False
        return not any(h.processes_under(root) for root in snaps)

    def leftovers(self, snaps: dict[str, dict[int, psutil.Process]]) -> str:
        out = []
        for root, procs in snaps.items():
            out.append(
                f"{root}: exists={os.path.lexists(root)} running={self.running(procs)} "
                f"marked={[p.pid for p in h.processes_under(root)]}"
            )
        return "; ".join(out)

    def wait_gone(self, snaps: dict[str, dict[int, psutil.Process]], t0: float, what: str) -> float:
        """Poll until the sessions are gone (bound: ``GONE_WITHIN_S`` from ``t0``);
        check they stay gone; record and print the time it took."""
        deadline = t0 + GONE_WITHIN_S
        gone_at = None
        while True:
            if self.gone(snaps):
                gone_at = time.monotonic()
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        assert gone_at is not None, f"{what}: not gone within {GONE_WITHIN_S} s: {self.leftovers(snaps)}"
        elapsed = gone_at - t0
        self.record(what, elapsed)
        # ... and they stay gone (a late helper must not re-create anything).
        reappeared = h.wait_until(lambda: not self.gone(snaps), timeout=0.3)
        assert not reappeared, f"{what}: came back after {elapsed:.3f} s: {self.leftovers(snaps)}"
        return elapsed

    def kill_owner_and_wait_gone(
        self, owner: OwnerProc, sig: int, what: str, sessions: Iterable[dict[str, Any]] | None = None
    ) -> float:
        """Snapshot the owner's open sessions (all, or ``sessions``), send ``sig``,
        reap the owner and wait (bounded) until nothing of those sessions is
        left; return the time it took."""
        chosen = owner.sessions if sessions is None else list(sessions)
        snaps = {s["root"]: self.snapshot(s) for s in chosen}
        for root, procs in snaps.items():
            assert os.path.isdir(root), f"precondition: {root} should exist"
            assert len(self.running(procs)) >= 5, f"precondition: {root} should run Chrome: {procs}"
        t0 = owner.kill(sig)
        rc = owner.wait(10)
        assert rc == -sig, f"owner should have died by signal {sig}, status {rc}; stderr:\n{owner.stderr()}"
        return self.wait_gone(snaps, t0, what)

    def record(self, what: str, seconds: float) -> None:
        self._record_property(what, f"{seconds:.3f}")
        print(f"\n[crash timing] {what}: {seconds:.3f} s")

    @staticmethod
    def wait_exit(proc: psutil.Process | None, timeout: float = GONE_WITHIN_S) -> bool:
        """True when ``proc`` (held by identity) is no longer running within ``timeout``."""
        if proc is None:
            return True
        return h.wait_until(lambda: not alive(proc), timeout=timeout)

    # -- the end ----------------------------------------------------------
    def finish(self) -> None:
        for owner in self.owners:
            owner.finish()
        for owner in self.owners:
            wd = owner.watchdog
            if wd is not None and not self.wait_exit(wd):
                try:
                    wd.kill()  # psutil checks the identity first
                except psutil.Error:
                    pass


@pytest.fixture
def crash(record_property):
    kit = CrashKit(record_property)
    try:
        yield kit
    finally:
        kit.finish()


@pytest.fixture
def scratch_root():
    """A private temp dir for sweep tests, under the run's sessions dir (so the
    leak guard sees any process marked with it); removed at the end, after
    killing, by identity, whatever is still marked with it."""
    root = tempfile.mkdtemp(prefix="u", dir=h.SESSIONS_ROOT)
    try:
        yield root
    finally:
        h.kill_all(h.processes_under(root))
        shutil.rmtree(root, ignore_errors=True)  # as root, chown()ed entries go too
