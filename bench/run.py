"""Benchmarks: embassy_cleanup against plain Selenium, measured in the same run.

Every comparison is interleaved (plain, ours, plain, ours ...) with the same
Chrome flags, and reported as median, p95 and the ratio ours/plain.  Writes
the raw figures as JSON and a Markdown report (docs/benchmarks.md).

    python bench/run.py                 # full run (~15 min on 2 cores)
    python bench/run.py --smoke         # one iteration of everything (the test suite runs this)
    python bench/run.py --context-jobs 4   # fewer jobs per figure in the contexts section
    python bench/run.py --only lifecycle,contexts   # some sections; writes only the JSON

Plain Selenium sessions get TMPDIR pointed into the bench's own dir (so
Chromium's litter lands there) and are cleaned up by the harness by recorded
PID, never by name.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)  # pool_bench, also when this file is loaded as a module (tests)

from context_bench import bench_contexts, render_contexts  # noqa: E402
from launch_bench import bench_launch_failure, render_launch  # noqa: E402
from pool_bench import bench_pool, render_pool  # noqa: E402

from embassy_cleanup import ChromeUltraAggressiveCleanup, sweep_stale  # noqa: E402
from embassy_cleanup._inventory import take_inventory  # noqa: E402
from embassy_cleanup._launcher import chrome_arguments, resolve_binary, resolve_driver  # noqa: E402
from embassy_cleanup._options import validate  # noqa: E402

# -- pages ---------------------------------------------------------------------
STATIC = b"<!doctype html><title>static</title><h1>Static page</h1><p>Plain text.</p>"


def _png(width: int = 64, height: int = 64) -> bytes:
    """A small RGB gradient PNG, built by hand (no imaging library needed)."""
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


HEAVY = (
    "<!doctype html><title>heavy</title><h1>Heavy page</h1>"
    + "".join(f'<img src="/img{i}.png" width="64" height="64">' for i in range(12))
    + "".join(f'<iframe src="/frame{i}.html" width="200" height="120"></iframe>' for i in range(4))
    + "".join(f'<script src="/script{i}.js"></script>' for i in range(3))
    + "<div id='out'></div><script>document.getElementById('out').textContent = String(window.acc);</script>"
).encode()
FRAME = b"<!doctype html><title>frame</title><p>frame</p><script>let s=0;for(let i=0;i<2e5;i++)s+=i;</script>"
SCRIPT = (
    b"window.acc=(window.acc||0)+1;"
    b"{const big=new Array(20000).fill(0).map((_, i)=>({i, s: 'x'+i}));"
    b"window.keep=(window.keep||[]).concat([big.length]);}"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    png = _png()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/static.html":
            body, ctype = STATIC, "text/html"
        elif path == "/heavy.html":
            body, ctype = HEAVY, "text/html"
        elif path.startswith("/frame"):
            body, ctype = FRAME, "text/html"
        elif path.startswith("/script"):
            body, ctype = SCRIPT, "application/javascript"
        elif path.startswith("/img"):
            body, ctype = self.png, "image/png"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def page_ok(driver: Any, which: str) -> bool:
    """Did the page render correctly?"""
    if which == "static":
        return driver.title == "static" and "Static page" in driver.page_source
    ok = driver.execute_script(
        "return document.title === 'heavy' && document.getElementById('out').textContent === '3' && "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth === 64) && "
        "Array.from(document.querySelectorAll('iframe')).every(f => f.contentDocument && "
        "f.contentDocument.title === 'frame');"
    )
    return bool(ok)


# -- plain Selenium -------------------------------------------------------------
class Plain:
    """A plain webdriver.Chrome() session with the same flags as ours."""

    def __init__(self, bench_root: str, preset: str, new_group: bool = False) -> None:
        """``new_group``: chromedriver starts in a process group of its own
        (``start_new_session``), and the browser it launches inherits it:
        the physical floor's tree (see :func:`floor_kill`)."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.dir = tempfile.mkdtemp(prefix="f-" if new_group else "p-", dir=bench_root)
        opts = webdriver.ChromeOptions()
        for arg in chrome_arguments(validate(preset=preset), os.path.join(self.dir, "profile")):
            opts.add_argument(arg)
        binary = resolve_binary(None)
        if binary:
            opts.binary_location = binary
        env = dict(os.environ, TMPDIR=self.dir, XDG_CONFIG_HOME=os.path.join(self.dir, "config"))
        popen_kw = {"start_new_session": True} if new_group else {}
        self.service = Service(resolve_driver(None)[0], env=env, popen_kw=popen_kw)
        self.driver = webdriver.Chrome(service=self.service, options=opts)
        self.procs = self.tree()

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.service.process.pid)
        procs = {root.pid: root}
        for c in root.children(recursive=True):
            procs[c.pid] = c
        for p in psutil.process_iter():
            try:
                if any(self.dir in a for a in p.cmdline()):
                    procs.setdefault(p.pid, p)
            except psutil.Error:
                continue
        return list(procs.values())

    def running(self) -> list[psutil.Process]:
        out = []
        for p in self.procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def dispose(self) -> None:
        """The harness's own cleanup: recorded PIDs, then the dir."""
        left = self.running()
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class FloorRun:
    """One floor measurement, in seconds from the SIGKILL."""

    group_gone_s: float  # chromedriver reaped, every process of the group ended
    all_gone_s: float  # every process of the tree ended, those outside the group too
    removed_s: float  # and the dir removed: the floor
    outside: list[str]  # names of the tree's processes outside the group


