"""Threads over many frozen-browser teardowns in a pool (issue 13, item 7g).

Each round checks a browser out, freezes it (SIGSTOP), and checks out again:
the pool's health check hangs on the frozen browser until its teardown kills
it. Prints the owner's thread count before, at the peak and after; a leak
would grow by one thread per round.

    .venv/bin/python bench/frozen_threads.py [ROUNDS]   (default 100)
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

import psutil

from embassy_cleanup import ChromePool


def main(rounds: int) -> int:
    root = tempfile.mkdtemp(prefix="ft-", dir="/tmp")
    try:
        return _run(rounds, root)
    finally:
        os.rmdir(root)


def _run(rounds: int, root: str) -> int:
    before = threading.active_count()
    peak = before
    t0 = time.monotonic()
    with ChromePool(max_size=1, temp_root=root, idle_timeout=None, check_timeout=10) as pool:
        for i in range(rounds):
            with pool.session() as d:
                session = pool.session_of(d)
                assert session is not None
                leader = session.view().leader
                assert leader is not None
                browser = psutil.Process(leader.pid).children()[0]
            try:
                browser.suspend()
            except psutil.NoSuchProcess:  # retired after its job (a failed reset): no round
                continue
            with pool.session() as d:
                d.get("data:text/html,<title>next</title>")
            peak = max(peak, threading.active_count())
            if (i + 1) % 10 == 0:
                print(f"round {i + 1}: {threading.active_count()} threads", flush=True)
        unhealthy = pool.stats().recycled["unhealthy"]
    deadline = time.monotonic() + 10
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = threading.active_count()
    print(
        f"{rounds} frozen-browser teardowns ({unhealthy} retired as unhealthy) in "
        f"{time.monotonic() - t0:.0f} s: threads {before} before, {peak} at the peak, {after} after "
        "(+1 is the watchdog monitor, one per owner)"
    )
    return 0 if after <= before + 1 else 1


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
