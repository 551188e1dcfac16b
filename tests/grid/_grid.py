"""A real Selenium Grid 4 standalone for the tests, and how to find what it started.

``start_grid()`` runs ``java -jar selenium-server-<v>.jar standalone`` on
127.0.0.1 with a free port, in its own dir under the test run dir, and gives
the JVM two markers every process it starts inherits (JVM -> chromedriver ->
Chrome): ``EMBASSY_TEST_GRID=<its dir>`` and ``TMPDIR=<its dir>/tmp`` (so the
``--user-data-dir`` chromedriver creates for each Chrome is under its dir
too).  ``crash_and_restart()`` SIGKILLs the JVM and starts a new one on the
same port with the same dir and environment.  ``stop()`` ends the JVM by its
PID, then kills whatever still carries its markers, by identity: never by
name, never by port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from tests import _helpers as h

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRID_ENV = "EMBASSY_TEST_GRID"
#: Long on purpose: a slot freed within seconds was freed by us, not by the Grid.
SESSION_TIMEOUT_S = 300
MAX_SESSIONS = 2
#: The flags Chrome needs on this node (root, no display, small /dev/shm).
NODE_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def jar_path() -> str:
    """Where scripts/fetch_grid.py puts the jar (imported, not duplicated)."""
    import importlib.util

    script = os.path.join(PROJECT_ROOT, "scripts", "fetch_grid.py")
    spec = importlib.util.spec_from_file_location("fetch_grid", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return str(mod.JAR_PATH)


def java_path() -> str | None:
    return shutil.which("java")


def _die_with_parent() -> None:
    """In the JVM's child before exec: SIGKILL it when the test process dies
    (a SIGKILLed pytest runs no finalizer).  Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GridServer:
    """One running Grid: its URL, its dir (the marker), its JVM."""

    url: str
    port: int
    dir: str
    proc: subprocess.Popen[bytes]
    started_s: float = 0.0
    log_path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tmp(self) -> str:
        return os.path.join(self.dir, "tmp")

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/status", timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())["value"]

    def sessions(self) -> dict[str, dict[str, Any]]:
        """Session id -> session entry, as ``/status`` lists them."""
        out = {}
        for node in self.status().get("nodes", []):
            for slot in node.get("slots", []):
                if slot.get("session"):
                    out[slot["session"]["sessionId"]] = slot["session"]
        return out

    def processes(self) -> list[psutil.Process]:
        """Every running process the Grid started (chromedriver, Chrome, helpers),
        found by its markers; the JVM itself is not in the list."""
        procs = {p.pid: p for p in h.processes_under(self.tmp)}
        for p in h.processes_under(self.dir):
            procs.setdefault(p.pid, p)
        procs.pop(self.proc.pid, None)
        return list(procs.values())

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """End the JVM (SIGTERM, then SIGKILL, by its PID), then whatever
        still carries this Grid's markers; remove its dir."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        h.kill_all(self.processes())
        h.kill_all(h.processes_under(self.dir))
        shutil.rmtree(self.dir, ignore_errors=True)


def _write_config(gdir: str, port: int) -> str:
    config = os.path.join(gdir, "grid.toml")
    stereotype = json.dumps({"browserName": "chrome", "platformName": "linux"})
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(
            "[server]\n"
            f'host = "127.0.0.1"\nport = {port}\n'
            "[node]\n"
            "detect-drivers = false\nselenium-manager = false\n"
            f"max-sessions = {MAX_SESSIONS}\nsession-timeout = {SESSION_TIMEOUT_S}\n"
            "[[node.driver-configuration]]\n"
            'display-name = "Chromium"\n'
            f"webdriver-executable = {json.dumps(h.CHROMEDRIVER)}\n"
            f"max-sessions = {MAX_SESSIONS}\n"
            f"stereotype = {json.dumps(stereotype)}\n"
        )
    return config


def _grid_env(gdir: str) -> dict[str, str]:
    """The JVM's environment: ours with this Grid's markers."""
    env = dict(os.environ)
    env.pop("EMBASSY_CLEANUP_SESSION", None)
    env.update({GRID_ENV: gdir, "TMPDIR": os.path.join(gdir, "tmp")})
    return env


def _launch(gdir: str, env: dict[str, str], log_path: str) -> subprocess.Popen[bytes]:
    java = java_path()
    assert java
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                java,
                "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user>/<pid> left if it is SIGKILLed
                f"-Djava.io.tmpdir={os.path.join(gdir, 'tmp')}",
                "-jar",
                jar_path(),
                "standalone",
                "--config",
                os.path.join(gdir, "grid.toml"),
            ],
            cwd=gdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe: forked from the main thread, before any exec
        )


def _wait_ready(grid: GridServer, timeout: float) -> float:
    """Seconds until ``/status`` says ready; stop the Grid and fail if it does not."""
    t0 = time.monotonic()
    try:
        while True:
            if grid.proc.poll() is not None:
                raise AssertionError(f"the Grid exited with status {grid.proc.returncode}:\n{grid.log()}")
            try:
                if grid.status(timeout=2).get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"the Grid was not ready within {timeout} s:\n{grid.log()}")
            time.sleep(0.1)
    except BaseException:
        grid.stop()
        raise
    return time.monotonic() - t0


def start_grid(name: str = "grid", timeout: float = 90.0) -> GridServer:
    """Start a Grid standalone; return once ``/status`` says ready."""
    jar = jar_path()
    assert java_path(), "java is not installed (Debian: openjdk-17-jre-headless)"
    assert os.path.isfile(jar), f"{jar} is missing: run scripts/fetch_grid.py"
    assert h.CHROMEDRIVER, "chromedriver is not installed"
    gdir = tempfile.mkdtemp(prefix=f"{name}-", dir=h.RUN_ROOT)
    os.mkdir(os.path.join(gdir, "tmp"))
    port = _free_port()
    _write_config(gdir, port)
    log_path = os.path.join(gdir, "grid.log")
    env = _grid_env(gdir)
    grid = GridServer(f"http://127.0.0.1:{port}", port, gdir, _launch(gdir, env, log_path), log_path=log_path)
    grid.extra["env"] = env
    grid.started_s = _wait_ready(grid, timeout)
    return grid


def crash_and_restart(grid: GridServer, timeout: float = 90.0) -> int:
    """SIGKILL the Grid's JVM (by its PID) and start a new one on the same port,
    with the same dir, config and environment; ``grid`` then runs the new JVM.
    What the old JVM started is not touched: it keeps running, re-parented.
    Return the old JVM's PID.

    The environment is the first JVM's, kept, not ours now: pytest changes
    ``PYTEST_CURRENT_TEST`` between a fixture's setup and the test, and a
    restart that changes the Grid's environment is another case (docs/grid.md)."""
    old = grid.proc
    old.kill()
    old.wait(10)
    # The port is free once the JVM is gone (its listening socket dies with it);
    # a Grid that cannot bind it exits, and _wait_ready says so with its log.
    grid.proc = _launch(grid.dir, grid.extra["env"], grid.log_path)
    grid.started_s = _wait_ready(grid, timeout)
    return old.pid
