"""close() while another thread waits on a command that never answers (issue 14).

Ours: a never-resolving ``execute_async_script`` in a worker thread, then
``close()``: timed to a verified-clean report; the quit stage sees the
pending command and does not wait behind it.  Plain Selenium (``--plain``):
``driver.quit()`` in the same state, bounded at 40 s (it waits behind the
pending command).

    .venv/bin/python bench/pending_close.py [RUNS] [--plain]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time

from selenium import webdriver

from embassy_cleanup import ChromeUltraAggressiveCleanup

PLAIN_BOUND_S = 40.0


def _pending(driver: object) -> threading.Thread:
    driver.set_script_timeout(600)  # type: ignore[attr-defined]

    def job() -> None:
        try:
            driver.execute_async_script("/* never calls back */")  # type: ignore[attr-defined]
        except Exception:  # cut off by the teardown: expected
            pass

    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    time.sleep(0.5)  # the command is out
    return worker


def ours(root: str) -> float:
    cleanup = ChromeUltraAggressiveCleanup(temp_root=root)
    driver = cleanup.start()
    driver.get("data:text/html,<title>x</title>")
    _pending(driver)
    t0 = time.perf_counter()
    report = cleanup.close()
    took = time.perf_counter() - t0
    assert report.ok, str(report)
    return took


def plain() -> float:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    driver.get("data:text/html,<title>x</title>")
    _pending(driver)
    done = threading.Event()
    t0 = time.perf_counter()
    threading.Thread(target=lambda: (driver.quit(), done.set()), daemon=True).start()
    done.wait(PLAIN_BOUND_S)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv and argv[0].isdigit() else 5
    root = tempfile.mkdtemp(prefix="pc-", dir="/tmp")
    try:
        xs = [ours(root) for _ in range(runs)]
    finally:
        os.rmdir(root)
    print(
        f"ours: close() with a pending command, {runs} runs: median {statistics.median(xs) * 1000:.0f} ms, "
        f"max {max(xs) * 1000:.0f} ms (to a verified-clean report)"
    )
    if "--plain" in argv:
        took = plain()
        print(f"plain Selenium: quit() with a pending command: {took:.1f} s (bound {PLAIN_BOUND_S:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
