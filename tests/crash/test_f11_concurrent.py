"""F11: 4 sessions at once in threads, and 4 in separate processes: each
session cleans only its own."""

from __future__ import annotations

import signal
import threading

import psutil
import pytest
from selenium.webdriver import ChromeOptions

from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests import _helpers as h
from tests.crash.conftest import alive

pytestmark = pytest.mark.chrome

N = 4


def _page(text: str) -> str:
    return f"data:text/html,<title>{text}</title>"


def _options() -> ChromeOptions:
    options = ChromeOptions()
    options.page_load_strategy = "eager"
    return options


def _disjoint(snaps):
    for i, a in enumerate(snaps):
        for b in snaps[i + 1 :]:
            assert not set(a) & set(b), f"two sessions share processes: {set(a) & set(b)}"


def test_four_sessions_in_threads_each_close_only_their_own(crash, session_kwargs):
    # graceful=False: the tree-kill, not driver.quit(), ends each session, so a
    # kill that strays into another session's processes would show
    cleanups = [
        ChromeUltraAggressiveCleanup(**session_kwargs, options=_options(), graceful=False) for _ in range(N)
    ]
    drivers = [None] * N
    errors = []
    barrier = threading.Barrier(N)

    def start(i):
        try:
            barrier.wait(30)
            drivers[i] = cleanups[i].start()
            drivers[i].get(_page(f"thread-{i}"))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(N)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        roots = [c.root for c in cleanups]  # (a root reads None once its session is torn down)
        assert len(set(roots)) == N
        snaps = [crash.snapshot({"root": root, "pids": {}}) for root in roots]
        existing = set(psutil.pids())  # a kill outside this set hit a process born after the snapshots
        for snap in snaps:
            assert len(crash.running(snap)) >= 5, snap
        _disjoint(snaps)

        def assert_only_own(i: int, killed: set[int]) -> None:
            """Killed: some of session i's snapshot, none of another session's,
            and nothing else that already ran at snapshot time (a helper
            Chrome started since then may be killed: it is not in any snapshot)."""
            own = set(snaps[i])
            others = set().union(*(set(s) for j, s in enumerate(snaps) if j != i))
            assert killed & own, f"session {i} killed none of its own: {killed}"
            assert not killed & others, f"session {i} killed another session's {killed & others}"
            stray = (killed - own) & existing
            assert not stray, f"session {i} killed {stray}: running at the snapshot, not its own"

        # while 3 are open, close the 4th: only its own processes are signalled
        steadies = h.steady({pid: p for snap in snaps for pid, p in snap.items()})  # what must survive
        report = cleanups[-1].close()
        assert report.ok, str(report)
        assert_only_own(N - 1, {a.pid for a in report.killed})
        assert crash.gone({roots[-1]: snaps[-1]})
        for i in range(N - 1):
            lost = crash.lost({pid: steadies[pid] for pid in snaps[i] if pid in steadies})
            assert not lost, f"session {i} lost processes: {h.named(lost)}"
            assert drivers[i].title == f"thread-{i}"

        # the other 3 close at once, from 3 threads; each only its own
        reports = [None] * (N - 1)

        def close(i):
            reports[i] = cleanups[i].close()

        closers = [threading.Thread(target=close, args=(i,)) for i in range(N - 1)]
        for t in closers:
            t.start()
        for t in closers:
            t.join(60)
        for i, rep in enumerate(reports):
            assert rep is not None and rep.ok, str(rep)
            assert_only_own(i, {a.pid for a in rep.killed})
        assert crash.gone(dict(zip(roots, snaps)))
    finally:
        for c in cleanups:
            c.close()


def test_four_owner_processes_a_sigkilled_one_loses_only_its_own_session(crash, bystander):
    owners = [crash.spawn(ready=False, name=f"owner{i}", extra=["--no-graceful"]) for i in range(N)]
    for owner in owners:
        owner.ready()
    sessions = [o.sessions[0] for o in owners]
    snaps = [crash.snapshot(s) for s in sessions]
    for snap in snaps:
        assert len(crash.running(snap)) >= 5, snap
    _disjoint(snaps)
    watchdogs = [o.info["watchdog_pid"] for o in owners]
    assert None not in watchdogs and len(set(watchdogs)) == N, f"one watchdog per owner: {watchdogs}"

    # what must survive, taken before the kill: all but what Chrome ends by itself
    steadies = h.steady({pid: p for snap in snaps for pid, p in snap.items()})
    victim = 1
    crash.kill_owner_and_wait_gone(owners[victim], signal.SIGKILL, "F11 SIGKILL one of 4 owners -> gone")
    assert crash.wait_exit(owners[victim].watchdog)
    log = owners[victim].watchdog_log()
    assert f"watchdog: session {sessions[victim]['sid']}: ok" in log, log
    for i, s in enumerate(sessions):
        if i != victim:
            assert s["sid"] not in log, f"the victim's watchdog acted on owner {i}'s session"

    survivors = [i for i in range(N) if i != victim]
    for i in survivors:
        lost = crash.lost({pid: steadies[pid] for pid in snaps[i] if pid in steadies})
        assert not lost, f"owner {i}'s session lost processes: {h.named(lost)}"
        assert alive(owners[i].watchdog), f"owner {i}'s watchdog died"
        assert owners[i].cmd("title 0")["title"] == "owner-0"
        assert owners[i].cmd(f"get 0 still-{i}")["title"] == f"still-{i}"

    for i in survivors:
        closed = owners[i].cmd("close 0")
        assert closed["ok"], closed["report"]
        assert closed["killed"], "graceful=False: the tree-kill should have ended the session"
        others = set().union(*(snaps[j] for j in range(N) if j != i))
        assert not set(closed["killed"]) & others, f"owner {i} killed another session's processes"
        owners[i].send("exit")
        assert owners[i].wait(30) == 0, owners[i].stderr()
        assert crash.wait_exit(owners[i].watchdog)
    assert crash.gone({s["root"]: snap for s, snap in zip(sessions, snaps)})
    bystander.assert_alive()
