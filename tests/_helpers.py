"""Test helpers: find our own leftovers by our own markers, never by name.

Everything a test run starts lives under one run dir (``RUN_ROOT``): the
session roots (``temp_root=``), the bystander Chrome's profile, scratch
files.  Every Chrome process carries a path under it on its command line
(profile dir or crashpad database), chromedriver carries it in ``TMPDIR``;
that is how the leak guard finds what this test run left, and only that.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterable

import psutil

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


def _marks(proc: psutil.Process, needle: str) -> bool:
    try:
        if any(needle in a for a in proc.cmdline()):
            return True
        env = proc.environ()
    except (psutil.Error, OSError):
        return False
    except Exception:
        return False
    return any(needle in env.get(k, "") for k in ("TMPDIR", "XDG_CONFIG_HOME"))


def processes_under(needle: str) -> list[psutil.Process]:
    """Running (non-zombie) processes of this user marked with ``needle``."""
    me = os.getpid()
    uid = os.getuid()
    out = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.pid == me or proc.info["uids"].real != uid:
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, AttributeError, TypeError):
            continue
        if _marks(proc, needle):
            out.append(proc)
    return out


def session_dirs(root: str = SESSIONS_ROOT) -> list[str]:
    try:
        return sorted(os.path.join(root, n) for n in os.listdir(root) if n.startswith("embassy_cleanup-"))
    except FileNotFoundError:
        return []


def zombie_children() -> list[psutil.Process]:
    out = []
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


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


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return bool(value)
        time.sleep(interval)


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
