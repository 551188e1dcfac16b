"""Time to a clear error for a start that never becomes ready (issue 14).

Ours: ``start_timeout=5`` with a browser that never opens DevTools, and
``driver_path=/bin/true``; timed from ``start()`` to the LaunchError, which
is raised after the session's teardown, so it includes it.  Plain Selenium
(full runs only: about 95 s): the same two cases through
``webdriver.Chrome()``, whose waits are chromedriver's 60 s and Selenium's
~33 s.  The harness ends plain Selenium's leftovers by the marker dir on
their command line, never by name.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import psutil

from embassy_cleanup import ChromeUltraAggressiveCleanup, LaunchError
from embassy_cleanup._launcher import resolve_driver

START_TIMEOUT = 5
#: A browser that starts and never opens DevTools; it keeps its arguments
#: (the profile dir under the bench's dir) so the harness can find it.
NEVER_READY = f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(600)' \"$@\"\n"


def _script(root: str) -> str:
    path = os.path.join(root, "never-ready-chrome")
    with open(path, "w", encoding="ascii") as fh:
        fh.write(NEVER_READY)
    os.chmod(path, 0o755)
    return path


def _ours(root: str, **kwargs: Any) -> tuple[float, str]:
    cleanup = ChromeUltraAggressiveCleanup(temp_root=root, start_timeout=START_TIMEOUT, **kwargs)
    t0 = time.perf_counter()
    try:
        cleanup.start()
    except LaunchError as err:
        return time.perf_counter() - t0, f"{err.component}: {err.msg.split(' (')[0]}"
    cleanup.close()
    raise RuntimeError("the broken start succeeded")


def _plain(root: str, binary: str | None, driver: str) -> tuple[float, str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    marker = tempfile.mkdtemp(prefix="plain-", dir=root)
    opts = webdriver.ChromeOptions()
    opts.add_argument("--headless=new")
    opts.add_argument(f"--user-data-dir={os.path.join(marker, 'profile')}")
    if binary:
        opts.binary_location = binary
    t0 = time.perf_counter()
    try:
        webdriver.Chrome(service=Service(driver, env=dict(os.environ, TMPDIR=marker)), options=opts).quit()
        said = "started"
    except Exception as err:
        said = str(err).splitlines()[0][:120]
    elapsed = time.perf_counter() - t0
    left = [p for p in psutil.process_iter() if _has(p, marker)]
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    shutil.rmtree(marker, ignore_errors=True)
    return elapsed, said


def _has(p: psutil.Process, needle: str) -> bool:
    try:
        return any(needle in a for a in p.cmdline())
    except psutil.Error:
        return False


def bench_launch_failure(runs: int, root: str, smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    binary = _script(root)
    out: dict[str, Any] = {"start_timeout": START_TIMEOUT}
    never, true_ = [], []
    for i in range(runs):
        s, out["ours_browser_error"] = _ours(root, binary=binary)
        never.append(s)
        s, out["ours_driver_error"] = _ours(root, driver_path="/bin/true")
        true_.append(s)
        log(f"  launch failure {i + 1}/{runs}")
    out["ours_never_ready_browser_s"] = _summary(never)
    out["ours_driver_bin_true_s"] = _summary(true_)
    if not smoke:
        driver = resolve_driver(None)[0]
        out["plain_never_ready_browser_s"], out["plain_browser_error"] = _plain(root, binary, driver)
        log("  plain Selenium, browser never ready: done")
        out["plain_driver_bin_true_s"], out["plain_driver_error"] = _plain(root, None, "/bin/true")
        log("  plain Selenium, /bin/true as the driver: done")
    return out


def _summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median": statistics.median(xs), "max": max(xs)}


def render_launch(res: dict[str, Any]) -> list[str]:
    if not res:
        return []

    def plain(key: str) -> str:
        return f"{res[key]:.1f} s" if key in res else "- (full runs only)"

    t = res["start_timeout"]
    return [
        "## A start that never becomes ready",
        "",
        f"Time from `start()` to the error, with `start_timeout={t}` (ours; the error comes after the",
        "session's teardown, so it includes it), and plain `webdriver.Chrome()` (one run each).",
        "",
        "| case | plain Selenium | embassy_cleanup (median, max) | ours says |",
        "|---|---|---|---|",
        f"| browser that never opens DevTools | {plain('plain_never_ready_browser_s')} | "
        f"{res['ours_never_ready_browser_s']['median']:.2f} s, {res['ours_never_ready_browser_s']['max']:.2f} s "
        f"| {res['ours_browser_error']} |",
        f"| `/bin/true` as chromedriver | {plain('plain_driver_bin_true_s')} | "
        f"{res['ours_driver_bin_true_s']['median']:.2f} s, {res['ours_driver_bin_true_s']['max']:.2f} s "
        f"| {res['ours_driver_error']} |",
        "",
        f"Target: the error within about 1 s of the bound ({t} s).",
        "",
    ] + _measured_apart(res)


def _measured_apart(res: dict[str, Any]) -> list[str]:
    """A note when these figures were measured in a run of their own."""
    m = res.get("measured")
    if not m:
        return []
    load = ", ".join(f"{x:.1f}" for x in m["load"])
    ratio = m.get("start_ours_vs_plain_same_run")
    return [
        f"Measured in a run of its own, {m['note']} ({m['date']}, load average {load}: the machine was",
        "shared and busy); the start-up ratio ours/plain in that run was "
        + (f"{ratio:.2f}x." if ratio is not None else "-."),
        "",
    ]
