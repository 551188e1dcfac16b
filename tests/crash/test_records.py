"""Unit tests of the ownership records, the owner lock and the stale sweep
(``embassy_cleanup._records``); no Chrome.

A "stale root" here is a dir named like a session root with an ``owner.lock``
nobody holds (its owner is dead).  Its "session processes" are plain Python
sleepers carrying the root path on their command line (the same marker every
Chrome process of a session carries), started through an intermediate process
that exits, so that they are orphans re-parented to init, as a crashed owner's
Chrome is.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from embassy_cleanup import _platform, _records, sweep_stale
from embassy_cleanup._ownership import ROOT_PREFIX
from tests import _helpers as h
from tests.crash.conftest import PROJECT_ROOT, alive

SLEEP = "import time; time.sleep(300)"


# -- helpers ------------------------------------------------------------------
def make_root(base: str, *, lock: bool = True, record: dict | None = None, sid: str | None = None) -> str:
    """A session root in ``base`` as a crashed owner leaves it (lock not held)."""
    sid = sid or secrets.token_hex(6)
    root = os.path.join(base, f"{ROOT_PREFIX}{sid}")
    os.mkdir(root, 0o700)
    for sub in ("profile", "tmp", "config", "cache"):
        os.mkdir(os.path.join(root, sub), 0o700)
    if lock:
        with open(os.path.join(root, _records.LOCK_NAME), "w"):
            pass
    if record is not None:
        _records.write_record(root, {"session_id": sid, "root": root, **record})
    return root


def make_old(path: str, seconds: float = _records.YOUNG_ROOT_S + 60) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


def spawn_orphan(*marker_args: str, code: str = SLEEP) -> psutil.Process:
    """A sleeper running ``code`` with ``marker_args`` on its command line, re-parented to init."""
    spawner = (
        "import subprocess, sys\n"
        "null = subprocess.DEVNULL\n"
        "p = subprocess.Popen([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], start_new_session=True,\n"
        "                     stdin=null, stdout=null, stderr=null)\n"
        "print(p.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", spawner, code, *marker_args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    proc = psutil.Process(int(out.stdout))
    assert alive(proc)
    return proc


def spawn_marked(root: str) -> psutil.Process:
    """An orphan carrying ``root`` on its command line and named like Chrome, as a
    Chrome of the session is (the root on a command line counts only for a
    Chrome-family process: see ``_ownership``)."""
    proc = spawn_orphan(f"--user-data-dir={root}/profile", code=h.CHROME_NAME_CODE + SLEEP)
    assert h.wait_until(lambda: proc.name() == "chromium", timeout=10), proc
    return proc


@pytest.fixture
def children():
    """Direct children started by a test; SIGKILLed (by Popen) and reaped at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


# -- records ------------------------------------------------------------------
def test_a_record_written_is_read_back_unchanged_and_private(tmp_path):
    data = {
        "session_id": "0123456789ab",
        "owner_pid": 4242,
        "owner_create_time": 1700000000.25,
        "root": str(tmp_path),
        "pids": [[100, 1700000001.5, "chromedriver"], [101, 1700000001.75, "chromium"]],
        "ports": [9515, 40000],
        "created": 1700000000.5,
    }
    _records.write_record(str(tmp_path), data)
    assert _records.read_record(str(tmp_path)) == data
    path = tmp_path / _records.RECORD_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [_records.RECORD_NAME], "the temp file must not stay behind"
    # rewriting replaces the whole record (the lists it lacks read as empty)
    _records.write_record(str(tmp_path), {"session_id": "x"})
    assert _records.read_record(str(tmp_path)) == {"session_id": "x", "pids": [], "ports": []}


@pytest.mark.parametrize(
    "content",
    [b"", b'{"session_id": "0123', b"\x00\xff\xfe garbage", b"[1, 2, 3]", b'"a string"', b"null"],
    ids=["empty", "half-written", "binary", "a-list", "a-string", "null"],
)
def test_a_half_written_or_garbage_record_reads_as_empty(tmp_path, content):
    (tmp_path / _records.RECORD_NAME).write_bytes(content)
    assert _records.read_record(str(tmp_path)) == {}


