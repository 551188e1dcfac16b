"""Test helpers: find our own leftovers by our own markers, never by name.

Everything a test run starts lives under one run dir (``RUN_ROOT``): the
session roots (``temp_root=``), the bystander Chrome's profile, scratch
files.  Every Chrome process carries a path under it on its command line
(profile dir or crashpad database), chromedriver carries it in ``TMPDIR``;
that is how the leak guard finds what this test run left, and only that.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterable

import psutil

from embassy_cleanup import _platform
from embassy_cleanup._clock import Clock

# Short on purpose: Chrome's singleton socket path under it must fit 107 bytes.
RUN_ROOT = tempfile.mkdtemp(prefix="embassy-t-")
SESSIONS_ROOT = os.path.join(RUN_ROOT, "s")
os.makedirs(SESSIONS_ROOT, exist_ok=True)

#: Python code that names the running process "chromium" (Linux ``prctl``):
#: a fake Chrome that carries a session root on its command line is the
#: session's only when its name is Chrome-family (see ``_ownership``).
CHROME_NAME_CODE = "import ctypes; ctypes.CDLL(None).prctl(15, b'chromium', 0, 0, 0)\n"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


#: The environment variables that carry a run-dir marker (chromedriver's
#: ``TMPDIR``, the bystander's ``XDG_CONFIG_HOME``).
MARKER_ENV = ("TMPDIR", "XDG_CONFIG_HOME")
_HAVE_PROC = os.path.isdir("/proc/self") and sys.platform.startswith("linux")


def _holds(text: bytes, needle: bytes, path: bool) -> bool:
    """``text`` holds ``needle``; with ``path``, as the path ``needle`` or a
    path under it: ``/run/s`` then marks ``/run/s/x`` and ``--root=/run/s``,
    not ``/run/stranger``."""
    if not path:
        return needle in text
    start = text.find(needle)
    while start >= 0:
        after = text[start + len(needle) : start + len(needle) + 1]
        if after in (b"", b"/", b"\0"):
            return True
        start = text.find(needle, start + 1)
    return False


def _marks(proc: psutil.Process, needle: str, path: bool = False) -> bool:
    raw = needle.encode()
    try:
        if any(_holds(a.encode(), raw, path) for a in proc.cmdline()):
            return True
        env = proc.environ()
    except (psutil.Error, OSError):
        return False
    except Exception:
        return False
    return any(_holds(env.get(k, "").encode(), raw, path) for k in MARKER_ENV)


def _read_proc(pid: int, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read
        return b""


def _marked_pid(pid: int, needle: bytes, uid: int, path: bool) -> bool:
    """``pid`` runs as ``uid`` and carries ``needle`` in an argument or a
    marker variable: two raw reads of /proc, no psutil object.  A zombie
    has an empty command line and environment, so it never matches."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
    except OSError:
        return False
    if _holds(_read_proc(pid, "cmdline"), needle, path):  # NUL-separated arguments
        return True
    for var in _read_proc(pid, "environ").split(b"\0"):
        name, _, value = var.partition(b"=")
        if name.decode("ascii", "replace") in MARKER_ENV and _holds(value, needle, path):
            return True
    return False


