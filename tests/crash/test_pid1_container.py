"""Containers with no init: the owner is PID 1, so Chrome's re-parented
processes (crashpad handlers, orphans) become the owner's children and
nobody else reaps them.  The owner must warn, and reap what is its own.

Run for real: a new PID namespace (``unshare --pid --fork --mount-proc``,
root only) where the owner script is PID 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import _helpers as h

pytestmark = pytest.mark.chrome

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWNER = r"""
import json, logging, os, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from embassy_cleanup import ChromeUltraAggressiveCleanup
assert os.getpid() == 1, os.getpid()
c = ChromeUltraAggressiveCleanup(temp_root=sys.argv[1], watchdog=False)
with c as d:
    d.get("data:text/html,<title>pid1</title>")
    title = d.title
    started = len(c.pids)
# Everything that died under us is our child now: none may be left a zombie.
zombies = []
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == 1:
                zombies.append(int(name))
        except OSError:
            pass
print(json.dumps({"title": title, "started": started, "ok": c.report.ok,
                  "leftovers": [str(x) for x in c.report.leftovers], "zombies": zombies}), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="unshare --pid needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
def test_owner_running_as_pid_1_should_warn_and_leave_no_zombie_of_its_own():
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", OWNER, h.SESSIONS_ROOT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["title"] == "pid1" and result["started"] >= 5
    assert result["ok"], result["leftovers"]
    assert result["zombies"] == [], f"zombies left under PID 1: {result['zombies']}"
    assert "running as PID 1 with no init" in out.stderr
    assert "--init" in out.stderr