def floor_kill(floor: Plain) -> FloorRun:
    """The physical floor of a teardown: one SIGKILL of the process group
    that holds the whole tree (chromedriver, started in a group of its own,
    and the browser it launched), the leader reaped, every process gone,
    then the dir (profile, and the TMPDIR Chromium's litter lands in)
    removed.  No WebDriver call, no scan, no verification: what the kernel
    and the file system cost.  Processes of the tree outside the group (the
    kill does not reach them) end on their own once the browser is gone; the
    floor waits for them too."""
    pgid = floor.service.process.pid
    outside: list[str] = []
    group: list[psutil.Process] = []
    for p in floor.procs:
        try:
            if os.getpgid(p.pid) != pgid:
                outside.append(p.name())
            else:
                group.append(p)
        except (OSError, psutil.Error):
            continue

    def running(procs: list[psutil.Process]) -> bool:
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    return True
            except psutil.Error:
                continue
        return False

    t0 = time.perf_counter()
    os.killpg(pgid, signal.SIGKILL)
    floor.service.process.wait()
    while running(group) and time.perf_counter() - t0 < 30:
        time.sleep(0.001)
    group_gone = time.perf_counter() - t0
    while running(floor.procs) and time.perf_counter() - t0 < 30:
        time.sleep(0.001)
    all_gone = time.perf_counter() - t0
    shutil.rmtree(floor.dir)
    removed = time.perf_counter() - t0
    floor.driver.command_executor.close()  # the client's idle HTTP connections; nothing is sent
    return FloorRun(group_gone, all_gone, removed, outside)


def tree_memory(procs: list[psutil.Process]) -> tuple[int, int, int]:
    """(process count, PSS bytes, USS bytes) of the running processes."""
    n = pss = uss = 0
    for p in procs:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            m = p.memory_full_info()
        except psutil.Error:
            continue
        n += 1
        pss += getattr(m, "pss", 0)
        uss += m.uss
    return n, pss, uss


def ours_procs(cleanup: ChromeUltraAggressiveCleanup) -> list[psutil.Process]:
    out = []
    for pid in (p.pid for p in cleanup.view().discover()):
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


