"""``embassy-cleanup diagnose`` and ``clean`` (and ``cleanup_chrome.sh``) against
real leftovers.

The leftovers are real: an owner process (tests/crash/_owner.py) that ran
with ``watchdog=False`` is SIGKILLed, so its chromedriver, Chrome and session
dir stay behind, as after a SIGKILLed watchdog or a reboot.  Every command
runs the real entry point in a subprocess with ``--temp-dir`` set to a dir of
this test run.  ``clean --all`` runs only in-process, with the kill path
(``embassy_cleanup._clean.execute``) replaced by a recorder: on this shared
machine the real one would kill other people's Chrome.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner

import embassy_cleanup._clean as clean_module
from embassy_cleanup import ChromeUltraAggressiveCleanup
from embassy_cleanup.cli import cli
from tests import _helpers as h
from tests.cli import (
    PlanRecorder,
    assert_live_session_untouched,
    chrome_named_exe,
    cli_json,
    close_live_owner,
    core_pids,
    crashed_owner,
    diagnose,
    leaks_of,
    live_owner,
    make_litter,
    run_cli,
    run_sh,
    scoped_dir,
    wait_healthy,
    wait_zombie,
)

pytestmark = pytest.mark.chrome

LITTER_NAMES = [
    "org.chromium.Chromium.aB3dEf",  # Debian's Chromium 156: no leading dot
    ".org.chromium.Chromium.aB3dEf",
    ".com.google.Chrome.aB3dEf",
    "scoped_dir4242_1717",
]


def _sessions(data):
    return {s["session_id"]: s for s in data["sessions"]}


def _pids(entries, sid=None):
    return {p["pid"] for p in entries if sid is None or p["session_id"] == sid}


def _dirs_in(temp_dir, data):
    """The Chromium litter of an inventory that lies in ``temp_dir``."""
    return [d for d in data["litter"] if d["path"].startswith(temp_dir + os.sep)]


def _plan(out):
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    data = json.loads(out.stdout)
    assert data["dry_run"] is True
    return data["plan"]


def _describe(pid):
    try:
        p = psutil.Process(pid)
        return f"{pid} {p.name()} {p.status()} ppid {p.ppid()} {' '.join(p.cmdline())[:200]}"
    except psutil.Error as err:
        return f"{pid}: {err!r}"


def _alive(crash, snap, pids):
    return [pid for pid in pids if pid in crash.running(snap)]


# -- orphans, live sessions, bystanders ----------------------------------------
def test_diagnose_reports_an_orphan_and_clean_tears_it_down_sparing_a_live_session_and_bystanders(
    crash, bystander, tdir
):
    owner, live, live_snap, live_core = live_owner(crash, tdir)
    dead_owner, orphan, snap = crashed_owner(crash, tdir)
    sid, root = orphan["sid"], orphan["root"]
    core = core_pids(crash, snap)
    assert len(core) >= 2, f"precondition: chromedriver and the browser should run: {core}"
    running = set(crash.running(snap))

    # diagnose --json: the orphan, its session (owner dead), the live session, the bystander
    data = diagnose(tdir, expect=1)
    assert data["healthy"] is False
    sessions = _sessions(data)
    assert sessions[sid]["owner_alive"] is False
    assert sessions[sid]["owner_pid"] == dead_owner.pid
    assert sessions[sid]["root"] == root and sessions[sid]["root_exists"] is True
    orphan_pids = _pids(data["orphans"], sid)
    assert running & set(crash.running(snap)) <= orphan_pids, "a running process of the orphan is missing"
    assert set(sessions[sid]["pids"]) >= orphan_pids
    assert {d["path"]: d["kind"] for d in data["stale_dirs"]}.get(root) == "session"
    assert sessions[live["sid"]]["owner_alive"] is True
    assert sessions[live["sid"]]["owner_pid"] == owner.pid
    assert set(crash.running(live_snap)) <= _pids(data["session_processes"], live["sid"])
    assert not _pids(data["orphans"], live["sid"]), "a live owner's process was called an orphan"
    assert live["root"] not in {d["path"] for d in data["stale_dirs"]}
    assert set(bystander.alive_chrome_pids()) <= _pids(data["foreign"]), "the bystander is not foreign"

    # the text form says the same
    text = run_cli("diagnose", "--temp-dir", tdir)
    assert text.returncode == 1, text.stderr
    assert re.search(rf"^\s+{sid}\s+{dead_owner.pid}\s+ORPHANED\s", text.stdout, re.M), text.stdout
    assert re.search(rf"^\s+{live['sid']}\s+{owner.pid}\s+live\s", text.stdout, re.M), text.stdout
    assert "LEAKS FOUND" in text.stdout

    # clean --dry-run: lists the teardown, does nothing
    plan = _plan(run_cli("clean", "--temp-dir", tdir, "--dry-run", "--json"))
    ours = [a for a in plan if a["target"] == sid]
    assert [a["action"] for a in ours] == ["teardown-session"], plan
    assert set(core) <= set(ours[0]["pids"])
    assert root in ours[0]["detail"]
    assert not [a for a in plan if a["target"] == live["sid"]], "the live session is in the plan"
    assert not [a for a in plan if a["action"] == "kill-process"], "kill-process without --all"
    assert _alive(crash, snap, core) == core, "the dry run killed something"
    assert os.path.isdir(root) and os.path.exists(os.path.join(root, "session.json"))

    # clean --older-than 3600: the orphan is seconds old, so it stays
    kept = run_cli("clean", "--temp-dir", tdir, "--older-than", "3600", "--json")
    assert kept.returncode == 0, kept.stderr
    assert sid not in {a["target"] for a in json.loads(kept.stdout)["done"]}
    assert _alive(crash, snap, core) == core and os.path.isdir(root)

    # clean: the orphan goes, the live session and the bystanders stay
    out = run_cli("clean", "--temp-dir", tdir, "--json")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    result = json.loads(out.stdout)
    assert result["ok"] is True and result["dry_run"] is False
    (done,) = [a for a in result["done"] if a["target"] == sid]
    assert done["action"] == "teardown-session" and done["outcome"].startswith("torn down"), done
    assert h.wait_until(lambda: crash.gone({root: snap}), timeout=5), crash.leftovers({root: snap})
    signalled = [pid for a in result["done"] + result["failed"] for pid in a["pids"]]
    assert_live_session_untouched(crash, owner, live, live_snap, live_core, signalled)
    bystander.assert_alive()

    # diagnose: healthy again (the live session is no leak)
    healthy, data, rc = wait_healthy(tdir)
    assert healthy, f"diagnose exit {rc}; leaks: {leaks_of(data)}"
    assert sid not in _sessions(data) and data["stale_dirs"] == []
    assert _sessions(data)[live["sid"]]["owner_alive"] is True

    close_live_owner(crash, owner, live, live_snap)


def test_cleanup_chrome_sh_hands_over_to_clean_and_spares_bystanders(crash, bystander, tdir):
    _owner, orphan, snap = crashed_owner(crash, tdir)
    root = orphan["root"]

    out = run_sh("--temp-dir", tdir)

    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert re.search(rf"teardown-session\s+{orphan['sid']}\s+torn down", out.stdout), out.stdout
    assert h.wait_until(lambda: crash.gone({root: snap}), timeout=5), crash.leftovers({root: snap})
    bystander.assert_alive()


def test_the_fallback_of_cleanup_chrome_sh_tears_down_an_orphan_and_spares_the_rest(crash, bystander, tdir):
    owner, live, live_snap, live_core = live_owner(crash, tdir)
    _dead, orphan, snap = crashed_owner(crash, tdir)
    sid, root = orphan["sid"], orphan["root"]
    core = core_pids(crash, snap)
    fallback = {"EMBASSY_CLEANUP_FALLBACK": "1"}

    # --dry-run: says what it would do, does nothing
    dry = run_sh("--dry-run", "--temp-dir", tdir, **fallback)
    assert dry.returncode == 0, f"{dry.stdout}\n{dry.stderr}"
    assert "Would do" not in dry.stdout, "the package ran, not the fallback"
    m = re.search(rf"^would kill session {sid} processes: ([0-9 ]+)$", dry.stdout, re.M)
    assert m, dry.stdout
    assert set(core) <= {int(p) for p in m.group(1).split()}
    assert f"would remove {root}" in dry.stdout
    assert f"skip {live['root']}: its owner is alive" in dry.stdout
    assert _alive(crash, snap, core) == core, "the dry run killed something"
    assert os.path.isdir(root)

    # --older-than 3600: too young
    young = run_sh("--older-than", "3600", "--temp-dir", tdir, **fallback)
    assert young.returncode == 0, young.stderr
    assert "nothing to clean" in young.stdout and sid not in young.stdout
    assert _alive(crash, snap, core) == core and os.path.isdir(root)

    # the real run
    out = run_sh("--temp-dir", tdir, **fallback)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    m = re.search(rf"^kill session {sid} processes: ([0-9 ]+)$", out.stdout, re.M)
    assert m, out.stdout
    assert f"remove {root}" in out.stdout and "FAILED" not in out.stdout
    assert h.wait_until(lambda: crash.gone({root: snap}), timeout=5), crash.leftovers({root: snap})
    signalled = [int(p) for p in m.group(1).split()]
    assert_live_session_untouched(crash, owner, live, live_snap, live_core, signalled)
    bystander.assert_alive()
    close_live_owner(crash, owner, live, live_snap)


def test_clean_with_a_temp_dir_leaves_orphans_of_other_temp_dirs_alone(crash, tdir):
    _owner, orphan, _snap = crashed_owner(crash, tdir)
    with scoped_dir() as other:
        plan = _plan(run_cli("clean", "--temp-dir", other, "--dry-run", "--json"))
        data = diagnose(other, expect=(0, 1))

    assert orphan["sid"] not in {a["target"] for a in plan}, plan
    assert orphan["sid"] not in _sessions(data)


def test_diagnose_no_memory_still_reports_rss(bystander, tdir):
    data, _out = cli_json("diagnose", "--temp-dir", tdir, "--no-memory", "--json", expect=(0, 1))

    mine = [p for p in data["foreign"] if p["pid"] in set(bystander.alive_chrome_pids())]
    assert mine, "the bystander is not in the inventory"
    assert all(p["uss_bytes"] is None and p["pss_bytes"] is None for p in mine)
    assert all(p["rss_bytes"] > 0 for p in mine), [(p["pid"], p["rss_bytes"]) for p in mine]


# -- zombies ------------------------------------------------------------------
ZOMBIE_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.argv[1]])
print(child.pid, flush=True)
sys.stdin.read()  # until the test closes our stdin
child.wait()
"""


