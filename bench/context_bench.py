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


def main(jobs: int) -> dict[str, Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/job"
    try:
        with tempfile.TemporaryDirectory() as root:
            res = bench_ours(jobs, url, root)
        try:
            res.update(asyncio.run(_bench_playwright_async(jobs, url)))
        except ImportError:
            res["playwright"] = "not installed (pip install embassy_cleanup[bench])"
    finally:
        server.shutdown()
        server.server_close()
    res["jobs"] = jobs
    return res


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12), indent=1))
