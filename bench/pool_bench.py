"""Jobs per second: a ChromePool against a fresh session per job (issue 6).

One job loads the harness's static local page and checks it rendered.  The
two ways alternate job by job (fresh, pooled, fresh, pooled ...), so both see
the same machine load.  A fresh job is start + job + verified teardown; a
pooled job is checkout (health check) + job + return (reset).  The pool's own
start-up and final close are measured apart and reported, not hidden: over N
jobs they add (start + close) / N to each pooled job.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from embassy_cleanup import ChromePool, ChromeUltraAggressiveCleanup


def _stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {"n": 0}
    return {"n": len(s), "median": s[len(s) // 2], "p95": s[min(len(s) - 1, int(len(s) * 0.95))]}


def bench_pool(runs: int, root: str, base_url: str, log: Callable[[str], None]) -> dict[str, Any]:
    url = f"{base_url}/static.html"

    def job(driver: Any) -> None:
        driver.get(url)
        if driver.title != "static":
            raise RuntimeError(f"the page did not render: title {driver.title!r}")

    fresh: list[float] = []
    pooled: list[float] = []
    t0 = time.perf_counter()
    pool = ChromePool(max_size=1, idle_timeout=None, max_uses=None, temp_root=root)
    with pool.session() as driver:  # the pool's first browser: measured as its start-up
        job(driver)
    pool_start = time.perf_counter() - t0
    try:
        for i in range(runs):
            t0 = time.perf_counter()
            with ChromeUltraAggressiveCleanup(temp_root=root) as driver:
                job(driver)
            fresh.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            with pool.session() as driver:
                job(driver)
            pooled.append(time.perf_counter() - t0)
            if (i + 1) % 5 == 0 or i + 1 == runs:
                log(f"  pool {i + 1}/{runs}")
    finally:
        t0 = time.perf_counter()
        reports = pool.close()
        pool_close = time.perf_counter() - t0
    out: dict[str, Any] = {
        "fresh_job": _stats(fresh),
        "pooled_job": _stats(pooled),
        "pool_start_s": pool_start,
        "pool_close_s": pool_close,
        "pool_clean": all(r.ok for r in reports),
        "pool_stats": pool.stats().to_dict(),
    }
    f, p = out["fresh_job"].get("median"), out["pooled_job"].get("median")
    out["jobs_per_s"] = {"fresh": 1 / f if f else None, "pooled": 1 / p if p else None}
    out["speedup"] = f / p if f and p else None
    return out


def render_pool(res: dict[str, Any]) -> list[str]:
    """The Markdown section for ``res["pool"]`` (empty when it was not run)."""
    if not res:
        return []

    def ms(d: dict[str, float]) -> str:
        return f"{d['median'] * 1000:.0f} ms (p95 {d['p95'] * 1000:.0f})" if d.get("n") else "-"

    jps = res["jobs_per_s"]
    speed = res.get("speedup")
    return [
        "## Pool vs a fresh session per job",
        "",
        "One job loads the static local page and checks its title. A fresh job is start, job and verified",
        "teardown; a pooled job is checkout (health check), job and return (reset). The two alternate job",
        "by job. The pool (`max_size=1`) starts its browser once and closes it at the end; both are shown",
        "separately.",
        "",
        "| | per job | jobs/s |",
        "|---|---|---|",
        f"| fresh session per job | {ms(res['fresh_job'])} | {jps['fresh']:.2f} |",
        f"| `ChromePool` | {ms(res['pooled_job'])} | {jps['pooled']:.2f} |",
        "",
        f"Pooled jobs per second: **{speed:.1f}x** a fresh session's." if speed else "",
        f"The pool's start took {res['pool_start_s'] * 1000:.0f} ms (its first job included), and its close took "
        f"{res['pool_close_s'] * 1000:.0f} ms, verified clean: {res['pool_clean']}.",
        "",
    ]