# -- statistics -------------------------------------------------------------
def stats(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return {"n": len(s), "median": statistics.median(s), "p95": p95, "min": s[0], "max": s[-1]}


def ratio(ours: dict[str, float], plain: dict[str, float]) -> float | None:
    if not ours.get("n") or not plain.get("n") or not plain["median"]:
        return None
    return ours["median"] / plain["median"]


# -- the benchmarks -----------------------------------------------------------
def bench_lifecycle(runs: int, root: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Start-up and teardown, interleaved: plain, ours graceful, ours fast,
    and the physical floor (:func:`floor_kill`) of an identical tree."""
    t: dict[str, list[float]] = {
        k: []
        for k in (
            "plain_start",
            "ours_start",
            "plain_quit_return",
            "plain_quit_gone",
            "ours_graceful_clean",
            "ours_fast_clean",
            "floor_kill_gone",
            "floor_group_gone",
            "floor_all_gone",
        )
    }
    floor_outside: dict[str, int] = {}
    plain_left_dirs = 0
    stage_ms: dict[str, dict[str, list[float]]] = {"ours_graceful_clean": {}, "ours_fast_clean": {}}
    for i in range(runs):
        t0 = time.perf_counter()
        plain = Plain(root, "balanced")
        t["plain_start"].append(time.perf_counter() - t0)
        plain.driver.get("data:text/html,<title>x</title>")
        t0 = time.perf_counter()
        plain.driver.quit()
        t["plain_quit_return"].append(time.perf_counter() - t0)
        while plain.running() and time.perf_counter() - t0 < 30:
            time.sleep(0.002)
        t["plain_quit_gone"].append(time.perf_counter() - t0)
        plain_left_dirs += int(os.path.isdir(os.path.join(plain.dir, "profile")))
        plain.dispose()

        for graceful, key in ((True, "ours_graceful_clean"), (False, "ours_fast_clean")):
            cleanup = ChromeUltraAggressiveCleanup(temp_root=root, graceful=graceful)
            t0 = time.perf_counter()
            driver = cleanup.start()
            if graceful:
                t["ours_start"].append(time.perf_counter() - t0)
            driver.get("data:text/html,<title>x</title>")
            t0 = time.perf_counter()
            report = cleanup.close()
            t[key].append(time.perf_counter() - t0)
            per_stage: dict[str, float] = {}
            for st in report.stages:  # summed over passes
                per_stage[st.stage.value] = per_stage.get(st.stage.value, 0.0) + st.duration_s * 1000
            for name, ms in per_stage.items():
                stage_ms[key].setdefault(name, []).append(ms)
            if not report.ok:
                log(f"  ours left {report.leftovers}")

        floor = Plain(root, "balanced", new_group=True)
        try:
            floor.driver.get("data:text/html,<title>x</title>")
            floor.procs = floor.tree()  # the whole tree, as it runs the page
            run = floor_kill(floor)
            t["floor_kill_gone"].append(run.removed_s)
            t["floor_group_gone"].append(run.group_gone_s)
            t["floor_all_gone"].append(run.all_gone_s)
            for name in run.outside:
                floor_outside[name] = floor_outside.get(name, 0) + 1
        finally:
            floor.dispose()
        log(f"  lifecycle {i + 1}/{runs}")
    out = {k: stats(v) for k, v in t.items()}
    out["plain_profile_dirs_left_after_quit"] = plain_left_dirs
    out["floor_processes_outside_the_group"] = floor_outside
    out["ours_fast_stages_ms"] = {k: statistics.median(v) for k, v in stage_ms["ours_fast_clean"].items()}
    out["ours_graceful_stages_ms"] = {
        k: statistics.median(v) for k, v in stage_ms["ours_graceful_clean"].items()
    }
    out["load_at_end"] = os.getloadavg()
    out["ratios"] = {
        "start_ours_vs_plain": ratio(out["ours_start"], out["plain_start"]),
        "fast_clean_vs_plain_quit_return": ratio(out["ours_fast_clean"], out["plain_quit_return"]),
        "fast_clean_vs_plain_quit_gone": ratio(out["ours_fast_clean"], out["plain_quit_gone"]),
        "graceful_clean_vs_plain_quit_return": ratio(out["ours_graceful_clean"], out["plain_quit_return"]),
        "graceful_clean_vs_plain_quit_gone": ratio(out["ours_graceful_clean"], out["plain_quit_gone"]),
        "fast_clean_vs_floor": ratio(out["ours_fast_clean"], out["floor_kill_gone"]),
        "graceful_clean_vs_floor": ratio(out["ours_graceful_clean"], out["floor_kill_gone"]),
        "plain_quit_return_vs_floor": ratio(out["plain_quit_return"], out["floor_kill_gone"]),
        "plain_quit_gone_vs_floor": ratio(out["plain_quit_gone"], out["floor_kill_gone"]),
    }
    return out


def bench_frozen(runs: int, root: str) -> dict[str, Any]:
    xs = []
    for _ in range(runs):
        cleanup = ChromeUltraAggressiveCleanup(temp_root=root)
        driver = cleanup.start()
        driver.get("data:text/html,<title>x</title>")
        leader = cleanup.view().leader
        for c in psutil.Process(leader.pid).children(recursive=True):
            try:
                c.suspend()
            except psutil.NoSuchProcess:  # a renderer Chrome replaced by itself
                pass
        t0 = time.perf_counter()
        cleanup.close()
        xs.append(time.perf_counter() - t0)
    return {
        "ours_frozen_clean": stats(xs),
        "cleanup_timeout": 10.0,
        "plain_quit_frozen_note": "about 70 s measured by hand (issue 5); not re-run here",
    }


#: Stock first: the others are compared with it.
FOOTPRINT_PRESETS = ("stock", "balanced", "minimal", "headless-shell")


def bench_footprint(runs: int, root: str, base_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved like the rest: each run measures every preset and page in
    turn, so that a change in the machine's load (which moves PSS: see the
    report) hits every preset alike.  PSS and USS are also compared run by
    run against the stock session of the same round (``pss_vs_stock``: the
    median of those ratios)."""
    keys = [(preset, page) for preset in FOOTPRINT_PRESETS for page in ("static", "heavy")]
    raw: dict[str, dict[str, Any]] = {
        f"{p}/{pg}": {"n": [], "pss": [], "uss": [], "ok": [], "used": set()} for p, pg in keys
    }
    for i in range(runs):
        for preset, page in keys:
            r = raw[f"{preset}/{page}"]
            cleanup = ChromeUltraAggressiveCleanup(temp_root=root, preset=preset, graceful=False)
            with cleanup as driver:
                r["used"].add(cleanup.preset_used)
                driver.get(f"{base_url}/{page}.html")
                r["ok"].append(page_ok(driver, page))
                time.sleep(1.0)  # let the tree settle after load
                n, pss, uss = tree_memory(ours_procs(cleanup))
            r["n"].append(n)
            r["pss"].append(pss)
            r["uss"].append(uss)
        log(f"  footprint round {i + 1}/{runs}")
    out: dict[str, Any] = {}
    for key, r in raw.items():
        out[key] = {
            "processes": stats([float(c) for c in r["n"]]),
            "pss_mb": stats([p / 2**20 for p in r["pss"]]),
            "uss_mb": stats([u / 2**20 for u in r["uss"]]),
            "renders_correctly": all(r["ok"]),
            "preset_used": sorted(u for u in r["used"] if u),
        }
        log(f"  footprint {key}: {out[key]['pss_mb']['median']:.0f} MB PSS")
    for page in ("static", "heavy"):
        stock = raw[f"stock/{page}"]
        for preset in FOOTPRINT_PRESETS[1:]:
            r = raw[f"{preset}/{page}"]
            out[f"{preset}/{page}"]["pss_vs_stock"] = statistics.median(
                a / b for a, b in zip(r["pss"], stock["pss"]) if b
            )
            out[f"{preset}/{page}"]["uss_vs_stock"] = statistics.median(
                a / b for a, b in zip(r["uss"], stock["uss"]) if b
            )
    return out


_OWNER = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
from embassy_cleanup import ChromeUltraAggressiveCleanup
c = ChromeUltraAggressiveCleanup(temp_root=sys.argv[1])
d = c.start(); d.get("data:text/html,<title>x</title>")
print(json.dumps({"root": c.root, "pids": list(c.pids)}), flush=True)
time.sleep(600)
"""


def bench_crash(runs: int, root: str) -> dict[str, Any]:
    xs = []
    for _ in range(runs):
        owner = subprocess.Popen(
            [sys.executable, "-c", _OWNER, root, os.path.dirname(HERE)], stdout=subprocess.PIPE
        )
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline())
        procs = []
        for pid in info["pids"]:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        t0 = time.perf_counter()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()

        def alive(procs: list[psutil.Process] = procs) -> bool:
            return any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)

        while (alive() or os.path.exists(info["root"])) and time.perf_counter() - t0 < 30:
            time.sleep(0.005)
        xs.append(time.perf_counter() - t0)
    return {
        "ours_owner_sigkill_to_gone": stats(xs),
        "plain": "never: plain Selenium leaves every process and the profile dir (issue 2)",
    }


def bench_scale(root: str, nproc: int, ndirs: int) -> dict[str, Any]:
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(nproc)]
    scale_dir = tempfile.mkdtemp(prefix="sc-", dir=root)
    try:
        old = time.time() - 3600
        for i in range(ndirs):
            d = os.path.join(scale_dir, f"embassy_cleanup-{i:012x}")
            os.mkdir(d)
            open(os.path.join(d, "owner.lock"), "w").close()  # unlocked: a dead owner
            os.utime(d, (old, old))
        t0 = time.perf_counter()
        inv = take_inventory(scale_dir, memory=False)
        diag = time.perf_counter() - t0
        t0 = time.perf_counter()
        inv_mem = take_inventory(scale_dir, memory=True)
        diag_mem = time.perf_counter() - t0
        t0 = time.perf_counter()
        swept = sweep_stale(scale_dir)
        sweep_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        sweep_stale(scale_dir)
        sweep_empty = time.perf_counter() - t0
        return {
            "unrelated_processes": nproc,
            "stale_dirs": ndirs,
            "diagnose_s": diag,
            "diagnose_with_memory_s": diag_mem,
            "stale_dirs_seen": len(inv.stale_dirs),
            "processes_listed": len(inv_mem.processes),
            "sweep_of_stale_dirs_s": sweep_full,
            "swept": len(swept),
            "sweep_when_nothing_stale_s": sweep_empty,
        }
    finally:
        for s in sleepers:
            s.kill()
        for s in sleepers:
            s.wait()
        shutil.rmtree(scale_dir, ignore_errors=True)


# -- sections -----------------------------------------------------------------
@dataclass
class Context:
    """What every benchmark section gets."""

    runs: int
    root: str
    log: Callable[[str], None]
    smoke: bool
    #: Jobs per figure of the contexts section (bench/context_bench.py).
    context_jobs: int = 12


def _footprint_section(ctx: Context) -> dict[str, Any]:
    with serve() as base:
        return bench_footprint(max(1, ctx.runs // 4), ctx.root, base, ctx.log)


def _pool_section(ctx: Context) -> dict[str, Any]:
    with serve() as base:
        return bench_pool(ctx.runs, ctx.root, base, ctx.log)


#: The benchmark sections, in the order they run; each result goes into the
#: JSON under its name.  A new benchmark (pool vs fresh sessions, say) is one
#: function taking a Context, one entry here, and its table in render_markdown.
SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "lifecycle": lambda ctx: bench_lifecycle(ctx.runs, ctx.root, ctx.log),
    "frozen": lambda ctx: bench_frozen(max(1, ctx.runs // 4), ctx.root),
    "crash": lambda ctx: bench_crash(max(1, ctx.runs // 2), ctx.root),
    "footprint": _footprint_section,
    "scale": lambda ctx: bench_scale(ctx.root, 50 if ctx.smoke else 2000, 10 if ctx.smoke else 500),
    "pool": _pool_section,
    "contexts": lambda ctx: bench_contexts(ctx.context_jobs, ctx.root, ctx.log),
    "launch_failure": lambda ctx: bench_launch_failure(max(1, ctx.runs // 4), ctx.root, ctx.smoke, ctx.log),
}


# -- report -------------------------------------------------------------------
def _ms(d: dict[str, float]) -> str:
    return f"{d['median'] * 1000:.0f} ms (p95 {d['p95'] * 1000:.0f})" if d.get("n") else "-"


def _load(load: Any) -> str:
    return "-" if not load else ", ".join(f"{x:.1f}" for x in load)


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def render_floor(lc: dict[str, Any]) -> list[str]:
    """The teardown table against its physical floor (issue 15)."""
    floor = lc.get("floor_kill_gone", {})
    if not floor.get("n"):
        return []
    r = lc["ratios"]
    outside: dict[str, int] = lc.get("floor_processes_outside_the_group", {})
    return [
        "### Against the physical floor",
        "",
        "The floor is an identical tree (chromedriver started by hand in a process group of its own, the",
        "browser it launched with the same flags, the same page loaded), ended by one `killpg(SIGKILL)`:",
        "timed until chromedriver is reaped, every process of the tree has ended and the dir (profile and",
        "`TMPDIR`) is removed. No WebDriver call, no scan, no verification: the cost of the kernel ending a",
        "dozen processes and of the file system. Measured in the same runs, interleaved with the rows above.",
        "",
        "| teardown | median (p95) | ratio to the floor |",
        "|---|---|---|",
        f"| physical floor: one SIGKILL of the group, to gone and dir removed | {_ms(floor)} | 1.00x |",
        f"| of which: the group's processes ended (chromedriver reaped) | {_ms(lc.get('floor_group_gone', {}))} "
        "| |",
        f"| of which: every process of the tree ended | {_ms(lc.get('floor_all_gone', {}))} | |",
        f"| embassy_cleanup fast mode (graceful=False), to verified clean | {_ms(lc['ours_fast_clean'])} | "
        f"{_x(r.get('fast_clean_vs_floor'))} |",
        f"| embassy_cleanup graceful, to verified clean | {_ms(lc['ours_graceful_clean'])} | "
        f"{_x(r.get('graceful_clean_vs_floor'))} |",
        f"| plain `quit()` returning (profile dir left) | {_ms(lc['plain_quit_return'])} | "
        f"{_x(r.get('plain_quit_return_vs_floor'))} |",
        f"| plain `quit()`, until every process is gone (profile dir left) | {_ms(lc['plain_quit_gone'])} | "
        f"{_x(r.get('plain_quit_gone_vs_floor'))} |",
        "",
        "The browser and its helpers inherit chromedriver's process group."
        + (
            " Outside it, over "
            + f"{floor['n']} runs: "
            + ", ".join(f"{n} x {name}" for name, n in sorted(outside.items()))
            + "."
            if outside
            else " Nothing of the tree ran outside it."
        ),
        *(
            [
                "Chromium's crash handlers daemonize into sessions of their own: the SIGKILL of the group does",
                "not reach them, they exit on their own once the browser is gone, and the floor waits for them",
                "too (the fast mode signals them itself, as every process of its session it finds).",
            ]
            if outside
            else []
        ),
        "The floor removes the dir only once the last process has ended; the fast mode removes it while",
        "the kernel is still ending the tree (and checks it again after), so it overlaps the two parts.",
        "",
    ]


def render_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lc, fz, cr, sc = res["lifecycle"], res["frozen"], res["crash"], res["scale"]
    r = lc["ratios"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `sh scripts/run.sh bench` (`bench/run.py`); the raw figures are in `bench/results/latest.json`.",
        "Every comparison was measured in the same run, interleaved, with the same Chrome flags",
        "(the `balanced` preset unless stated). Median and p95 over the runs; ratios are ours / plain.",
        "",
        f"- date: {res['date']}",
        f"- machine: {m['cpus']} CPUs, {m['memory_gb']:.0f} GB, {m['platform']}",
        f"- load average (1, 5, 15 min): {_load(m['load'])} at start, {_load(lc.get('load_at_end'))} after the "
        "start-up and teardown runs (the machine is shared: ratios are interleaved so that load hits both sides)",
        f"- Chromium: {m['chromium']}; chromedriver: {m['chromedriver']}; Selenium {m['selenium']}; Python {m['python']}",
        f"- runs: {res['runs']}",
        "",
        "## Start-up and teardown",
        "",
        "| measurement | plain Selenium | embassy_cleanup | ratio | target |",
        "|---|---|---|---|---|",
        f"| start-up: constructor to usable driver | {_ms(lc['plain_start'])} | {_ms(lc['ours_start'])} | "
        f"{_x(r['start_ours_vs_plain'])} | <= 1.10x |",
        f"| teardown, fast mode (graceful=False) to verified clean, vs plain quit() returning | "
        f"{_ms(lc['plain_quit_return'])} | {_ms(lc['ours_fast_clean'])} | {_x(r['fast_clean_vs_plain_quit_return'])} "
        f"| <= 0.5x |",
        f"| same, vs plain quit() until every process is gone | {_ms(lc['plain_quit_gone'])} | "
        f"{_ms(lc['ours_fast_clean'])} | {_x(r['fast_clean_vs_plain_quit_gone'])} | |",
        f"| teardown, graceful to verified clean, vs plain quit() returning | {_ms(lc['plain_quit_return'])} | "
        f"{_ms(lc['ours_graceful_clean'])} | {_x(r['graceful_clean_vs_plain_quit_return'])} | <= 1.5x |",
        f"| same, vs plain quit() until every process is gone | {_ms(lc['plain_quit_gone'])} | "
        f"{_ms(lc['ours_graceful_clean'])} | {_x(r['graceful_clean_vs_plain_quit_gone'])} | |",
        f"| frozen browser (F8), default settings | ~70 s (by hand) | {_ms(fz['ours_frozen_clean'])} | | <= 2 s |",
        f"| owner SIGKILLed mid-session, to everything gone | never | {_ms(cr['ours_owner_sigkill_to_gone'])} "
        f"| | <= 1 s |",
        "",
        f"Plain `quit()` left its profile dir behind in {lc['plain_profile_dirs_left_after_quit']} of "
        f"{lc['plain_start']['n']} runs; ours removed it and verified in every run.",
        "",
        *render_floor(lc),
        "## Footprint per preset",
        "",
        "Process count and tree memory of one session after loading a static page and a heavier local page",
        "(12 images, 4 iframes, 3 scripts), measured 1 s after load; chromedriver included. PSS divides each",
        "shared page among every process that maps it, machine-wide: while other users run Chromium, the trees",
        "of the chromium binary (stock, balanced, minimal) share its pages with them and get a smaller PSS; the",
        "headless shell is its own binary and does not. USS counts only the pages private to each process.",
        "",
        "Interleaved: each round measures every preset and page once; the ratios are medians of the",
        "per-round ratios against that round's stock session.",
        "",
        "| preset | page | processes | PSS MB | USS MB | PSS vs stock | USS vs stock | renders correctly |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, v in res["footprint"].items():
        preset, page = key.split("/")
        used = [u for u in v.get("preset_used", []) if u != preset]
        if used:
            preset += f" (fell back to {', '.join(used)})"
        lines.append(
            f"| {preset} | {page} | {v['processes']['median']:.0f} | {v['pss_mb']['median']:.0f} | "
            f"{v['uss_mb']['median']:.0f} | {_x(v.get('pss_vs_stock'))} | {_x(v.get('uss_vs_stock'))} | "
            f"{'yes' if v['renders_correctly'] else 'NO'} |"
        )
    lines += [
        "",
        "## Bookkeeping at scale",
        "",
        f"With {sc['unrelated_processes']} unrelated processes and {sc['stale_dirs']} stale session dirs present:",
        "",
        "| operation | time | target |",
        "|---|---|---|",
        f"| `diagnose` (no memory figures) | {sc['diagnose_s'] * 1000:.0f} ms | <= 1 s |",
        f"| `diagnose` with USS/PSS | {sc['diagnose_with_memory_s'] * 1000:.0f} ms | |",
        f"| sweep that tears down {sc['swept']} stale sessions | {sc['sweep_of_stale_dirs_s'] * 1000:.0f} ms | |",
        f"| start-up sweep with nothing stale | {sc['sweep_when_nothing_stale_s'] * 1000:.1f} ms | < 50 ms |",
        "",
        "## Targets, and what the numbers say",
        "",
    ]
    minimal = min(
        v.get("pss_vs_stock") or 1.0 for k, v in res["footprint"].items() if not k.startswith("stock")
    )
    checks = [
        ("start-up <= 1.10x plain", r["start_ours_vs_plain"], 1.10),
        ("graceful teardown <= 1.5x plain quit()", r["graceful_clean_vs_plain_quit_return"], 1.5),
        ("fast teardown <= 0.5x plain quit()", r["fast_clean_vs_plain_quit_return"], 0.5),
        ("lightest preset <= 0.5x stock PSS", minimal, 0.5),
    ]
    for name, value, limit in checks:
        verdict = "met" if value is not None and value <= limit else "NOT met"
        shown = "-" if value is None else f"{value:.2f}x"
        lines.append(f"- {name}: {shown}, {verdict}.")
    lines += [
        f"- frozen browser within 2 s: {_ms(fz['ours_frozen_clean'])}; owner SIGKILL to gone within 1 s: "
        f"{_ms(cr['ours_owner_sigkill_to_gone'])}; diagnose with {sc['unrelated_processes']} processes within "
        f"1 s: {sc['diagnose_s'] * 1000:.0f} ms.",
        "",
    ]
    fast_met = (r["fast_clean_vs_plain_quit_return"] or 9.0) <= 0.5
    stages = lc.get("ours_fast_stages_ms", {})
    lines += [
        "How the fast mode gets "
        + ("there" if fast_met else "as far as it does")
        + ": each process scan reads",
        "`/proc/<pid>/stat` once per process (1-2 ms, against ~13 ms through psutil); one `killpg` ends",
        "chromedriver's process group at once (signalling a dozen processes one by one took 10-100 ms under",
        "load), then every other process gets SIGKILL through a pidfd; the session dir is removed and the",
        "os-kill stage's `pgrep` started while the kernel tears the tree down, and the wait is one `poll()`",
        "on the pidfds (see docs/architecture.md, Fast teardown).",
        "Verification re-checks the dir (a system call in flight when SIGKILL arrived may still create a",
        "file); the socket table is read only if something of ours still runs.",
    ]
    if stages:
        lines += [
            "Median time per stage in fast mode: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items())
            + ". The tree-kill stage is mostly the kernel ending a dozen processes (the browser process,",
            "with ~36 threads, exits last), and it grows with CPU load.",
        ]
    if r.get("fast_clean_vs_floor") is not None:
        floor_ms = lc["floor_kill_gone"]["median"] * 1000
        fast_ms = lc["ours_fast_clean"]["median"] * 1000
        lines += [
            f"Against the physical floor ({floor_ms:.0f} ms: one SIGKILL of an identical tree's group, to gone",
            f"and removed) the fast mode takes {_x(r['fast_clean_vs_floor'])} ({fast_ms - floor_ms:+.0f} ms): "
            "that difference is the",
            "library's own work (scans, signals one by one, verification); the floor itself is the kernel and",
            f"the file system, and plain `quit()` returning is {_x(r.get('plain_quit_return_vs_floor'))} of it.",
        ]
    graceful_stages = lc.get("ours_graceful_stages_ms", {})
    if graceful_stages:
        lines += [
            "",
            "Median time per stage in graceful mode: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in graceful_stages.items())
            + ". The quit stage is `driver.quit()` itself, the",
            "same call as plain Selenium's, plus a DevTools liveness probe (so that a frozen browser cannot",
            "hang it); the rest is the price of verifying and of removing the profile dir plain `quit()` leaves.",
            "One difference inside `quit()`: once chromedriver is asked to exit, Selenium polls its port once a",
            "second, and sleeps that second whenever chromedriver answers before it closes the port; the",
            "session's chromedriver service waits for the process itself instead (plain Selenium keeps its polling).",
        ]
    graceful_r, fast_r = r["graceful_clean_vs_plain_quit_return"], r["fast_clean_vs_plain_quit_return"]
    speedup = f"{graceful_r / fast_r:.1f}x" if graceful_r and fast_r else "much"
    lines += [
        "",
        "The lightest preset is `headless-shell`: "
        + ", ".join(
            f"{page} {res['footprint'][f'headless-shell/{page}']['pss_mb']['median']:.0f} MB PSS "
            f"({_x(res['footprint'][f'headless-shell/{page}'].get('pss_vs_stock'))} of stock)"
            for page in ("static", "heavy")
            if f"headless-shell/{page}" in res["footprint"]
        )
        + ". On a quiet machine",
        "stock measured 401 MB (static) and 421 MB (heavy) in the previous run of this harness, and issue 5",
        "measured 380 MB; the shell's figures are "
        + " and ".join(
            f"{res['footprint'][f'headless-shell/{page}']['pss_mb']['median'] / quiet:.2f}x"
            for page, quiet in (("static", 401.0), ("heavy", 421.0))
            if f"headless-shell/{page}" in res["footprint"]
        )
        + " of those, but that compares different runs. In",
        "the same run on a loaded machine the stock trees' PSS drops (see above) and the ratio rises with it.",
        "Flags tried on top of the shell, one session each: `--in-process-gpu` and `NetworkServiceInProcess`",
        "(one process fewer, PSS within noise), `--no-zygote` (needs `--no-sandbox`) and",
        "`--single-process` (up to 10 % less PSS, more USS); none was added.",
        "",
        "The `headless-shell` preset runs Debian's `chromium-headless-shell` (the old headless mode) with the",
        '`minimal` flags. chromedriver cannot launch it ("unable to discover open pages": the shell starts',
        "with no page target), so the session starts it itself (with its markers and dirs,",
        "`--remote-debugging-port=0` and `about:blank`) and attaches chromedriver with `debuggerAddress`.",
        "chromedriver's `quit()` then leaves the shell running, and the kill stages end it. Without the",
        "package the preset falls back to `minimal` with a warning (`preset_used` says which ran).",
        "",
        "`--disable-features`: chromedriver 156 merges our list into its own (`IgnoreDuplicateNavs,Prewarm`);",
        "the browser's command line carries one flag with both lists, so nothing of ours is overridden.",
        "Within our own flags (`options=`, preset, `extra_args`) `merge_flags` merges every list into one,",
        "because Chrome takes the last occurrence; for the headless shell, which chromedriver does not",
        "launch, the launcher adds chromedriver's switches itself and merges them the same way.",
        "",
        "Default teardown mode: graceful (`driver.quit()` first), as the core issue specifies: Chrome then",
        f"ends its own children and flushes the profile. `graceful=False` is {speedup} faster here and loses",
        "nothing when the profile is disposable, which it always is with this library; choose it for",
        "high-throughput bots.",
        "",
    ]
    lines += render_pool(res.get("pool", {}))
    lines += render_contexts(res.get("contexts", {}))
    lines += render_launch(res.get("launch_failure", {}))
    return "\n".join(lines)


#: The part of docs/benchmarks.md after this line holds figures measured apart,
#: by scripts of their own (bench/pending_close.py, bench/frozen_threads.py);
#: a run keeps it as it is.
KEEP_MARKER = "<!-- Below: figures measured apart by their own scripts; bench/run.py keeps this part. -->"


def write_markdown(path: str, text: str) -> None:
    """Write the report to ``path``, keeping what follows :data:`KEEP_MARKER` in the old one."""
    kept = ""
    try:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        if KEEP_MARKER in old:
            kept = KEEP_MARKER + old.split(KEEP_MARKER, 1)[1]
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n\n" + kept if kept else text)


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="one iteration of everything, small scale")
    ap.add_argument(
        "--context-jobs",
        type=int,
        default=12,
        metavar="N",
        help="jobs per figure in the contexts section (default 12, 2 with --smoke)",
    )
    ap.add_argument("--md", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md"))
    ap.add_argument(
        "--json", help="raw figures (default: bench/results/latest.json, or partial.json with --only)"
    )
    ap.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated sections to run ({', '.join(SECTIONS)}); writes only the JSON",
    )
    ap.add_argument("--render", metavar="JSON", help="only rebuild the Markdown from saved raw figures")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as fh:
            saved = json.load(fh)
        write_markdown(args.md, render_markdown(saved))
        return 0
    runs = 1 if args.smoke else args.runs
    context_jobs = 2 if args.smoke else args.context_jobs
    if context_jobs < 1:
        ap.error(f"--context-jobs must be >= 1, got {context_jobs}")
    only = [x.strip() for x in args.only.split(",")] if args.only else []
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    import selenium

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    root = tempfile.mkdtemp(prefix="embassy-b-")
    try:
        res: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": runs,
            "machine": {
                "cpus": os.cpu_count(),
                "memory_gb": psutil.virtual_memory().total / 2**30,
                "platform": platform.platform(),
                "load": os.getloadavg(),
                "chromium": _version([resolve_binary(None) or "chromium", "--version"]),
                "chromedriver": _version([resolve_driver(None)[0], "--version"]).split(" (")[0],
                "selenium": selenium.__version__,
                "python": platform.python_version(),
            },
        }
        ctx = Context(runs=runs, root=root, log=log, smoke=args.smoke, context_jobs=context_jobs)
        for name, section in SECTIONS.items():
            if only and name not in only:
                continue
            log(f"{name} ...")
            res[name] = section(ctx)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    json_path = args.json or os.path.join(HERE, "results", "partial.json" if only else "latest.json")
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(res, fh, indent=2)
    if only:  # a partial run does not overwrite the report
        log(f"wrote {json_path}")
        return 0
    write_markdown(args.md, render_markdown(res))
    log(f"wrote {args.md} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