def test_a_missing_or_symlinked_record_reads_as_empty(tmp_path):
    assert _records.read_record(str(tmp_path)) == {}
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"session_id": "not-ours"}))
    os.symlink(elsewhere, tmp_path / _records.RECORD_NAME)
    assert _records.read_record(str(tmp_path)) == {}, "a symlinked record must not be followed"


def test_a_second_owner_lock_on_the_same_root_is_refused_until_the_first_is_released(tmp_path):
    first = _records.OwnerLock(str(tmp_path))
    try:
        with pytest.raises(RuntimeError, match="locked by another process"):
            _records.OwnerLock(str(tmp_path))
        with _records.dead_owner_lock(str(tmp_path)) as owner:
            assert owner is _records.Owner.ALIVE
    finally:
        first.release()
    with _records.dead_owner_lock(str(tmp_path)) as owner:
        assert owner is _records.Owner.DEAD
        with _records.dead_owner_lock(str(tmp_path)) as again:  # held for the block
            assert again is _records.Owner.ALIVE
    with _records.dead_owner_lock(str(tmp_path)) as owner:  # and released after it
        assert owner is _records.Owner.DEAD
    first.release()  # twice: harmless


# -- the sweep: what it takes --------------------------------------------------
def test_sweeping_an_empty_or_missing_dir_returns_nothing(tmp_path):
    assert sweep_stale(str(tmp_path)) == []
    assert sweep_stale(str(tmp_path / "does-not-exist")) == []


def test_a_stale_root_with_a_garbage_record_is_swept_by_its_dir_name_markers(scratch_root):
    root = make_root(scratch_root)
    with open(os.path.join(root, _records.RECORD_NAME), "wb") as fh:
        fh.write(b'{"session_id": "half-writ')
    assert _records.read_record(root) == {}
    marked = [spawn_marked(root), spawn_marked(root)]

    reports = sweep_stale(scratch_root)

    assert len(reports) == 1, reports
    assert reports[0].ok, str(reports[0])
    assert reports[0].session_id == _records.session_id_of(root)
    assert {a.pid for a in reports[0].killed} >= {p.pid for p in marked}
    assert not any(alive(p) for p in marked)
    assert not os.path.lexists(root)


def test_a_live_owners_root_is_never_swept_and_is_once_the_owner_dies(
    scratch_root, children, record_property
):
    root = make_root(scratch_root, record={"pids": []})
    marked = spawn_marked(root)
    # the second owner: another process of the same user, holding the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from embassy_cleanup import _records\n"
            "lock = _records.OwnerLock(sys.argv[1])\n"
            "print('locked', flush=True)\n"
            "time.sleep(300)\n",
            root,
        ],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=PROJECT_ROOT),
    )
    children.append(holder)
    assert holder.stdout.readline().strip() == b"locked"
    make_old(root)

    t0 = time.monotonic()
    assert sweep_stale(scratch_root) == []
    elapsed = time.monotonic() - t0
    record_property("sweep_with_nothing_stale_s", f"{elapsed:.4f}")
    print(f"\n[crash timing] sweep_stale with only a live root: {elapsed * 1000:.1f} ms")
    assert alive(marked) and os.path.isdir(root)
    assert _records.read_record(root) != {}

    holder.kill()
    holder.wait(10)
    holder.stdout.close()
    reports = sweep_stale(scratch_root)
    assert [r.session_id for r in reports] == [_records.session_id_of(root)]
    assert reports[0].ok, str(reports[0])
    assert not alive(marked) and not os.path.lexists(root)


def test_a_root_locked_by_this_very_process_is_not_swept_by_it(scratch_root):
    root = make_root(scratch_root)
    marked = spawn_marked(root)
    lock = _records.OwnerLock(root)
    try:
        assert sweep_stale(scratch_root) == []
        assert alive(marked) and os.path.isdir(root)
    finally:
        lock.release()
    assert len(sweep_stale(scratch_root)) == 1
    assert not alive(marked) and not os.path.lexists(root)


