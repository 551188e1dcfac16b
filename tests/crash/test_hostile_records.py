"""The safety boundary against hostile or careless input (issue 13, items 1-4).

* a forged ``session.json`` naming live processes (a plain-Selenium Chrome of
  the same user, another user's process) makes nothing of them ours:
  ``clean``, ``sweep_stale()`` and a new session start leave them alone;
* a bystander that names a session dir on its command line (``tail -f``) is
  not the session's: neither the owner's teardown nor the watchdog kills it;
* a FIFO named ``session.json`` or ``owner.lock`` hangs nothing;
* a record with a negative PID, or a huge one, is reported and never aborts a
  sweep.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time

import psutil
import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, sweep_stale
from embassy_cleanup._ownership import ROOT_PREFIX
from embassy_cleanup._records import LOCK_NAME, MAX_RECORD_BYTES, RECORD_NAME
from tests import _helpers as h
from tests.cli import run_cli

pytestmark = pytest.mark.chrome

#: No sweep, clean or start may take longer than this on hostile input.
NO_HANG_S = 60


@pytest.fixture
def temp_root():
    """A temp dir of this test's own under the run dir, short enough for Chrome's socket paths."""
    root = os.path.join(h.RUN_ROOT, "h" + secrets.token_hex(2))
    os.mkdir(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def forged_root(temp_root: str, record: bytes | None = None, lock: str = "file") -> str:
    """A session dir whose owner is dead (an unlocked owner.lock) with ``record``."""
    root = os.path.join(temp_root, ROOT_PREFIX + secrets.token_hex(6))
    os.mkdir(root, 0o700)
    if lock == "file":
        open(os.path.join(root, LOCK_NAME), "w").close()
    elif lock == "fifo":
        os.mkfifo(os.path.join(root, LOCK_NAME))
    elif lock == "symlink":
        os.symlink("/etc/hostname", os.path.join(root, LOCK_NAME))
    if record is not None:
        with open(os.path.join(root, RECORD_NAME), "wb") as fh:
            fh.write(record)
    old = time.time() - 3600  # not "being created right now"
    os.utime(root, (old, old))
    return root


def record_naming(pids: list[tuple[int, float]]) -> bytes:
    return json.dumps(
        {
            "session_id": "forged",
            "owner_pid": 999999,
            "owner_create_time": 1.0,
            "pids": [[pid, ct, "chromium"] for pid, ct in pids],
            "ports": [],
            "created": 1.0,
        }
    ).encode()


@pytest.fixture
def nobody_sleeper():
    """A process of another user (``nobody``), when this test runs as root."""
    if os.getuid() != 0:
        pytest.skip("needs root to start a process as another user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    proc = subprocess.Popen(["sleep", "300"], user="nobody", start_new_session=True)
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_a_forged_record_naming_a_bystander_chrome_and_another_users_process_kills_neither(
    temp_root, bystander, nobody_sleeper
):
    named = [(pid, ct) for pid, ct in bystander.chrome_pids.items()]
    named.append((nobody_sleeper.pid, nobody_sleeper.create_time()))
    root = forged_root(temp_root, record_naming(named))

    out = run_cli("clean", "--temp-dir", temp_root, "--json", timeout=NO_HANG_S)
    assert out.returncode in (0, 1), out.stderr
    sweep_stale(temp_root)

    bystander.assert_alive()
    assert nobody_sleeper.is_running(), "a process of another user was killed on a forged record"
    assert not os.path.lexists(root), "the forged dir itself is ours to remove (our uid, our name)"


def test_a_bystander_naming_the_session_dir_survives_the_teardown(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup:
        log = os.path.join(cleanup.root, "tmp", "x.log")
        open(log, "w").close()
        tail = subprocess.Popen(["tail", "-f", log], stdout=subprocess.DEVNULL)
        try:
            h.wait_until(lambda: psutil.Process(tail.pid).cmdline()[:1] == ["tail"], timeout=5)
            found = {p.pid for p in cleanup.view().discover()}
            assert tail.pid not in found, "a tail -f of a file in the session dir is not the session's"
        except BaseException:
            tail.kill()
            raise
    try:
        assert cleanup.report is not None and cleanup.report.ok, str(cleanup.report)
        assert tail.pid not in {a.pid for a in cleanup.report.killed}
        assert tail.poll() is None, "the teardown killed a bystander that only named the session dir"
    finally:
        tail.kill()
        tail.wait()
    bystander.assert_alive()


@pytest.mark.parametrize("what", ["record", "lock"])
def test_a_fifo_in_a_session_dir_hangs_neither_a_sweep_nor_clean_nor_diagnose_nor_a_start(
    temp_root, session_kwargs, what
):
    if what == "record":
        root = forged_root(temp_root)
        os.mkfifo(os.path.join(root, RECORD_NAME))
    else:
        root = forged_root(temp_root, lock="fifo")

    t0 = time.monotonic()
    sweep_stale(temp_root)
    for args in (
        ("diagnose", "--temp-dir", temp_root, "--json"),
        ("clean", "--temp-dir", temp_root, "--json"),
    ):
        out = run_cli(*args, timeout=NO_HANG_S)
        assert out.returncode in (0, 1), out.stderr
    with ChromeUltraAggressiveCleanup(**dict(session_kwargs, temp_root=temp_root)) as driver:
        driver.get("about:blank")
    assert time.monotonic() - t0 < NO_HANG_S
    assert not os.path.lexists(root), "a dead owner's dir with a FIFO in it is still litter of ours"


def test_a_symlinked_owner_lock_does_not_make_a_dir_live_forever(temp_root):
    root = forged_root(temp_root, record_naming([]), lock="symlink")
    reports = sweep_stale(temp_root)
    assert [r.session_id for r in reports] == [os.path.basename(root)[len(ROOT_PREFIX) :]]
    assert not os.path.lexists(root)
    assert os.path.exists("/etc/hostname"), "the link was followed"


def test_a_negative_pid_and_a_huge_record_are_reported_and_the_sweep_goes_on(temp_root, bystander):
    bad = forged_root(temp_root, record_naming([(-1, 1.0), (0, 1.0)]))
    huge_pids = [(100000 + i, 1.0 + i) for i in range(200_000)]
    huge = forged_root(temp_root, record_naming(huge_pids))
    assert os.path.getsize(os.path.join(huge, RECORD_NAME)) > MAX_RECORD_BYTES

    t0 = time.monotonic()
    out = run_cli("clean", "--temp-dir", temp_root, "--json", timeout=NO_HANG_S)
    took = time.monotonic() - t0
    assert out.returncode in (0, 1), out.stderr
    assert "Traceback" not in out.stderr and "ValueError" not in out.stderr, out.stderr
    assert not os.path.lexists(bad) and not os.path.lexists(huge), out.stdout
    assert took < 30, f"clean took {took:.1f} s on a huge record"
    bystander.assert_alive()


def test_a_sigkilled_owner_s_watchdog_spares_a_bystander_naming_the_session_dir(crash):
    owner = crash.spawn()
    (session,) = owner.sessions
    procs = crash.snapshot(session)  # before the bystander: it is not the session's
    log = os.path.join(session["root"], "tmp", "x.log")
    open(log, "w").close()
    tail = subprocess.Popen(["tail", "-f", log], stdout=subprocess.DEVNULL)
    try:
        owner.kill(signal.SIGKILL)
        owner.wait(10)
        gone = h.wait_until(lambda: not crash.running(procs) and not os.path.lexists(session["root"]), 10)
        assert gone, f"session not gone: {crash.running(procs)}"
        assert tail.poll() is None, "the watchdog killed a bystander that only named the session dir"
    finally:
        tail.kill()
        tail.wait()
