"""adopt(..., watchdog=True): the watchdog's message for an adopted driver,
its validation, and the watchdog's reap of it, on a real process tree (no Chrome)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from embassy_cleanup import _watchdog
from embassy_cleanup._adopt import AdoptedKind, AdoptFindings, parse_registration
from embassy_cleanup._lifecycle import Lifecycle
from embassy_cleanup._ownership import OwnedProcess, ProcessTracker
from embassy_cleanup._teardown import TeardownTarget
from embassy_cleanup._watchdog import WATCHDOG_PROTOCOL
from embassy_cleanup._watchdog_main import REAPERS
from tests import _helpers as h


def fake_lifecycle(profile: str | None, remove: bool, procs=((4242, 1700000000.5, "chromedriver"),)):
    """The lifecycle of an adopted driver (never registered, never torn down):
    only its watchdog message is asked for."""
    tracker = ProcessTracker("", profile or "", born_after=1700000000.0)
    tracker.record(OwnedProcess(p[0], p[1], p[2], "recorded") for p in procs)
    found = AdoptFindings(
        driver_pid=procs[0][0],
        browser_pid=None,
        processes=(),
        profile_dir=profile,
        profile_origin="chromedriver" if remove else "user",
        remove_profile=remove,
        singleton_dir="/tmp/org.chromium.Chromium.AbC123",
        ports=(9515,),
        limits=(),
    )
    target = TeardownTarget("adopted-abc", tracker, profile if remove else None)
    return Lifecycle("adopted-abc", AdoptedKind(target, found), budget=5.0, watchdog=True)


SCRATCH = "/tmp/org.chromium.Chromium.scoped_dir.AbC124"


def body(**changes):
    good = {
        "procs": [[4242, 1700000000.5, "chromedriver"]],
        "dirs": ["/tmp/org.chromium.Chromium.scoped_dir.AbC123"],
        "profile_kept": False,
        "singleton_dir": "/tmp/org.chromium.Chromium.AbC123",
        "ports": [9515],
        "born_after": 1700000000.0,
    }
    good.update(changes)
    return good


def test_the_message_names_a_removable_profile_and_parses_back(monkeypatch):
    monkeypatch.setattr(OwnedProcess, "is_running", lambda self: True)
    profile = "/tmp/org.chromium.Chromium.scoped_dir.AbC123"
    msg = json.loads(json.dumps(fake_lifecycle(profile, remove=True).add_message()))

    assert msg["v"] == WATCHDOG_PROTOCOL and msg["op"] == "add" and msg["sid"] == "adopted-abc"
    assert msg["kind"] == AdoptedKind.kind
    assert msg["body"]["dirs"] == [profile]
    reg = parse_registration(msg["body"])
    assert [(p.pid, p.create_time) for p in reg.procs] == [(4242, 1700000000.5)]
    assert reg.dirs == (profile,) and not reg.profile_kept
    assert reg.singleton_dir == "/tmp/org.chromium.Chromium.AbC123" and reg.ports == (9515,)


def test_the_message_never_names_a_profile_the_user_keeps(monkeypatch):
    monkeypatch.setattr(OwnedProcess, "is_running", lambda self: True)
    msg = fake_lifecycle("/home/me/real-profile", remove=False).add_message()

    assert msg["body"]["dirs"] == []
    assert msg["body"]["profile_kept"] is True
    assert "real-profile" not in json.dumps(msg)


def test_the_message_leaves_out_processes_that_no_longer_run(monkeypatch):
    monkeypatch.setattr(OwnedProcess, "is_running", lambda self: self.pid != 4243)
    lc = fake_lifecycle(None, False, procs=((4242, 1.5, "chromedriver"), (4243, 2.5, "chromium")))
    assert [p[0] for p in lc.add_message()["body"]["procs"]] == [4242]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"procs": []}, "names no processes"),
        ({"procs": [[True, 1.0, "x"]]}, "must be \\[pid > 1"),
        ({"procs": [[1, 1.0, "init"]]}, "must be \\[pid > 1"),
        ({"procs": [[42, -1.0, "x"]]}, "must be \\[pid > 1"),
        ({"procs": [[42, float("nan"), "x"]]}, "must be \\[pid > 1"),
        ({"procs": [[42, 1.0]]}, "must be \\[pid > 1"),
        ({"dirs": ["relative/profile"]}, "absolute, normalised"),
        ({"dirs": ["/tmp/a/../.."]}, "absolute, normalised"),
        ({"dirs": ["/"]}, "absolute, normalised|root dir or the home dir"),
        ({"dirs": [os.path.expanduser("~")]}, "root dir or the home dir"),
        ({"dirs": "/tmp/x"}, "dirs must be a list"),
        ({"singleton_dir": "/tmp/my-stuff"}, "not named like Chromium's singleton dir"),
        ({"ports": [0]}, "ports must be"),
        ({"born_after": "now"}, "born_after must be"),
        ({"scratch_dir": SCRATCH}, "scratch_dir must be"),
        ({"scratch_dir": [SCRATCH, 1, 5]}, "scratch_dir must be"),
        ({"scratch_dir": [SCRATCH, -1, 5, 7]}, "scratch_dir must be"),
        ({"scratch_dir": [SCRATCH, True, 5, 7]}, "scratch_dir must be"),
        ({"scratch_dir": ["/tmp/my-stuff", 1, 5, 7]}, "not named like chromedriver's scoped dir"),
        ({"scratch_dir": ["tmp/org.chromium.Chromium.scoped_dir.AbC124", 1, 5, 7]}, "absolute, normalised"),
    ],
)
def test_a_malformed_registration_is_refused_whole(changes, error):
    with pytest.raises(ValueError, match=error):
        parse_registration(body(**changes))


def test_the_watchdog_reaps_the_recorded_roots_and_their_descendants_and_nothing_else(
    process_tree, tmp_path, capsys
):
    """A registered root and every descendant (one ignores SIGTERM) die when the
    owner's pipe closes; re-parented orphans, neither recorded nor descendants,
    are left alone; the removable dir and the singleton dir go."""
    tree = process_tree()
    profile = tmp_path / "org.chromium.Chromium.scoped_dir.AbC123"
    (profile / "Default").mkdir(parents=True)
    singleton = tmp_path / "org.chromium.Chromium.XyZ789"
    singleton.mkdir()
    (singleton / "SingletonCookie").write_text("1")
    message = {
        "v": WATCHDOG_PROTOCOL,
        "op": "add",
        "sid": "adopted-unit",
        "kind": AdoptedKind.kind,
        "body": body(
            procs=[[tree.root, tree.create_time(tree.root), "python"]],
            dirs=[str(profile)],
            singleton_dir=str(singleton),
            ports=[],
            born_after=tree.create_time(tree.root) - 1,
        ),
    }
    rfd, wfd = os.pipe()
    me = os.getpid()
    from psutil import Process

    done = threading.Thread(target=_watchdog.serve, args=(me, Process(me).create_time(), REAPERS, rfd))
    done.start()
    os.write(wfd, (json.dumps(message) + "\n").encode())
    os.close(wfd)  # the owner "dies": EOF
    done.join(30)
    os.close(rfd)
    assert not done.is_alive()

    orphans = {tree.pid_of("orphan_cmdline"), tree.pid_of("orphan_env")}
    reaped = {pid for pid in tree.pids if pid not in orphans}
    assert h.wait_until(lambda: not (set(tree.running()) & reaped), timeout=5), tree.running()
    assert orphans <= set(tree.running()), "the watchdog killed processes it was never told about"
    assert not profile.exists() and not singleton.exists()
    err = capsys.readouterr().err
    assert "session adopted-unit: ok" in err, err  # the watchdog's line for this session
