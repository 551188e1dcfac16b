"""Long-running owners (issue 3, sections 1, 3 and 4):

* a session started in a short-lived worker thread keeps its browser (no
  ``PR_SET_PDEATHSIG``, which would fire when that *thread* exits);
* a soak of sequential sessions, graceful and forced in turn, leaves nothing,
  no zombie children, and neither open fds nor threads grow without help
  from the garbage collector;
* the opt-in ``install_signal_handlers()`` tears down in-process on SIGTERM,
  then lets the signal (or the application's own handler) have its way.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest
from selenium.webdriver import ChromeOptions

from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests import _helpers as h

pytestmark = pytest.mark.chrome

#: Sessions in the soak: 20 in the suite, more where time is cheaper
#: (scripts/fault_matrix.sh runs 50).  tests/faults/test_f01_normal_exit.py
#: holds (fds, threads, children) to exact equality over a few sessions.
SOAK_SESSIONS = int(os.environ.get("EMBASSY_SOAK_SESSIONS", "20"))


def _page(text: str) -> str:
    return f"data:text/html,<title>{text}</title>"


def _fast_options() -> ChromeOptions:
    # Chrome's first navigation sometimes stalls ~5 s before it returns; with
    # "none" get() returns at once and we poll the title instead.
    options = ChromeOptions()
    options.page_load_strategy = "none"
    return options


def _open(driver, text: str) -> None:
    driver.get(_page(text))
    assert h.wait_until(lambda: driver.title == text, timeout=30), f"page {text!r} did not load"


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- threads ----------------------------------------------------------------------
def test_a_session_started_in_a_worker_thread_keeps_its_browser_after_the_thread_exits(crash, session_kwargs):
    box = {}

    def work():
        cleanup = ChromeUltraAggressiveCleanup(**session_kwargs, options=_fast_options())
        box["cleanup"] = cleanup
        box["driver"] = cleanup.start()
        _open(box["driver"], "from-thread")

    worker = threading.Thread(target=work, name="short-lived-starter")
    worker.start()
    worker.join(120)
    assert not worker.is_alive()
    cleanup, driver = box["cleanup"], box["driver"]
    try:
        # Renderers and a few others come and go by themselves; the rest must all survive.
        root = cleanup.root  # (None once the session is torn down)
        snap = h.steady(crash.snapshot({"root": root, "pids": {}}))
        assert len(crash.running(snap)) >= 4
        # a parent-death signal tied to the thread would strike right now
        h.wait_until(lambda: crash.lost(snap), timeout=0.5)
        lost = crash.lost(snap)  # (a process that ended stays ended)
        assert not lost, f"the browser lost processes when its starting thread exited: {h.named(lost)}"
        assert driver.title == "from-thread"
        _open(driver, "from-main")
    finally:
        report = cleanup.close()
    assert report.ok, str(report)
    assert crash.gone({root: snap})


# -- fds and threads, soak -------------------------------------------------------
# Both modes in one soak (they were a run of 20 graceful sessions and a soak of
# 50 forced ones): forced closes no HTTP connection or pipe through quit(),
# graceful goes through selenium's.  The garbage collector is off, so only what
# the library closes itself counts.  A generous bound: 50 sessions take about
# 40 s on an idle 2-core machine, several times that when other people's
# browsers load it.
@pytest.mark.timeout(400)
def test_a_soak_of_sessions_in_both_modes_leaves_nothing_and_grows_neither_fds_nor_threads_without_the_gc(
    session_kwargs, record_property
):
    n = max(SOAK_SESSIONS, 4)
    counts = {}
    t0 = time.monotonic()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(1, n + 1):
            graceful = i % 2 == 0
            cleanup = ChromeUltraAggressiveCleanup(
                **session_kwargs, options=_fast_options(), graceful=graceful, preset="minimal"
            )
            with cleanup as driver:
                root = cleanup.root
                _open(driver, f"s{i}")
            assert cleanup.report.ok, f"session {i}: {cleanup.report}"
            assert not os.path.lexists(root), f"session {i}: {root} left"
            left = h.processes_under(root)
            assert not left, f"session {i}: processes left: {[p.pid for p in left]}"
            zombies = h.zombie_children()
            assert not zombies, f"session {i}: zombie children: {[z.pid for z in zombies]}"
            if i in (2, n):  # after one session of each mode: imports and pools are warm
                counts[i] = (_fd_count(), threading.active_count())
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
    elapsed = time.monotonic() - t0
    record_property("soak_s", f"{elapsed:.1f}")
    (fds2, threads2), (fds_n, threads_n) = counts[2], counts[n]
    grew = f"fds {fds2} -> {fds_n}, threads {threads2} -> {threads_n}"
    print(f"\n[long-running] soak of {n} sessions: {elapsed:.1f} s; {grew}")
    assert threads_n <= threads2, f"threads grew from {threads2} to {threads_n} over {n - 2} sessions"
    assert fds_n <= fds2 + 2, f"open fds grew from {fds2} to {fds_n} over {n - 2} sessions"
    assert h.session_dirs() == []


# -- opt-in signal handlers -------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_installed_handlers_tear_down_in_process_then_the_signal_ends_the_owner(crash, sig):
    # no watchdog: only the owner itself can have cleaned up
    owner = crash.spawn(watchdog=False, extra=["--signal-handlers"])
    (session,) = owner.sessions
    snap = crash.snapshot(session)
    assert len(crash.running(snap)) >= 5

    owner.kill(sig)
    assert owner.wait(30) == -sig, f"the owner should still end by the signal; stderr:\n{owner.stderr()}"

    # teardown finished before the process ended: nothing to wait for
    assert crash.gone({session["root"]: snap}), crash.leftovers({session["root"]: snap})
    assert f"session {session['sid']} cleaned" in owner.stderr(), owner.stderr()


def test_installed_handlers_call_the_applications_previous_handler_after_teardown(crash):
    owner = crash.spawn(watchdog=False, extra=["--app-handler", "--signal-handlers"])
    (session,) = owner.sessions
    snap = crash.snapshot(session)

    owner.kill(signal.SIGTERM)
    seen = owner.read(30)
    assert seen == {"app_handler": signal.SIGTERM, "closed": [True], "ok": [True], "roots_exist": [False]}
    assert owner.wait(30) == 7, "the application's handler decides how the owner ends"
    assert crash.gone({session["root"]: snap}), crash.leftovers({session["root"]: snap})


def test_installed_handlers_tear_down_and_leave_an_ignored_signal_ignored(crash):
    """An application started under nohup ignores SIGHUP: the handler tears its
    sessions down, and the process runs on, as it chose."""
    owner = crash.spawn(watchdog=False, extra=["--ignore-sighup", "--signal-handlers"])
    (session,) = owner.sessions
    snap = crash.snapshot(session)

    owner.kill(signal.SIGHUP)
    assert h.wait_until(lambda: crash.gone({session["root"]: snap}), timeout=30), crash.leftovers(
        {session["root"]: snap}
    )
    assert owner.cmd("info")["sessions"], "the owner no longer answers after an ignored SIGHUP"
    owner.send("exit")
    assert owner.wait(30) == 0