def test_a_root_without_a_lock_file_is_skipped_while_young_and_swept_once_old(scratch_root):
    root = make_root(scratch_root, lock=False)
    marked = spawn_marked(root)

    assert sweep_stale(scratch_root) == [], "a young root without a lock may be a session being created"
    assert alive(marked) and os.path.isdir(root)

    make_old(root)
    reports = sweep_stale(scratch_root)
    assert len(reports) == 1 and reports[0].ok, reports
    assert not alive(marked) and not os.path.lexists(root)


# -- the sweep: what it must never touch ---------------------------------------
def test_a_symlink_named_like_a_session_root_is_skipped_and_its_target_untouched(scratch_root):
    target = tempfile.mkdtemp(prefix="target-", dir=h.RUN_ROOT)
    try:
        for sub in ("profile", "tmp"):
            os.mkdir(os.path.join(target, sub))
        with open(os.path.join(target, _records.LOCK_NAME), "w"):
            pass
        _records.write_record(target, {"session_id": "x", "pids": []})
        with open(os.path.join(target, "precious.txt"), "w") as fh:
            fh.write("keep me")
        before = sorted(os.listdir(target))
        link = os.path.join(scratch_root, f"{ROOT_PREFIX}{secrets.token_hex(6)}")
        os.symlink(target, link)
        make_old(link)
        make_old(target)
        via_link = spawn_marked(link)  # if the sweep followed the link, it would kill this

        assert sweep_stale(scratch_root) == []

        assert os.path.islink(link) and os.readlink(link) == target
        assert sorted(os.listdir(target)) == before
        with open(os.path.join(target, "precious.txt")) as fh:
            assert fh.read() == "keep me"
        assert alive(via_link)
    finally:
        h.kill_all(h.processes_under(target))
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown() to another uid needs root"
)
def test_another_users_root_in_a_shared_temp_dir_is_skipped(scratch_root):
    root = make_root(scratch_root, record={"pids": []})
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 65534, 65534)
    os.lchown(root, 65534, 65534)
    make_old(root)
    ours = spawn_marked(root)  # of our uid, marked: the sweep would kill it if it judged the dir

    assert sweep_stale(scratch_root) == []

    assert os.stat(root).st_uid == 65534
    assert sorted(os.listdir(root)) == sorted(
        ["profile", "tmp", "config", "cache", "owner.lock", "session.json"]
    )
    assert alive(ours)


def test_a_recorded_pid_reused_by_an_unrelated_process_is_not_killed(scratch_root, children):
    victim = subprocess.Popen([sys.executable, "-c", SLEEP])
    children.append(victim)
    victim_ct = psutil.Process(victim.pid).create_time()
    root = make_root(
        scratch_root,
        record={"pids": [[victim.pid, victim_ct - 100, "chromium"]], "ports": []},
    )
    marked = spawn_marked(root)  # the session's real leftover: this one must go

    reports = sweep_stale(scratch_root)

    assert len(reports) == 1 and reports[0].ok, reports
    assert not alive(marked) and not os.path.lexists(root)
    assert victim.poll() is None, "the sweep killed a process that only had a recorded pid's number"
    assert victim.pid not in {a.pid for a in reports[0].killed}


def test_a_recorded_pid_reused_by_an_exited_child_of_the_sweeper_is_not_reaped(scratch_root, children):
    victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    children.append(victim)
    proc = psutil.Process(victim.pid)
    victim_ct = proc.create_time()
    assert h.wait_until(lambda: proc.status() == psutil.STATUS_ZOMBIE, timeout=10)
    make_root(scratch_root, record={"pids": [[victim.pid, victim_ct - 100, "chromium"]], "ports": []})

    assert len(sweep_stale(scratch_root)) == 1

    assert victim.wait(10) == 3, "the sweep reaped a child that was not the session's"