def _hold(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """A psutil handle (identity: pid plus create time) on a running ``pid``."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None  # the pid was reused since the row was read
        return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def marked_among(pids: Iterable[int], needle: str, path: bool = False) -> list[psutil.Process]:
    """The processes among ``pids`` (not this one) that run as this user and
    carry ``needle`` (see :func:`processes_under`); with ``path``, as a path
    or a path's parent (see :func:`_holds`)."""
    me = os.getpid()
    uid = os.getuid()
    out = []
    if _HAVE_PROC:
        raw = needle.encode()
        for pid in pids:
            if pid != me and _marked_pid(pid, raw, uid, path):
                proc = _hold(pid)
                if proc is not None:
                    out.append(proc)
        return out
    for pid in pids:
        proc = _hold(pid) if pid != me else None
        try:
            if proc is not None and proc.uids().real == uid and _marks(proc, needle, path):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def processes_under(needle: str) -> list[psutil.Process]:
    """Running (non-zombie) processes of this user marked with ``needle`` (a
    substring: a dir, or the start of a dir's name): on an argument (profile
    dir, crashpad database) or in ``TMPDIR`` / ``XDG_CONFIG_HOME``.  On Linux
    one listing of /proc and raw reads (a psutil object only for a match);
    elsewhere through psutil."""
    if _HAVE_PROC:
        pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    else:
        pids = psutil.pids()
    return marked_among(pids, needle)


def session_dirs(root: str = SESSIONS_ROOT) -> list[str]:
    try:
        return sorted(os.path.join(root, n) for n in os.listdir(root) if n.startswith("embassy_cleanup-"))
    except FileNotFoundError:
        return []


def zombie_children() -> list[psutil.Process]:
    """This process's zombie children.  Where ``waitid`` exists, first one
    ``waitid(WNOWAIT)`` asks whether there is any (it reaps nothing, so each
    ``Popen`` still gets its child's status); only then the process table."""
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return []
        except ChildProcessError:  # no children at all
            return []
    out = []
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


#: Chrome processes that come and go by themselves, which no test can expect
#: to last: renderers (replaced after a navigation), utility processes (some
#: end when idle: the data decoder) and the GPU process (the browser relaunches
#: it when its GPU watchdog finds it hung, which a loaded 2-core machine can
#: bring about; the new one has ``--gpu-recent-crash-count=1``).
TRANSIENT_TYPES = ("--type=renderer", "--type=utility", "--type=gpu-process")
#: pid -> "name --type=..." of every process ``steady`` kept, read while it
#: ran, so that a failure can name a process that is gone since.
KINDS: dict[int, str] = {}


def steady(procs: dict[int, psutil.Process], settle_s: float = 1.0) -> dict[int, psutil.Process]:
    """The processes of ``procs`` that must not come and go: all but
    ``TRANSIENT_TYPES`` (and any already gone).

    A command line is read twice, ``settle_s`` apart, and a process whose
    command line changed in between is left out: a child the browser has
    forked but not yet exec'd still shows the browser's command line (no
    ``--type=``), and a zygote's child shows the zygote's until it renames
    itself; read once, either would pass for a steady process, and end later
    by itself (seen once: a live session "lost" a "chromium" without a type).
    """

    def read(p: psutil.Process) -> list[str] | None:
        try:
            return [p.name(), *p.cmdline()]
        except psutil.Error:
            return None

    first = {pid: read(p) for pid, p in procs.items()}
    time.sleep(settle_s)
    out = {}
    for pid, p in procs.items():
        seen = read(p)
        if seen is None or seen != first[pid] or any(a in TRANSIENT_TYPES for a in seen):
            continue
        out[pid] = p
        KINDS[pid] = " ".join([seen[0], *(a for a in seen if a.startswith("--type="))])
    return out


def named(pids: Iterable[int]) -> str:
    """``"pid (kind)"`` for pids ``steady`` kept (the kind read while it ran)."""
    return ", ".join(f"{pid} ({KINDS.get(pid, '?')})" for pid in pids)


def describe(procs: Iterable[psutil.Process]) -> list[str]:
    """``"pid name"`` of each process (its pid alone once it is gone)."""
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {p.name()}")
        except psutil.Error:
            out.append(str(p.pid))
    return out


class LeakGuard:
    """What a test left behind, found by this run's marker, cheaply enough
    to look after every test.

    One :meth:`check` is one pass over the process table
    (``_platform.process_table()``: pid, parent, create time from one
    ``/proc/<pid>/stat`` read each).  Only processes born since the previous
    pass, minus :attr:`SLACK`, can be new leftovers (anything older was
    already looked at, and its marker, set at exec, cannot change); only
    their command line and environment are read.  Create times are compared
    with create times (the newest one in the table), never with the wall
    clock.  The sessions dir marks as a path (``<run>/s`` marks ``<run>/s/x``,
    not ``<run>/stranger``).  Leftovers get ``settle`` seconds to exit by themselves (a
    teardown may still be finishing), then are SIGKILLed by identity.
    """

    #: Processes born this long before the previous pass's newest one are
    #: looked at again: one forked but not yet exec'ed then still carried its
    #: parent's command line.
    SLACK = 1.0

    def __init__(self, needle: str = SESSIONS_ROOT, root: str = SESSIONS_ROOT, settle: float = 3.0) -> None:
        self.needle = needle
        self.root = root
        self.settle = settle
        self._since = self._newest(_platform.process_table()) - self.SLACK

    @staticmethod
    def _newest(rows: Iterable[_platform.ProcRow]) -> float:
        return max((r.create_time for r in rows), default=0.0)

    def check(self) -> list[str]:
        """Kill and remove what is left; return one line per kind of leftover
        (processes, session dirs, zombie children), empty when clean."""
        rows = _platform.process_table()
        fresh = [r.pid for r in rows if r.create_time >= self._since and not r.zombie]
        self._since = self._newest(rows) - self.SLACK
        marked = marked_among(fresh, self.needle, path=True)
        if marked:
            wait_until(lambda: not [p for p in marked if _running(p)], timeout=self.settle)
        left = [p for p in marked if _running(p)]
        described = describe(left)
        kill_all(left)
        dirs = session_dirs(self.root)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        zombies = [z.pid for z in zombie_children()]
        problems = []
        if described:
            problems.append(f"processes left: {described}")
        if dirs:
            problems.append(f"session dirs left: {dirs}")
        if zombies:
            problems.append(f"zombie children of the test process: {zombies}")
        return problems


def kill_all(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL exactly these processes (identity held by psutil), then wait."""
    procs = list(procs)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    # "Gone" means not running: a zombie re-parented to init is init's to reap
    # (this VM's init reaps only every ~1.5 s), and waiting for it buys nothing.
    wait_until(lambda: not [p for p in procs if _running(p)], timeout=5)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_note(template: str, text: str, **known: object) -> bool:
    """Whether ``text`` is what the library's ``template`` (a report-text
    constant, a str.format template) gives: the fields in ``known`` must
    have those values, the others match anything.  Tests match report texts
    through the library's constants, never by retyping its prose."""
    pattern = ""
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name is not None:
            pattern += re.escape(str(known[name])) if name in known else ".+?"
    return re.fullmatch(pattern, text, re.S) is not None


def has_note(template: str, notes: Iterable[str], **known: object) -> bool:
    """Whether any of ``notes`` is ``template`` (see :func:`is_note`)."""
    return any(is_note(template, n, **known) for n in notes)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return bool(value)
        time.sleep(interval)


class FakeClock(Clock):
    """A clock that moves only when told: ``sleep()`` advances it at once, as
    trio's ``MockClock(autojump_threshold=0)`` does.  Hand it to
    ``run_teardown(..., clock=)`` or ``Budget(..., clock=)`` and budget logic
    runs in microseconds, the same under any load.  ``sleeps`` lists every
    sleep asked for, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (what a stage "spends" without sleeping)."""
        if seconds > 0:
            self.t += seconds


def pid_running(pid: int, create_time: float | None = None) -> bool:
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 0.01:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(pids: Iterable[int] = (), paths: Iterable[str] = (), ports: Iterable[int] = ()) -> None:
    """Every pid is not running, every path absent, every port not listening."""
    running = [p for p in pids if pid_running(p)]
    assert not running, f"still running: {running}"
    present = [p for p in paths if os.path.lexists(p)]
    assert not present, f"still present: {present}"
    listening = [p for p in ports if port_listening(p)]
    assert not listening, f"still listening: {listening}"


def port_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- bystanders: things that are not ours and must survive ---------------
@dataclass
class Bystander:
    """A Chrome started without our API, and a server on a 9000-10000 port."""

    chrome: subprocess.Popen
    chrome_dir: str
    chrome_pids: dict[int, float] = field(default_factory=dict)
    server: subprocess.Popen | None = None
    port: int = 0

    def alive_chrome_pids(self) -> list[int]:
        return [pid for pid, ct in self.chrome_pids.items() if pid_running(pid, ct)]

    def assert_alive(self) -> None:
        dead = [pid for pid, ct in self.chrome_pids.items() if not pid_running(pid, ct)]
        assert not dead, f"bystander Chrome processes were killed: {dead}"
        assert self.server is not None and self.server.poll() is None, "bystander server was killed"
        assert port_listening(self.port), f"bystander port {self.port} no longer listens"


def _free_port_in(lo: int, hi: int) -> int:
    for port in range(lo + (os.getpid() % 500), hi):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def start_bystander() -> Bystander:
    assert CHROMIUM, "chromium is not installed"
    chrome_dir = tempfile.mkdtemp(prefix="bystander-", dir=RUN_ROOT)
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(chrome_dir, "config"), TMPDIR=chrome_dir)
    chrome = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            f"--user-data-dir={chrome_dir}/profile",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    by = Bystander(chrome=chrome, chrome_dir=chrome_dir)
    try:
        wait_until(lambda: len(processes_under(chrome_dir)) >= 4, timeout=20)
        settle_bystander(by)
        by.port = _free_port_in(9000, 10000)
        by.server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket,sys,time\n"
                "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(('127.0.0.1',{by.port})); s.listen(); print('up', flush=True); time.sleep(3600)",
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert by.server.stdout is not None and by.server.stdout.readline().strip() == b"up"
    except BaseException:
        stop_bystander(by)  # what did start: nothing of a failed start-up outlives it
        raise
    return by


