"""adopt(driver) under the owner's watchdog: a plain ``webdriver.Chrome()``,
adopted, must not outlive an owner that is SIGKILLed.

The owner (``_owner.py --adopt DIR``) starts a plain driver whose chromedriver
has ``TMPDIR``/``XDG_CONFIG_HOME`` in ``DIR`` (a dir of this test under the
run's sessions dir), adopts it and opens a second tab, so one renderer at
least is born after adopt: the watchdog must find it below the recorded
browser.  Processes are held by identity (psutil), found through the
reported PIDs, chromedriver's tree and the ``DIR`` marker; never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import psutil
import pytest

from tests import _helpers as h
from tests.crash.conftest import GONE_WITHIN_S, alive, hold

pytestmark = pytest.mark.chrome


@pytest.fixture
def adopt_dir():
    """The plain driver's dir (its TMPDIR, config, cache, a chosen profile);
    at the end whatever still carries it is killed by identity, and it goes."""
    path = tempfile.mkdtemp(prefix="a", dir=h.SESSIONS_ROOT)
    try:
        yield path
    finally:
        h.kill_all(h.processes_under(path))
        shutil.rmtree(path, ignore_errors=True)  # only the dir this fixture created


def spawn_adopted(crash, adopt_dir: str, *extra: str, watchdog: bool = True):
    owner = crash.spawn(watchdog=watchdog, extra=["--adopt", adopt_dir, *extra], name="adopt-owner")
    (session,) = owner.sessions
    assert session["sid"].startswith("adopted-")
    return owner, session


def snapshot(owner, session: dict) -> dict[int, psutil.Process]:
    """chromedriver and every live descendant, what adopt recorded, what was
    born after adopt, and whatever carries the driver's dir (but the owner,
    whose command line names it): by identity."""
    procs: dict[int, psutil.Process] = {}
    for pid, ct in {**session["pids"], **session["born_after_adopt"]}.items():
        proc = hold(int(pid), ct)
        if proc is not None:
            procs[proc.pid] = proc
    for root_pid in (session["driver_pid"], session["browser_pid"]):
        proc = procs.get(root_pid)
        if proc is None:
            continue
        try:
            for child in proc.children(recursive=True):
                procs.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    for proc in h.processes_under(session["root"]):
        if proc.pid != owner.pid:
            procs.setdefault(proc.pid, proc)
    return procs


def running(procs: dict[int, psutil.Process]) -> list[str]:
    out = []
    for pid, p in procs.items():
        if alive(p):
            try:
                out.append(f"{pid} {p.name()}")
            except psutil.Error:
                out.append(str(pid))
    return sorted(out)


def precondition(session: dict, procs: dict[int, psutil.Process]) -> None:
    assert session["driver_pid"] in procs and session["browser_pid"] in procs, session
    assert len(running(procs)) >= 5, f"the driver should run Chrome: {running(procs)}"
    later = [int(p) for p in session["born_after_adopt"]]
    assert later and all(p in procs and alive(procs[p]) for p in later), (
        f"a renderer should have been born after adopt: {session['born_after_adopt']}"
    )


def kill_owner(owner) -> float:
    t0 = owner.kill(signal.SIGKILL)
    assert owner.wait(10) == -signal.SIGKILL, owner.stderr()
    return t0


def wait_gone(crash, procs: dict[int, psutil.Process], paths: list[str], t0: float, what: str) -> float:
    """Bounded poll until none of ``procs`` runs and no path in ``paths`` exists."""

    def gone() -> bool:
        return not running(procs) and not any(os.path.lexists(p) for p in paths)

    assert h.wait_until(gone, timeout=max(0.0, t0 + GONE_WITHIN_S - time.monotonic()), interval=0.01), (
        f"{what}: not gone within {GONE_WITHIN_S} s: running={running(procs)} "
        f"paths={[p for p in paths if os.path.lexists(p)]}"
    )
    elapsed = time.monotonic() - t0
    crash.record(what, elapsed)
    return elapsed


def test_a_sigkilled_owner_leaves_nothing_of_an_adopted_driver_and_its_temp_profile(
    crash, adopt_dir, bystander
):
    owner, session = spawn_adopted(crash, adopt_dir)
    assert session["profile_removed"] is True
    profile, singleton, scratch = session["profile"], session["singleton_dir"], session["scratch_dir"]
    assert os.path.dirname(profile) == os.path.join(adopt_dir, "tmp")  # chromedriver's temp profile
    assert singleton is not None and os.path.isdir(singleton)
    # chromedriver's second, empty scoped dir, told apart by when it was made
    assert scratch is not None and scratch != profile and os.listdir(scratch) == []
    assert owner.info["watchdog_pid"] is not None
    assert owner.cmd("title 0")["title"] == "owner-0-tab"
    procs = snapshot(owner, session)
    precondition(session, procs)

    t0 = kill_owner(owner)
    wait_gone(
        crash, procs, [profile, singleton, scratch], t0, "adopted: owner SIGKILL -> tree and temp dirs gone"
    )

    # ... the crashpad handlers (not tracked) exit by themselves once the browser is gone
    assert h.wait_until(lambda: not h.processes_under(adopt_dir), timeout=GONE_WITHIN_S), [
        p.pid for p in h.processes_under(adopt_dir)
    ]
    assert crash.wait_exit(owner.watchdog), f"watchdog {owner.watchdog.pid} outlived its owner"
    log = owner.watchdog_log()
    assert f"watchdog: session {session['sid']}: ok" in log, log
    assert "Traceback" not in log, log
    bystander.assert_alive()


def test_a_sigkilled_owner_keeps_a_user_data_dir_the_user_chose_but_not_its_processes(crash, adopt_dir):
    chosen = os.path.join(adopt_dir, "my-profile")
    owner, session = spawn_adopted(crash, adopt_dir, "--user-data-dir", chosen)
    assert session["profile"] == chosen
    assert session["profile_removed"] is False
    singleton = session["singleton_dir"]
    before = sorted(os.listdir(chosen))
    assert "Default" in before, before
    procs = snapshot(owner, session)
    precondition(session, procs)

    t0 = kill_owner(owner)
    paths = [singleton] if singleton else []
    wait_gone(crash, procs, paths, t0, "adopted, chosen profile: owner SIGKILL -> tree gone")

    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    assert f"watchdog: session {session['sid']}: ok" in log, log
    assert chosen not in log, "the watchdog was told the path of a profile it must keep"
    assert os.path.isdir(chosen), "the user's profile dir was removed"
    assert "Default" in os.listdir(chosen), os.listdir(chosen)


def test_a_forked_child_closing_an_adopted_driver_neither_tears_it_down_nor_unregisters_it(crash, adopt_dir):
    owner, session = spawn_adopted(crash, adopt_dir)
    procs = snapshot(owner, session)
    precondition(session, procs)

    forked = owner.cmd("fork-close 0")
    assert forked["exit"] == 0, forked
    assert forked["title"] == "owner-0-tab", "the child's close() tore down the parent's driver"
    core = {p: procs[p] for p in (session["driver_pid"], session["browser_pid"])}
    assert len(running(core)) == 2

    t0 = kill_owner(owner)
    wait_gone(crash, procs, [session["profile"]], t0, "adopted, after a fork: owner SIGKILL -> tree gone")
    assert crash.wait_exit(owner.watchdog)
    log = owner.watchdog_log()
    assert f"watchdog: session {session['sid']}: ok" in log, "the child's close() unregistered it: " + log


def test_an_adopted_driver_with_watchdog_false_outlives_its_sigkilled_owner(crash, adopt_dir):
    owner, session = spawn_adopted(crash, adopt_dir, watchdog=False)
    assert owner.info["watchdog_pid"] is None, "watchdog=False must not start a watchdog"
    profile = session["profile"]
    procs = snapshot(owner, session)
    precondition(session, procs)
    steady = {p: procs[p] for p in (session["driver_pid"], session["browser_pid"])}

    try:
        kill_owner(owner)
        # Nothing reaps them: give a watchdog (were there one) far more than its usual time.
        reaped = h.wait_until(lambda: not running(steady), timeout=2.0)
        assert not reaped, "something reaped a driver adopted with watchdog=False"
        assert len(running(steady)) == 2, running(steady)
        assert os.path.isdir(profile)
    finally:  # clean up by identity and by this test's dir, never by name
        h.kill_all(list(procs.values()) + h.processes_under(adopt_dir))
    assert not running(procs)


def test_closing_an_adopted_driver_unregisters_it_from_the_watchdog(crash, adopt_dir):
    owner, session = spawn_adopted(crash, adopt_dir)
    assert session["watchdog_pid"] is not None, "adopt() should have registered with a watchdog"
    procs = snapshot(owner, session)
    closed = owner.cmd("close 0")
    assert closed["ok"], closed["report"]
    assert not running(procs)
    assert alive(owner.watchdog), "closing must not end (or kill) the shared watchdog"

    kill_owner(owner)

    assert crash.wait_exit(owner.watchdog), "the watchdog outlived its owner"
    log = owner.watchdog_log()
    assert "watchdog: session" not in log, log
    assert "Traceback" not in log, log