# -- two sweepers ---------------------------------------------------------------
def _sweep_at_once(temp_root: str, n: int = 2) -> tuple[list, list]:
    """``n`` threads call ``sweep_stale(temp_root)`` at the same moment;
    returns (every report, every exception)."""
    barrier = threading.Barrier(n)
    reports: list = []
    errors: list = []

    def sweep():
        try:
            barrier.wait(10)
            reports.extend(sweep_stale(temp_root))
        except BaseException as err:  # reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=sweep) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return reports, errors


def test_two_sweepers_in_threads_at_once_tear_a_stale_root_down_exactly_once(scratch_root):
    for round_ in range(3):
        root = make_root(scratch_root, record={"pids": []})
        marked = spawn_marked(root)
        reports, errors = _sweep_at_once(scratch_root)
        assert not errors, errors
        assert len(reports) == 1, f"round {round_}: {len(reports)} sweepers tore it down"
        assert reports[0].ok
        assert not alive(marked) and not os.path.lexists(root)


def test_two_sweeper_processes_at_once_tear_a_stale_root_down_exactly_once(scratch_root, children):
    root = make_root(scratch_root, record={"pids": []})
    marked = [spawn_marked(root) for _ in range(2)]
    code = (
        "import json, sys\n"
        "from embassy_cleanup import sweep_stale\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "reports = sweep_stale(sys.argv[1])\n"
        "print(json.dumps([[r.session_id, r.ok] for r in reports]), flush=True)\n"
    )
    sweepers = [
        subprocess.Popen(
            [sys.executable, "-c", code, scratch_root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=PROJECT_ROOT),
        )
        for _ in range(2)
    ]
    children.extend(sweepers)
    for s in sweepers:
        assert s.stdout.readline().strip() == b"ready"
    for s in sweepers:  # go
        s.stdin.write(b"go\n")
        s.stdin.flush()
    outputs = [s.communicate(timeout=60) for s in sweepers]
    for s, (_out, err) in zip(sweepers, outputs):
        assert s.returncode == 0, err.decode()
        assert b"Traceback" not in err, err.decode()
    swept = [item for out, _err in outputs for item in json.loads(out.decode().strip().splitlines()[-1])]
    assert swept == [[_records.session_id_of(root), True]], swept
    assert not any(alive(p) for p in marked) and not os.path.lexists(root)


def _interleave_at_first_lock(monkeypatch, run_first):
    """Make the first ``_platform.lock_file`` call run ``run_first()`` between
    the caller's ``open()`` of the lock file and its ``flock()``: the window
    in which another process can act."""
    real_lock_file = _platform.lock_file
    state = {"armed": True, "result": None}

    def lock_file(fd, blocking):
        if state["armed"]:
            state["armed"] = False
            state["result"] = run_first()
        return real_lock_file(fd, blocking)

    monkeypatch.setattr(_platform, "lock_file", lock_file)
    return state


def test_a_sweeper_that_opened_the_lock_just_before_another_swept_does_not_sweep_again(
    scratch_root, monkeypatch
):
    root = make_root(scratch_root, record={"pids": []})
    marked = spawn_marked(root)
    state = _interleave_at_first_lock(monkeypatch, lambda: sweep_stale(scratch_root))

    late = sweep_stale(scratch_root)  # opens owner.lock; the other sweeper runs to the end; then flock()

    first = state["result"]
    assert first is not None and len(first) == 1 and first[0].ok, first
    assert not alive(marked) and not os.path.lexists(root)
    assert late == [], "a second sweeper tore down a root that was already gone"


def test_a_session_root_whose_owner_is_taking_its_lock_right_now_is_not_swept(scratch_root, monkeypatch):
    root = make_root(scratch_root, lock=False)  # just created, like make_session_root() leaves it
    marked = spawn_marked(root)
    state = _interleave_at_first_lock(monkeypatch, lambda: sweep_stale(scratch_root))

    lock = _records.OwnerLock(root)  # the owner: creates owner.lock, (a sweep runs), flock()
    try:
        assert state["result"] == [], "a sweep took the lock of a live session being started"
        assert alive(marked) and os.path.isdir(root)
    finally:
        lock.release()