def settle_bystander(by: Bystander, timeout: float = 15.0) -> None:
    """Wait until the bystander Chrome's set of processes stops changing, then
    make that set the one ``assert_alive()`` checks: start-up intermediates
    exit on their own and would otherwise look "killed".  Found by the
    bystander's own marker (its dir), never by name."""
    seen: list[set[tuple[int, float]]] = []

    def stable() -> bool:
        now = set()
        for p in processes_under(by.chrome_dir):
            try:
                now.add((p.pid, p.create_time()))
            except psutil.Error:
                continue
        seen.append(now)
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    assert wait_until(stable, timeout=timeout, interval=0.25), "the bystander Chrome did not settle"
    assert len(seen[-1]) >= 4, f"the bystander Chrome runs only {sorted(seen[-1])}"
    by.chrome_pids = dict(seen[-1])


def stop_bystander(by: Bystander) -> None:
    kill_all(processes_under(by.chrome_dir))
    for proc in (by.chrome, by.server):
        if proc is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
    shutil.rmtree(by.chrome_dir, ignore_errors=True)


class BystanderSlot:
    """One bystander shared by the tests of a module: started by the first
    :meth:`get`, replaced after a :meth:`discard` (a test killed it or
    failed), stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self._by: Bystander | None = None

    def get(self) -> Bystander:
        if self._by is None:
            self._by = start_bystander()
        return self._by

    def discard(self) -> None:
        by, self._by = self._by, None
        if by is not None:
            stop_bystander(by)

    def stop(self) -> None:
        self.discard()
