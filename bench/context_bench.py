"""Isolated jobs: a context per job against a browser per job (issue 15).

``python bench/context_bench.py [JOBS]`` prints JSON.  One job loads a page
from a local http.server and reads its title.  For 1 and 4 concurrent jobs it
measures jobs per second of:

* ``fresh``: a new ``ChromeUltraAggressiveCleanup`` per job (start, job,
  verified teardown);
* ``pool``: today's ``ChromePool`` (``isolation="browser"``, ``max_size`` =
  the concurrency);
* ``context``: ``ChromePool(isolation="context")``, one browser,
  ``contexts_per_browser`` = the concurrency;
* ``playwright``: Playwright for Python, one ``chromium.launch()`` of the same
  ``/usr/bin/chromium`` (``executable_path``; no browser download), a
  ``new_context()`` + ``new_page()`` per job, closed after it.

Each pool is warmed first (its browsers started; not counted).  It also
measures the tree PSS per concurrent isolated job (4 jobs holding a page
open) and the time of one context's create + removal, ours (fresh user
context and tab, then the verified removal through its six-stage plan)
against Playwright's ``new_context()`` + ``new_page()`` + ``close()``.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import psutil

from embassy_cleanup import ChromePool, ChromeUltraAggressiveCleanup

CHROMIUM = "/usr/bin/chromium"
PAGE = b"<!doctype html><title>job</title><p>job</p>"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else float("nan")


def _threads(jobs: int, concurrency: int, job: Callable[[], None]) -> float:
    """Run ``jobs`` jobs on ``concurrency`` threads; return jobs per second."""
    left = list(range(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            try:
                job()
            except BaseException as err:  # reported after the run
                errors.append(err)
                return

    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return jobs / (time.perf_counter() - t0)


def _tree_pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            full = psutil.Process(pid).memory_full_info()
            total += int(getattr(full, "pss", full.uss))
        except psutil.Error:
            continue
    return total


def bench_ours(jobs: int, url: str, root: str) -> dict[str, Any]:
    def check(driver: Any) -> None:
        driver.get(url)
        if driver.title != "job":
            raise RuntimeError(f"the page did not render: {driver.title!r}")

    out: dict[str, Any] = {}
    for conc in (1, 4):

        def fresh() -> None:
            with ChromeUltraAggressiveCleanup(temp_root=root) as d:
                check(d)

        out[f"fresh_c{conc}"] = _threads(max(conc, jobs // 2), conc, fresh)
        for isolation in ("browser", "context"):
            kw: dict[str, Any] = dict(idle_timeout=None, max_uses=None, temp_root=root, wait_timeout=600)
            if isolation == "browser":
                pool = ChromePool(max_size=conc, **kw)
            else:
                pool = ChromePool(max_size=1, isolation="context", contexts_per_browser=conc, **kw)
            with pool:
                held = [pool.session() for _ in range(conc)]  # warm: every browser / lane started
                drivers = [cm.__enter__() for cm in held]
                for d in drivers:
                    check(d)
                if conc == 4:  # PSS per isolated job while 4 jobs hold a page open
                    sessions = {id(s): s for s in (pool.session_of(d) for d in drivers) if s is not None}
                    out[f"pss_per_job_mib_{isolation}"] = (
                        sum(s.memory_bytes() for s in sessions.values()) / conc / 2**20
                    )
                for cm in held:
                    cm.__exit__(None, None, None)

                def pooled(pool: ChromePool = pool) -> None:
                    with pool.session() as d:
                        check(d)

                out[f"{'pool' if isolation == 'browser' else 'context'}_c{conc}"] = _threads(
                    jobs, conc, pooled
                )
                if isolation == "context":
                    out[f"context_reports_ok_c{conc}"] = all(r.ok for r in pool.context_reports())
    # one context's create + verified removal, as the pool does it (without the job)
    with ChromePool(
        max_size=1, isolation="context", contexts_per_browser=1, idle_timeout=None, temp_root=root
    ) as pool:
        with pool.session() as d:
            check(d)
        times = []
        for _ in range(jobs):
            t0 = time.perf_counter()
            with pool.session():
                pass
            times.append(time.perf_counter() - t0)
        out["context_create_remove_s"] = _median(times)
    return out


async def _bench_playwright_async(jobs: int, url: str) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:

            async def job() -> None:
                ctx = await browser.new_context()
                page = await ctx.new_page()
                await page.goto(url)
                if await page.title() != "job":
                    raise RuntimeError("the page did not render")
                await ctx.close()

            await job()  # warm
            for conc in (1, 4):
                queue = list(range(jobs))

                async def worker(queue: list[int] = queue) -> None:
                    while queue:
                        queue.pop()
                        await job()

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(conc)))
                out[f"playwright_c{conc}"] = jobs / (time.perf_counter() - t0)
            times, bare = [], []
            for _ in range(jobs):
                t0 = time.perf_counter()
                ctx = await browser.new_context()
                await ctx.new_page()
                await ctx.close()
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ctx = await browser.new_context()
                await ctx.close()
                bare.append(time.perf_counter() - t0)
            out["playwright_context_page_close_s"] = _median(times)
            out["playwright_context_close_s"] = _median(bare)
            # PSS per job: 4 contexts holding a page open; the browser is our
            # grandchild (under Playwright's node driver)
            ctxs = [await browser.new_context() for _ in range(4)]
            for c in ctxs:
                await (await c.new_page()).goto(url)
            me = psutil.Process()
            pids = [
                c.pid
                for c in me.children(recursive=True)
                if c.name().startswith(("chromium", "chrome", "headless_shell"))
            ]
            out["pss_per_job_mib_playwright"] = _tree_pss(pids) / 4 / 2**20
            for c in ctxs:
                await c.close()
        finally:
            await browser.close()
    return out


def bench_contexts(jobs: int, root: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure above, in one run, with ``jobs`` jobs per figure; the
    sessions' dirs go under ``root``.  ``bench/run.py`` runs this as its
    ``contexts`` section."""
    say = log or (lambda msg: None)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/job"
    try:
        res = bench_ours(jobs, url, root)
        say("  contexts: ours done")
        try:
            res.update(asyncio.run(_bench_playwright_async(jobs, url)))
        except ImportError:
            res["playwright"] = "not installed (pip install embassy_cleanup[bench])"
        say("  contexts: playwright done")
    finally:
        server.shutdown()
        server.server_close()
    res["jobs"] = jobs
    res["load_at_end"] = os.getloadavg()
    res["targets"] = targets(res)
    return res


