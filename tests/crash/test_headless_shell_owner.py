"""F4/F5 for the ``"headless-shell"`` preset: the session started the shell
itself (chromedriver only attached to it), and its helpers carry no marker
on their command line.  When the owner dies, the watchdog must still end the
whole tree: the shell (recorded, marked) and every helper (its descendants).
Checked through the shell's process group too, which the marker-based
leak guard cannot see."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from embassy_cleanup import _launcher
from tests.crash.conftest import hold

pytestmark = [
    pytest.mark.chrome,
    pytest.mark.skipif(
        _launcher.resolve_headless_shell() is None and not os.environ.get("CI"),
        reason="chromium-headless-shell is not installed",
    ),
]


def _with_shell_group(crash, session, owner_pid: int) -> dict[int, psutil.Process]:
    procs = crash.snapshot(session)
    shells = []
    for proc in procs.values():
        try:
            if proc.ppid() == owner_pid and proc.name() != "chromedriver":
                shells.append(proc)
        except psutil.Error:
            continue
    assert len(shells) == 1, f"expected one shell started by the owner: {procs}"
    shell = shells[0]
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == shell.pid:
                held = hold(proc.pid)
                if held is not None:
                    procs.setdefault(proc.pid, held)
        except (psutil.Error, OSError):
            continue
    assert len(procs) >= 6, f"precondition: the shell and its helpers should run: {procs}"
    return procs


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_dead_owner_should_leave_nothing_of_a_headless_shell_session(crash, sig):
    owner = crash.spawn(extra=["--preset", "headless-shell"])
    (session,) = owner.sessions
    snaps = {session["root"]: _with_shell_group(crash, session, owner.pid)}
    t0 = owner.kill(sig)
    assert owner.wait(10) == -sig, owner.stderr()
    crash.wait_gone(snaps, t0, f"headless shell, owner {signal.Signals(sig).name} -> session gone")
    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    if sig == signal.SIGKILL:
        assert f"watchdog: session {session['sid']}: ok" in log, log
    assert "Traceback" not in log, log
