"""``embassy-cleanup stress``: repeat fault scenarios and report any leak.

Every iteration runs one scenario from FAULTS.md that can be injected from
outside, then scans for what it left: processes marked with the run's own
temp dir (command line, or ``TMPDIR`` in their environment), session dirs in
it, zombie children of this process, and this process's open fds.  Leftovers
are recorded as leaks and then killed by PID, so one leak does not snowball.

Fault injection signals only processes of the iteration's own session,
through psutil objects that hold their identity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, cast

import psutil

from . import _platform
from ._inventory import is_chrome_family
from ._ownership import root_in_args
from ._presets import PresetName
from ._session import ChromeUltraAggressiveCleanup

#: The run's own dir, ``<temp dir>/es-XXXXXXXX``: kept short, because the
#: session dirs inside it must leave room for Chrome's socket path.
RUN_DIR_PREFIX = "es-"
RUN_DIR_LENGTH = 1 + len(RUN_DIR_PREFIX) + 8  # "/" + prefix + mkdtemp's 8 characters
PAGE = "data:text/html,<title>stress</title><p>embassy_cleanup stress</p>"
#: How long an owner-kill scenario waits for the watchdog before it counts a leak.
OWNER_DEATH_WAIT_S = 10.0

_OWNER_CODE = """
import json, sys, time
from embassy_cleanup import ChromeUltraAggressiveCleanup
c = ChromeUltraAggressiveCleanup(temp_root=sys.argv[1], preset=sys.argv[2])
d = c.start()
d.get(sys.argv[3])
procs = c.view().recorded()
print(json.dumps({"root": c.root, "pids": [[p.pid, p.create_time] for p in procs]}), flush=True)
time.sleep(600)
"""


@dataclass
class IterationResult:
    index: int
    scenario: str
    teardown_s: float
    leaked_processes: list[int] = field(default_factory=list)
    leaked_dirs: list[str] = field(default_factory=list)
    zombies: list[int] = field(default_factory=list)
    fds: int = 0
    chrome_processes: int = 0
    chrome_rss_bytes: int = 0
    error: str | None = None

    @property
    def leaked(self) -> bool:
        return bool(self.leaked_processes or self.leaked_dirs or self.zombies or self.error)

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), teardown_s=round(self.teardown_s, 4))


@dataclass
class StressResult:
    iterations: list[IterationResult]

    @property
    def ok(self) -> bool:
        return not any(it.leaked for it in self.iterations) and self.fd_growth <= 0

    @property
    def fd_growth(self) -> int:
        if len(self.iterations) < 2:
            return 0
        # From the first iteration (lazy set-up such as the watchdog pipe is
        # done by then) to the last.
        return self.iterations[-1].fds - self.iterations[0].fds

    def summary(self) -> dict[str, Any]:
        times = sorted(it.teardown_s for it in self.iterations)

        def pct(q: float) -> float:
            if not times:
                return 0.0
            return times[min(len(times) - 1, int(round(q * (len(times) - 1))))]

        return {
            "iterations": len(self.iterations),
            "leaked_processes": sum(len(it.leaked_processes) for it in self.iterations),
            "zombies": sum(len(it.zombies) for it in self.iterations),
            "leaked_dirs": sum(len(it.leaked_dirs) for it in self.iterations),
            "errors": sum(1 for it in self.iterations if it.error),
            "owner_fd_growth": self.fd_growth,
            "teardown_p50_s": round(statistics.median(times), 4) if times else 0.0,
            "teardown_p95_s": round(pct(0.95), 4),
            "teardown_max_s": round(times[-1], 4) if times else 0.0,
            "ok": self.ok,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "iterations": [it.to_dict() for it in self.iterations]}


# -- scanning ---------------------------------------------------------------
def _marked(proc: psutil.Process, needle: str) -> bool:
    """``needle``, a path, on the command line or in ``TMPDIR`` (chromedriver's)."""
    try:
        return root_in_args(needle, proc.cmdline()) or root_in_args(
            needle, [proc.environ().get("TMPDIR", "")]
        )
    except Exception:  # psutil errors and garbled environ areas
        return False


def processes_marked(needle: str) -> list[psutil.Process]:
    """Running processes of this user marked with ``needle`` (never by name)."""
    me = os.getpid()
    return [
        proc
        for proc in psutil.process_iter(["status"])
        if proc.pid != me
        and proc.info["status"] != psutil.STATUS_ZOMBIE
        and _platform.same_user(proc)
        and _marked(proc, needle)
    ]


def _zombie_children() -> list[int]:
    out = []
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def _chrome_footprint() -> tuple[int, int]:
    count = rss = 0
    for proc in psutil.process_iter(["name", "memory_info", "status"]):
        if is_chrome_family(proc.info["name"] or "") and proc.info["status"] != psutil.STATUS_ZOMBIE:
            count += 1
            mem = proc.info["memory_info"]
            rss += mem.rss if mem is not None else 0
    return count, rss


# -- scenarios ----------------------------------------------------------------
def _session(run_root: str, preset: str, **kw: Any) -> Any:
    return ChromeUltraAggressiveCleanup(temp_root=run_root, preset=cast(PresetName, preset), **kw)


def _in_process(run_root: str, preset: str, inject: Callable[[Any, Any], None] | None, **kw: Any) -> float:
    cleanup = _session(run_root, preset, **kw)
    try:
        with cleanup as driver:
            driver.get(PAGE)
            if inject is not None:
                inject(cleanup, driver)
    except _Injected:
        pass
    assert cleanup.report is not None
    return cleanup.report.duration_s


class _Injected(Exception):
    """The exception the ``exception`` scenario raises inside the block."""


def _leader(cleanup: Any) -> psutil.Process:
    leader = cleanup.view().leader
    if leader is None or _platform.identity(leader.pid, leader.create_time) is not _platform.Identity.MATCH:
        raise RuntimeError("chromedriver is gone, or its pid was reused")
    return psutil.Process(leader.pid)


def _raise(cleanup: Any, driver: Any) -> None:
    raise _Injected("injected by the stress run")


def _kill_driver(cleanup: Any, driver: Any) -> None:
    proc = _leader(cleanup)
    proc.kill()
    proc.wait(5)


def _kill_browser(cleanup: Any, driver: Any) -> None:
    _kill(_leader(cleanup).children())


def _freeze_browser(cleanup: Any, driver: Any) -> None:
    for child in _leader(cleanup).children(recursive=True):
        try:
            child.suspend()
        except psutil.NoSuchProcess:  # a renderer Chrome replaced by itself
            pass


def _owner_killed(run_root: str, preset: str, sig: int) -> float:
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH")) if p)
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_CODE, run_root, preset, PAGE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        if not line:
            raise RuntimeError(f"the owner exited before its session started (status {owner.wait()})")
        info = json.loads(line)
        t0 = time.monotonic()
        owner.send_signal(sig)
        owner.wait(10)
        deadline = t0 + OWNER_DEATH_WAIT_S
        procs = []
        for pid, ct in info["pids"]:
            if _platform.identity(pid, ct) is _platform.Identity.MATCH:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs.append(psutil.Process(pid))

        def gone() -> bool:
            alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            return not alive and not os.path.lexists(info["root"])

        while not gone() and time.monotonic() < deadline:
            time.sleep(0.01)
        return time.monotonic() - t0
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def _concurrent(run_root: str, preset: str) -> float:
    times: list[float] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            times.append(_in_process(run_root, preset, None))
        except BaseException as err:  # reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(times)


#: Each scenario: ``run(run_root, preset) -> teardown seconds``.
_RUNNERS: dict[str, Callable[[str, str], float]] = {
    "normal": lambda root, preset: _in_process(root, preset, None),
    "exception": lambda root, preset: _in_process(root, preset, _raise),
    "sigkill-owner": lambda root, preset: _owner_killed(root, preset, signal.SIGKILL),
    "sigterm-owner": lambda root, preset: _owner_killed(root, preset, signal.SIGTERM),
    "kill-driver": lambda root, preset: _in_process(root, preset, _kill_driver),
    "kill-browser": lambda root, preset: _in_process(root, preset, _kill_browser),
    "freeze-browser": lambda root, preset: _in_process(root, preset, _freeze_browser, cleanup_timeout=5),
    "concurrent": _concurrent,
}
#: The scenarios, in the order a run cycles through them.
SCENARIOS = tuple(_RUNNERS)


def _check_scenario(name: str) -> None:
    if name not in _RUNNERS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")


def run_scenario(name: str, run_root: str, preset: str = "minimal") -> float:
    """Run one scenario; return its teardown time in seconds."""
    _check_scenario(name)
    return _RUNNERS[name](run_root, preset)


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _num_fds(me: psutil.Process) -> int:
    return me.num_fds() if hasattr(me, "num_fds") else 0


def run_stress(
    iterations: int,
    scenarios: Sequence[str] = SCENARIOS,
    temp_dir: str | None = None,
    preset: str = "minimal",
    on_iteration: Callable[[IterationResult], None] | None = None,
) -> StressResult:
    """Run ``iterations`` rounds, cycling through ``scenarios``."""
    for name in scenarios:
        _check_scenario(name)
    # Short on purpose: Chrome's socket path under it must fit 107 bytes.
    run_root = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=temp_dir)
    me = psutil.Process()
    results: list[IterationResult] = []
    try:
        for i in range(iterations):
            name = scenarios[i % len(scenarios)]
            error = None
            try:
                took = run_scenario(name, run_root, preset)
            except Exception as err:
                took, error = 0.0, f"{type(err).__name__}: {err}"
            leaked = processes_marked(run_root)
            dirs = sorted(os.path.join(run_root, n) for n in os.listdir(run_root))
            count, rss = _chrome_footprint()
            res = IterationResult(
                index=i + 1,
                scenario=name,
                teardown_s=took,
                leaked_processes=[p.pid for p in leaked],
                leaked_dirs=dirs,
                zombies=_zombie_children(),
                fds=_num_fds(me),
                chrome_processes=count,
                chrome_rss_bytes=rss,
                error=error,
            )
            _kill(leaked)  # recorded as a leak; now gone, so the next round starts clean
            psutil.wait_procs(leaked, timeout=5)
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
            results.append(res)
            if on_iteration is not None:
                on_iteration(res)
    finally:
        _kill(processes_marked(run_root))
        shutil.rmtree(run_root, ignore_errors=True)
    return StressResult(results)


def plot(result: StressResult, path: str) -> None:
    """Draw process count and memory over the iterations (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError("--plot needs matplotlib: pip install 'embassy_cleanup[plot]'") from err
    xs = [it.index for it in result.iterations]
    fig, ax1 = plt.subplots(figsize=(8, 4))
    ax1.plot(xs, [it.chrome_processes for it in result.iterations], "o-", label="Chrome-family processes")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("processes")
    ax2 = ax1.twinx()
    ax2.plot(
        xs,
        [it.chrome_rss_bytes / 2**20 for it in result.iterations],
        "s--",
        color="tab:red",
        label="RSS (MiB)",
    )
    ax2.set_ylabel("RSS of Chrome-family processes (MiB)")
    ax1.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    from matplotlib.ticker import MaxNLocator

    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles, [str(h.get_label()) for h in handles], loc="upper left")
    ax1.set_title("embassy-cleanup stress: Chrome-family processes after each iteration")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