def main(jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        return bench_contexts(jobs, root)


# -- report ---------------------------------------------------------------------
#: The targets of issue 15: (key, what, limit as a ratio).
TARGET_PSS = 0.2
TARGET_RATE = 10.0
TARGET_CREATE_REMOVE = 1.5


def _f(value: Any, fmt: str = ".2f") -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, fmt)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 15 against this run: the measured ratio, met or
    not, by how much, and why (from the same run's figures)."""
    out = []
    pss_ctx, pss_browser = res.get("pss_per_job_mib_context"), res.get("pss_per_job_mib_browser")
    pss_pw = res.get("pss_per_job_mib_playwright")
    if pss_ctx and pss_browser:
        r = pss_ctx / pss_browser
        out.append(
            {
                "target": f"tree PSS per concurrent isolated job at most {TARGET_PSS}x a whole browser's",
                "measured": f"{pss_ctx:.0f} / {pss_browser:.0f} MiB = {r:.2f}x",
                "ratio": r,
                "met": r <= TARGET_PSS,
                "why": "each concurrent job has its own renderer with a page loaded and its own chromedriver "
                "lane; the issue's probe (about 49 MB a context) measured contexts without a page or a lane"
                + (f"; Playwright pays {pss_pw:.0f} MiB a job here too" if pss_pw else ""),
                "by": r / TARGET_PSS,
            }
        )
    for conc in (1, 4):
        ctx, fresh = res.get(f"context_c{conc}"), res.get(f"fresh_c{conc}")
        if not ctx or not fresh:
            continue
        r = ctx / fresh
        pw = res.get(f"playwright_c{conc}")
        why = f"a context and its tab cost {_f(res.get('context_create_remove_s'))} s to create and remove"
        if pw:
            why += (
                f", and Playwright's new_context() reaches {pw:.2f} jobs/s (ours: {ctx / pw:.2f}x of that): "
                + (
                    "the cost is Chromium's, not the pool's bookkeeping"
                    if ctx / pw >= 0.8
                    else "the rest is the pool's own work (lanes, verified removal)"
                )
            )
        out.append(
            {
                "target": f"isolated jobs/s at least {TARGET_RATE:.0f}x a fresh session per job "
                f"({conc} concurrent job{'s' if conc > 1 else ''})",
                "measured": f"{ctx:.2f} / {fresh:.2f} jobs/s = {r:.1f}x",
                "ratio": r,
                "met": r >= TARGET_RATE,
                "why": why,
                "by": TARGET_RATE / r,
            }
        )
    ours, pw_page, pw_bare = (
        res.get("context_create_remove_s"),
        res.get("playwright_context_page_close_s"),
        res.get("playwright_context_close_s"),
    )
    if ours and pw_page:
        r = ours / pw_page
        out.append(
            {
                "target": f"context create + remove within {TARGET_CREATE_REMOVE}x of Playwright's "
                "new_context() + close()",
                "measured": f"{ours:.2f} s against {pw_page:.2f} s (with a page) = {r:.2f}x",
                "ratio": r,
                "met": r <= TARGET_CREATE_REMOVE,
                "why": "ours includes the tab, the hand-out check and the verified removal (its renderers "
                "ended, its dir removed, BiDi asked)",
                "by": r / TARGET_CREATE_REMOVE,
                "note": (
                    f"compared with a context and its tab, as a job needs; against a bare new_context() + "
                    f"close() ({pw_bare:.2f} s, no page) ours is {ours / pw_bare:.1f}x"
                    if pw_bare
                    else None
                ),
            }
        )
    return out


def render_contexts(res: dict[str, Any]) -> list[str]:
    """The Markdown section of docs/benchmarks.md for these figures."""
    if not res:
        return []
    lines = [
        "## Isolated jobs: browser contexts",
        "",
        f"`bench/context_bench.py`, run as a section of `bench/run.py` ({res.get('jobs')} jobs per figure;",
        "`--context-jobs` sets it). One job loads a page from a local `http.server` and reads its title.",
        "Playwright for Python runs on the same `/usr/bin/chromium` (`executable_path`, no browser",
        "download), with `new_context()` + `new_page()` per job, closed after it. Each pool is warmed",
        "first (its browsers started, not counted)."
        + (
            " Load average (1, 5, 15 min) at the end of this section: "
            + ", ".join(f"{x:.1f}" for x in res["load_at_end"])
            + "; compare figures within one run."
            if res.get("load_at_end")
            else ""
        ),
        "",
        "| jobs/s | 1 job at a time | 4 concurrent jobs |",
        "|---|---|---|",
        f"| fresh session per job | {_f(res.get('fresh_c1'))} | {_f(res.get('fresh_c4'))} |",
        f"| `ChromePool()` (a browser per job, reset; not isolated) | {_f(res.get('pool_c1'))} | "
        f"{_f(res.get('pool_c4'))} |",
        f'| `ChromePool(isolation="context")`, one browser | {_f(res.get("context_c1"))} | '
        f"{_f(res.get('context_c4'))} |",
        f"| Playwright `new_context()` per job, one browser | {_f(res.get('playwright_c1'))} | "
        f"{_f(res.get('playwright_c4'))} |",
        "",
        "| | ours | Playwright |",
        "|---|---|---|",
        f"| tree PSS per isolated job (4 jobs holding a page open) | {_f(res.get('pss_per_job_mib_context'), '.0f')}"
        f" MiB | {_f(res.get('pss_per_job_mib_playwright'), '.0f')} MiB |",
        f"| one context: create (with its tab) + removal | {_f(res.get('context_create_remove_s'))} s, "
        "with the hand-out check and the verified removal | "
        f"{_f(res.get('playwright_context_page_close_s'))} s (`new_context()` + `new_page()` + `close()`); "
        f"{_f(res.get('playwright_context_close_s'))} s without a page |",
        f"| today's pool, PSS per job (a browser each) | {_f(res.get('pss_per_job_mib_browser'), '.0f')} MiB | |",
        "",
        "Every context's teardown report was ok: "
        + ("yes" if all(res.get(f"context_reports_ok_c{c}") for c in (1, 4)) else "NO")
        + ".",
        "",
    ]
    if isinstance(res.get("playwright"), str):
        lines += [f"Playwright: {res['playwright']}.", ""]
    lines += ["| target | measured | |", "|---|---|---|"]
    for t in targets(res):
        verdict = "met" if t["met"] else f"missed by {t['by']:.1f}x: {t['why']}"
        if t.get("note"):
            verdict += f" ({t['note']})"
        lines.append(f"| {t['target']} | {t['measured']} | {verdict} |")
    lines.append("")
    return lines


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12), indent=1))