def test_a_zombie_is_a_leak_under_a_sessions_owner_and_not_under_a_stranger(session_kwargs, tdir):
    exe = chrome_named_exe(tdir)
    stranger = subprocess.Popen(
        [sys.executable, "-c", ZOMBIE_PARENT, exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    mine = None
    try:
        their_zombie = int(stranger.stdout.readline())
        wait_zombie(their_zombie)

        # not ours: a zombie under a process that is no session's owner
        healthy, data, rc = wait_healthy(tdir)
        (entry,) = [z for z in data["zombies"] if z["pid"] == their_zombie]
        assert entry["ours"] is False and entry["ppid"] == stranger.pid and entry["session_id"] is None
        assert healthy, f"diagnose exit {rc}; leaks: {leaks_of(data)}"

        # ours: a zombie under the owner of a session (this process), nobody else will reap it
        cleanup = ChromeUltraAggressiveCleanup(**dict(session_kwargs, temp_root=tdir))
        with cleanup as driver:
            driver.get("data:text/html,<title>zombie</title>")
            mine = subprocess.Popen([exe])
            wait_zombie(mine.pid)
            data = diagnose(tdir, expect=1)
            (entry,) = [z for z in data["zombies"] if z["pid"] == mine.pid]
            assert entry["ours"] is True and entry["session_id"] == cleanup.session_id, entry
            assert entry["ppid"] == os.getpid() and entry["class"] == "zombie"
            assert data["healthy"] is False
            assert [z["ours"] for z in data["zombies"] if z["pid"] == their_zombie] == [False]
            text = run_cli("diagnose", "--temp-dir", tdir)
            assert re.search(rf"^\s+{mine.pid}\s+{os.getpid()}\s+chrome_zz\s+yes$", text.stdout, re.M)
            mine.wait()
        assert cleanup.report.ok, str(cleanup.report)
    finally:
        if mine is not None:
            mine.wait()
        stranger.stdin.close()
        stranger.wait(10)
        stranger.stdout.close()


# -- Chromium's own litter ------------------------------------------------------
@pytest.mark.parametrize("name", LITTER_NAMES)
def test_unused_chromium_litter_is_listed_and_removed(tdir, name):
    litter = make_litter(tdir, name)

    data = diagnose(tdir, expect=0)  # litter alone is no leak of ours
    assert {d["path"]: d["kind"] for d in _dirs_in(tdir, data)} == {litter: "chromium"}
    (entry,) = _dirs_in(tdir, data)
    assert entry["size_bytes"] == len("litter")

    kept = run_cli("clean", "--temp-dir", tdir, "--older-than", str(30 * 86400))
    assert kept.returncode == 0, kept.stderr
    assert os.path.isdir(litter), "--older-than 30 days removed a dir of 7 days"

    plan = _plan(run_cli("clean", "--temp-dir", tdir, "--dry-run", "--json"))
    assert [(a["action"], a["target"]) for a in plan if a["target"].startswith(tdir)] == [
        ("remove-dir", litter)
    ]
    assert os.path.isdir(litter), "the dry run removed it"

    out = run_cli("clean", "--temp-dir", tdir)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert re.search(rf"remove-dir\s+{re.escape(litter)}\s+removed", out.stdout), out.stdout
    assert not os.path.lexists(litter)
    assert _dirs_in(tdir, diagnose(tdir, expect=(0, 1))) == []


@pytest.mark.chrome
def test_litter_younger_than_a_live_chrome_of_the_user_is_listed_as_kept_and_not_removed(tdir, bystander):
    """A live plain-Selenium session's empty scoped dir is on no command line and
    held open by nobody; only its age tells that a live Chrome may own it."""
    scoped = make_litter(tdir, "org.chromium.Chromium.scoped_dir.Live01", age_s=0)
    old = make_litter(tdir, "org.chromium.Chromium.scoped_dir.Old001")

    data = diagnose(tdir, expect=0)
    kept = {d["path"]: d["kept"] for d in _dirs_in(tdir, data)}
    assert kept[scoped] is not None and kept[old] is None, kept

    out = run_cli("clean", "--temp-dir", tdir)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert os.path.isdir(scoped), "clean removed litter a live Chrome may own"
    assert not os.path.lexists(old)
    bystander.assert_alive()


def test_chromium_litter_in_use_is_neither_listed_nor_removed(tdir):
    unused = make_litter(tdir, "org.chromium.Chromium.unused")
    in_use = make_litter(tdir, "org.chromium.Chromium.in_use")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.join(in_use, "SingletonSocket"))
        sock.listen()

        data = diagnose(tdir, expect=0)
        assert [d["path"] for d in _dirs_in(tdir, data)] == [unused]
        out = run_cli("clean", "--temp-dir", tdir)
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"

        assert not os.path.lexists(unused), "the unused one should have gone (the control)"
        assert os.path.isdir(in_use), "a dir whose socket is in use was removed"
        assert os.path.exists(os.path.join(in_use, "SingletonSocket"))
    finally:
        sock.close()


def test_a_symlink_named_like_litter_is_never_followed(tdir):
    target = os.path.join(h.RUN_ROOT, "symlink-target")
    os.makedirs(target, exist_ok=True)
    precious = os.path.join(target, "precious")
    with open(precious, "w") as fh:
        fh.write("keep me")
    link = os.path.join(tdir, "org.chromium.Chromium.link")
    os.symlink(target, link)
    litter = make_litter(tdir, "org.chromium.Chromium.withlink")
    inner = os.path.join(litter, "inner")
    os.symlink(target, inner)
    old = time.time() - 7 * 86400
    os.utime(litter, (old, old))  # older than any live Chrome again (see make_litter)

    data = diagnose(tdir, expect=0)
    assert [d["path"] for d in _dirs_in(tdir, data)] == [litter], "the symlink was listed"
    out = run_cli("clean", "--temp-dir", tdir)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"

    assert os.path.islink(link) and os.readlink(link) == target, "the symlink itself was touched"
    assert not os.path.lexists(litter), "the real litter dir should have gone"
    with open(precious) as fh:
        assert fh.read() == "keep me", "clean removed through a symlink"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a dir owned by another uid")
def test_litter_owned_by_another_user_is_left_alone(tdir):
    theirs = make_litter(tdir, "org.chromium.Chromium.theirs")
    os.chown(theirs, 65534, 65534)

    data = diagnose(tdir, expect=(0, 1))
    assert _dirs_in(tdir, data) == []
    out = run_cli("clean", "--temp-dir", tdir)
    assert out.returncode == 0, out.stderr
    assert os.path.isdir(theirs) and os.path.exists(os.path.join(theirs, "SingletonCookie"))


# -- clean --all, in-process with the kill path faked ---------------------------
@pytest.fixture
def recorder(monkeypatch):
    rec = PlanRecorder()
    monkeypatch.setattr(clean_module, "execute", rec)
    return rec


def test_clean_all_with_yes_plans_to_kill_every_chrome_family_process_including_foreign_ones(
    recorder, bystander, tdir
):
    result = CliRunner().invoke(cli, ["clean", "--all", "--yes", "--temp-dir", tdir, "--json"])

    assert result.exit_code == 0, result.output
    assert "WARNING: --all kills" in result.stderr
    (plan,) = recorder.plans
    kills = {int(a.target): a for a in plan if a.kind == "kill-process"}
    for pid in bystander.alive_chrome_pids():
        assert pid in kills, f"bystander {pid} is not in the --all plan: {_describe(pid)}; {plan}"
        assert "foreign" in kills[pid].detail and kills[pid].pids == (pid,)
    assert os.getpid() not in kills
    bystander.assert_alive()  # the recorder stood in for the kill


def test_clean_all_dry_run_lists_kill_process_actions_and_does_nothing(recorder, bystander, tdir):
    result = CliRunner().invoke(cli, ["clean", "--all", "--dry-run", "--temp-dir", tdir, "--json"])

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    kills = {int(a["target"]) for a in plan if a["action"] == "kill-process"}
    assert set(bystander.alive_chrome_pids()) <= kills
    assert recorder.plans == [], "a dry run executed its plan"
