"""A SIGKILLed owner's remote session is deleted by its watchdog (issue #8).

The Grid runs with ``--session-timeout`` 300 s, so a slot that is free within
``FREED_WITHIN_S`` after the owner's SIGKILL was freed by our watchdog's
``DELETE /session/{id}``, not by the Grid's own reclaim.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests import _helpers as h
from tests.grid import _grid
from tests.grid.conftest import record_timing

pytestmark = [pytest.mark.chrome, pytest.mark.grid]

OWNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_remote_owner.py")
#: The bound asserted; the target (issue #8) is about 1 s, the Grid's own reclaim 300 s.
FREED_WITHIN_S = 15.0


def spawn_owner(grid: _grid.GridServer, watchdog_log: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_grid.PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    env["EMBASSY_CLEANUP_WATCHDOG_LOG"] = watchdog_log
    return subprocess.Popen(
        [sys.executable, OWNER, grid.url, h.CHROMIUM, *_grid.NODE_ARGS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_the_watchdog_deletes_a_dead_owners_remote_session_long_before_the_grid_timeout(grid, sig):
    watchdog_log = os.path.join(grid.dir, f"watchdog-{sig.name}.log")
    owner = spawn_owner(grid, watchdog_log)
    watchdog = None
    try:
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline() or b"{}")
        assert info.get("title") == "owner", f"the owner did not start its session: {info}"
        rsid = info["remote_sid"]
        assert rsid in grid.sessions()
        watchdog = psutil.Process(info["watchdog_pid"])
        browser = psutil.Process(info["browser_pid"])
        assert browser.pid in {p.pid for p in grid.processes()}

        t0 = time.monotonic()
        owner.send_signal(sig)
        assert owner.wait(10) == -sig
        freed = h.wait_until(lambda: rsid not in grid.sessions(), timeout=FREED_WITHIN_S, interval=0.05)
        took = time.monotonic() - t0
        with open(watchdog_log, encoding="utf-8", errors="replace") as fh:
            log = fh.read()
        assert freed, f"slot not freed within {FREED_WITHIN_S} s of the owner's death; watchdog log:\n{log}"
        record_timing(f"slot freed {took:.2f} s after the owner's {sig.name} (Grid timeout 300 s)")
        assert f"session {info['sid']}: remote {rsid}: deleted" in log, log  # the watchdog's line
        assert h.wait_until(lambda: not browser.is_running(), timeout=10), "the node's Chrome outlived it"
        assert h.wait_until(lambda: not watchdog.is_running(), timeout=5), "the watchdog outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(10)
        for stream in (owner.stdin, owner.stdout):
            if stream is not None:
                stream.close()
        if watchdog is not None and watchdog.is_running():
            watchdog.kill()
