"""ChromePool (issue 6), with real Chrome.

Every test ends with the leak guard (tests/conftest.py): no process marked
with this run's sessions dir and no session dir may remain.  Browsers are
identified through the pool's own sessions (their tracker), never by name.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings

import psutil
import pytest
from selenium.webdriver import ChromeOptions

from embassy_cleanup import (
    ChromePool,
    ChromeUltraAggressiveCleanup,
    ConfigError,
    LeaseExpiredError,
    PoolClosedError,
    PoolFullError,
    PoolTimeoutError,
    _pool,
)
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def page(text: str) -> str:
    return f"data:text/html,<title>{text}</title><p>{text}</p>"


def session_of(pool: ChromePool, driver) -> ChromeUltraAggressiveCleanup:
    """The session behind ``driver``, checked out of ``pool``."""
    session = pool.session_of(driver)
    assert session is not None, "driver is not checked out of the pool"
    return session


def browser_of(session: ChromeUltraAggressiveCleanup) -> psutil.Process:
    """The browser's main process: chromedriver's child, found through the
    session's own view of its processes."""
    view = session.view()
    procs = {p.pid for p in view.discover()}
    leader = view.leader
    assert leader is not None, "the session has no chromedriver"
    for child in psutil.Process(leader.pid).children():
        if child.pid in procs:
            return child
    raise AssertionError(f"no browser under chromedriver {leader.pid}: {procs}")


def snapshot(session: ChromeUltraAggressiveCleanup) -> list[psutil.Process]:
    return [p for p in h.processes_under(session.root)]


def all_gone(procs: list[psutil.Process], root: str | None) -> bool:
    running = [p for p in procs if h._running(p)]
    return not running and not (root and os.path.lexists(root))


@pytest.fixture
def pool_kwargs(session_kwargs):
    # A generous check_timeout: on a loaded machine a healthy browser's reset
    # can take seconds, and a spurious "unhealthy" would change what the tests
    # count.  Hung browsers are still caught at once by their process state.
    return dict(session_kwargs, idle_timeout=None, check_timeout=60)


# -- reuse ---------------------------------------------------------------------------------------
def test_a_returned_browser_is_reused_for_the_next_job_with_its_state_reset(pool_kwargs):
    with ChromePool(max_size=2, **pool_kwargs) as pool:
        with pool.session() as driver:
            driver.get(page("one"))
            driver.execute_script("window.open('about:blank')")
            first = session_of(pool, driver)
        with pool.session() as again:
            assert session_of(pool, again) is first
            assert again.title == ""  # reset to about:blank
            assert len(again.window_handles) == 1
            again.get(page("two"))
            assert again.title == "two"
        stats = pool.stats()
        assert (stats.created, stats.reused, stats.in_use, stats.idle) == (1, 1, 0, 1)
        root = first.root
    assert pool.closed and first.report is not None and first.report.ok, first.report
    assert not os.path.lexists(root)


def test_a_driver_used_after_it_was_returned_raises_lease_expired(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as driver:
            driver.get(page("kept"))
        with pytest.raises(LeaseExpiredError, match="returned to the pool"):
            driver.title  # noqa: B018
        with pool.session() as again:  # the same browser, leased again
            again.get(page("fine"))
            assert again.title == "fine"
            assert again is not driver
            # The first holder's driver still refuses: it cannot drive this job's browser.
            with pytest.raises(LeaseExpiredError, match="returned to the pool"):
                driver.get(page("hijack"))
            assert again.title == "fine"


def test_an_element_kept_after_the_job_cannot_touch_the_next_jobs_page(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as driver:
            driver.get("data:text/html,<title>first</title><button id=b>b</button>")
            kept = driver.find_element("id", "b")
            kept.click()  # fine while leased
            switched = driver.switch_to  # helpers built around the driver go through the lease too
        with pool.session() as again:
            again.get("data:text/html,<title>second</title><button id=b>b</button>")
            with pytest.raises(LeaseExpiredError):
                kept.click()
            with pytest.raises(LeaseExpiredError):
                switched.window(again.current_window_handle)
            assert again.title == "second"


# -- idle reaping --------------------------------------------------------------------------------
def test_a_browser_idle_past_idle_timeout_is_reaped_by_the_background_thread(session_kwargs):
    with ChromePool(max_size=1, idle_timeout=1.0, check_timeout=60, **session_kwargs) as pool:
        with pool.session() as driver:
            session = session_of(pool, driver)
            procs = snapshot(session)
            root = session.root
        returned = time.monotonic()
        assert pool.stats().idle == 1
        assert h.wait_until(lambda: pool.stats().reaped_idle == 1, timeout=20)
        reaped_after = time.monotonic() - returned
        assert reaped_after >= 1.0, f"reaped {reaped_after:.2f} s after return, before idle_timeout"
        assert h.wait_until(lambda: session.report is not None, timeout=20)  # the reaper's teardown ended
        assert session.report.ok, session.report
        assert all_gone(procs, root)
        s = pool.stats()
        assert (s.idle, s.in_use, s.created) == (0, 0, 1)
        with pool.session() as fresh:  # the pool starts another when needed
            assert session_of(pool, fresh) is not session


#: The idle timeout of the reaper test, and how long it holds a browser past it.
SHORT_IDLE_S = 0.5
HOLD_S = 4 * SHORT_IDLE_S


def test_the_reaper_does_not_take_a_browser_that_was_just_checked_out(pool_kwargs):
    # The reaper wakes SHORT_IDLE_S after a browser went idle; by then it is
    # checked out again, and stays out well past its idle timeout.
    with ChromePool(max_size=1, **dict(pool_kwargs, idle_timeout=SHORT_IDLE_S)) as pool:
        reaper = pool.reaper_thread()
        assert reaper is not None and reaper.is_alive()
        with pool.session() as driver:
            first = session_of(pool, driver)
        with pool.session() as driver:  # checked out again at once: the reaper is still asleep
            assert session_of(pool, driver) is first
            assert not h.wait_until(lambda: pool.stats().reaped_idle > 0, timeout=HOLD_S)
            driver.get(page("still mine"))
            assert driver.title == "still mine"
            assert first.report is None
        # idle again: now it is the reaper's, once its idle timeout has passed
        assert h.wait_until(lambda: pool.stats().reaped_idle == 1, timeout=20)
        assert h.wait_until(lambda: first.report is not None, timeout=20)
        assert first.report.ok, first.report


# -- capacity ------------------------------------------------------------------------------------
def test_on_full_evict_retires_the_least_recently_used_idle_browser(pool_kwargs):
    with ChromePool(max_size=2, on_full="evict", **pool_kwargs) as pool:
        with pool.session(extra_args=["--lang=en-US"]) as a:
            old = session_of(pool, a)
        with pool.session(extra_args=["--lang=de-DE"]) as b:
            recent = session_of(pool, b)
        old_procs, old_root = snapshot(old), old.root
        with pool.session(extra_args=["--lang=fr-FR"]) as c:
            assert session_of(pool, c) not in (old, recent)
            c.get(page("third"))
            assert c.title == "third"
        assert pool.stats().evicted == 1
        assert old.report is not None and old.report.ok
        assert all_gone(old_procs, old_root)
        assert recent.report is None, "the more recently used browser must stay"
        with pool.session(extra_args=["--lang=de-DE"]) as b2:
            assert session_of(pool, b2) is recent


def test_on_full_reject_raises_a_clear_error_at_once(pool_kwargs):
    with ChromePool(max_size=1, on_full="reject", **pool_kwargs) as pool:
        with pool.session():
            wanted = r"max_size=1: 1 in use, 0 idle, 0 starting, 0 retiring \(on_full='reject'\)"
            with pytest.raises(PoolFullError, match=wanted):
                with pool.session():
                    pass


def test_on_full_wait_times_out_with_a_clear_error_and_gets_a_browser_once_one_is_free(pool_kwargs):
    with ChromePool(max_size=1, on_full="wait", **pool_kwargs) as pool:
        released = threading.Event()
        got: list[str] = []

        def second_job():
            released.wait(30)
            with pool.session(timeout=30) as d:  # waits for the first job's browser
                d.get(page("second"))
                got.append(d.title)

        with pool.session() as driver:
            with pytest.raises(PoolTimeoutError, match="no browser became free within 0.3 s"):
                with pool.session(timeout=0.3):
                    pass
            worker = threading.Thread(target=second_job)
            worker.start()
            released.set()
            assert h.wait_until(lambda: pool.stats().waiting == 1, timeout=10)
            driver.get(page("first"))
        worker.join(60)
        assert got == ["second"]
        assert pool.stats().created == 1


# -- recycling -----------------------------------------------------------------------------------
def test_after_max_uses_jobs_the_browser_is_replaced(pool_kwargs):
    with ChromePool(max_size=1, max_uses=2, **pool_kwargs) as pool:
        sessions = []
        for i in range(3):
            with pool.session() as d:
                d.get(page(f"job{i}"))
                sessions.append(session_of(pool, d))
                procs = snapshot(sessions[-1])
        assert sessions[0] is sessions[1] is not sessions[2]
        assert sessions[0].report is not None and sessions[0].report.ok
        assert pool.stats().recycled["max_uses"] == 1
        assert pool.stats().created == 2
    assert all_gone(procs, None)


def test_a_browser_over_max_memory_mb_is_recycled_after_its_job(pool_kwargs):
    with ChromePool(max_size=1, max_memory_mb=1, **pool_kwargs) as pool:
        with pool.session() as d:
            d.get(page("heavy"))
            session = session_of(pool, d)
            assert session.memory_bytes() > 2**20
        assert pool.stats().recycled["memory"] == 1
        assert session.report is not None and session.report.ok
        with pool.session() as d2:
            assert session_of(pool, d2) is not session


def test_a_crashed_browser_is_replaced_transparently(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as d:
            crashed = session_of(pool, d)
            browser = browser_of(crashed)
        browser.kill()  # psutil checks the identity first
        assert h.wait_until(lambda: not h._running(browser), timeout=10)
        with pool.session() as d:
            assert session_of(pool, d) is not crashed
            d.get(page("after crash"))
            assert d.title == "after crash"
        s = pool.stats()
        assert (s.recycled["unhealthy"], s.created, s.reused) == (1, 2, 0)
        assert crashed.report is not None and crashed.report.ok, crashed.report


def test_a_frozen_browser_is_replaced_without_waiting_out_a_webdriver_timeout(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as d:
            frozen = session_of(pool, d)
            browser = browser_of(frozen)
        browser.suspend()
        try:
            with pool.session() as d:
                assert session_of(pool, d) is not frozen
                d.get(page("thawed"))
                assert d.title == "thawed"
        finally:
            if h._running(browser):
                browser.resume()
        assert pool.stats().recycled["unhealthy"] == 1
        assert frozen.report is not None and frozen.report.ok, frozen.report


def test_a_job_that_closes_the_last_window_gets_its_browser_retired(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as d:
            gone = session_of(pool, d)
            d.close()
        assert pool.stats().recycled["unhealthy"] == 1
        assert gone.report is not None and gone.report.ok
        with pool.session() as d:
            d.get(page("new window"))
            assert d.title == "new window"


# -- threads and closing ---------------------------------------------------------------------------
def test_eight_threads_hammering_a_pool_of_three(pool_kwargs):
    jobs_per_thread = 3
    results: list[str] = []
    errors: list[BaseException] = []
    peak = [0]
    with ChromePool(max_size=3, on_full="wait", wait_timeout=120, max_uses=4, **pool_kwargs) as pool:

        def worker(n: int) -> None:
            try:
                for j in range(jobs_per_thread):
                    with pool.session() as d:
                        peak[0] = max(peak[0], pool.stats().in_use)
                        d.get(page(f"t{n}j{j}"))
                        results.append(d.title)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        stats = pool.stats()
        sessions = set(pool.idle_sessions())
    assert not errors, errors
    assert sorted(results) == sorted(f"t{n}j{j}" for n in range(8) for j in range(jobs_per_thread))
    assert peak[0] <= 3
    assert stats.created <= 3 + stats.recycled["max_uses"] + stats.recycled["unhealthy"]
    assert stats.created + stats.reused == 8 * jobs_per_thread
    assert stats.errors == 0
    assert all(s.report is not None and s.report.ok for s in sessions)


def test_closing_a_pool_with_a_browser_in_use_tears_it_down_and_its_holder_gets_a_clear_error(pool_kwargs):
    pool = ChromePool(max_size=2, **pool_kwargs)
    holding = threading.Event()
    closed = threading.Event()
    seen: list[BaseException] = []

    def holder() -> None:
        with pool.session() as d:
            d.get(page("held"))
            holding.set()
            closed.wait(60)
            try:
                d.title  # noqa: B018
            except BaseException as err:
                seen.append(err)

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(60)
    with pool.session():
        pass  # a second browser, idle at close
    (busy,) = pool.sessions_in_use()
    reports = pool.close()
    closed.set()
    t.join(60)
    assert len(reports) == 2 and all(r.ok for r in reports), reports
    assert busy.report is not None
    assert len(seen) == 1 and isinstance(seen[0], PoolClosedError), seen
    assert "closed while this browser was checked out" in str(seen[0])
    assert pool.close() == reports  # idempotent
    with pytest.raises(PoolClosedError, match="the pool is closed"):
        with pool.session():
            pass


def test_a_browser_that_finishes_starting_after_close_is_torn_down_not_leaked(pool_kwargs, monkeypatch):
    pool = ChromePool(max_size=1, **pool_kwargs)
    made: list[ChromeUltraAggressiveCleanup] = []
    started = threading.Event()

    def slow_new_session(**kwargs):
        session = ChromeUltraAggressiveCleanup(**kwargs)
        made.append(session)
        real_start = session.start

        def start():
            driver = real_start()
            started.set()
            h.wait_until(lambda: pool.closed, timeout=30)  # close() begins while we "start"
            return driver

        session.start = start
        return session

    monkeypatch.setattr(_pool, "ChromeUltraAggressiveCleanup", slow_new_session)  # what the pool starts
    errors: list[BaseException] = []

    def checkout() -> None:
        try:
            with pool.session():
                pass
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=checkout)
    t.start()
    assert started.wait(60)
    pool.close()  # waits for the starter to tear its browser down
    t.join(60)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosedError), errors
    assert "closed while a browser was starting" in str(errors[0])
    (session,) = made
    assert session.report is not None and session.report.ok, session.report
    assert pool.stats().starting == 0


def test_a_dropped_pool_is_closed_by_its_finalizer_and_its_reaper_thread_ends(session_kwargs):
    pool = ChromePool(max_size=1, idle_timeout=60, check_timeout=60, **session_kwargs)
    with pool.session() as d:
        session = session_of(pool, d)
    reaper = pool.reaper_thread()
    assert reaper is not None and reaper.is_alive()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool, d
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "ChromePool" in str(w.message) for w in caught)
    assert session.report is not None and session.report.ok
    reaper.join(10)
    assert not reaper.is_alive()


def test_a_browser_that_fails_to_start_counts_as_an_error_and_frees_its_slot(pool_kwargs, tmp_path):
    missing = tmp_path / "no-such-chrome"
    with ChromePool(max_size=1, on_full="reject", **pool_kwargs) as pool:
        with pytest.raises(Exception, match="no-such-chrome"):
            with pool.session(binary=str(missing)):
                pass
        assert pool.stats().errors == 1
        with pool.session() as d:  # the slot was given back
            d.get(page("ok"))
            assert d.title == "ok"


def test_page_load_strategy_and_other_options_reach_the_pooled_browsers(pool_kwargs):
    options = ChromeOptions()
    options.page_load_strategy = "eager"
    with ChromePool(max_size=1, options=options, **pool_kwargs) as pool:
        with pool.session() as d:
            assert d.capabilities["pageLoadStrategy"] == "eager"


# -- configuration (no Chrome started) -------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on_full": "drop"}, ConfigError, "on_full must be one of 'wait', 'evict', 'reject', got 'drop'"),
        ({"max_size": 0}, ConfigError, "max_size must be a finite number >= 1, got 0"),
        ({"max_size": 1.5}, TypeError, "max_size must be an integer"),
        ({"idle_timeout": -1}, ConfigError, "idle_timeout must be a finite number"),
        ({"max_uses": True}, TypeError, "max_uses must be an integer or None"),
        ({"max_memory_mb": float("nan")}, ConfigError, "max_memory_mb must be a finite number"),
        ({"preset": "nope"}, ConfigError, "unknown preset 'nope'"),
        ({"max_sise": 2}, TypeError, "unexpected option 'max_sise'"),
    ],
)
def test_bad_pool_options_get_a_clear_error_and_start_nothing(kwargs, error, match):
    with pytest.raises(error, match=match):
        ChromePool(**kwargs)


def test_bad_per_job_options_get_a_clear_error_before_anything_starts(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pytest.raises(ConfigError, match="unknown preset"):
            with pool.session(preset="nope"):
                pass
        with pytest.raises(TypeError, match="unexpected option 'timeoutt'"):
            with pool.session(timeoutt=3):
                pass
        assert pool.stats().created == 0


def test_a_forked_child_cannot_use_its_parents_pool(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session():
            pass
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                with pool.session():
                    pass
            except PoolClosedError as err:
                code = 0 if "a forked child must create its own pool" in str(err) else 2
            finally:
                pool.close()  # a no-op in the child: the browsers are the parent's
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with pool.session() as d:  # the parent's browser survived the child
            d.get(page("parent"))
            assert d.title == "parent"


def test_a_job_that_quits_its_driver_gets_its_browser_retired_and_the_next_job_a_new_one(pool_kwargs):
    with ChromePool(max_size=1, **pool_kwargs) as pool:
        with pool.session() as d:
            quitter = session_of(pool, d)
            procs = snapshot(quitter)
            d.quit()
        assert pool.stats().recycled["unhealthy"] == 1
        assert quitter.report is not None and quitter.report.ok, quitter.report
        assert all_gone(procs, None)
        with pool.session() as d:
            d.get(page("after quit"))
            assert d.title == "after quit"


def test_a_check_that_crashes_after_a_job_retires_the_browser_instead_of_keeping_it_busy(
    pool_kwargs, monkeypatch
):
    # The after-job check reads the browser's memory (max_memory_mb): make that crash.
    with ChromePool(max_size=1, on_full="reject", max_memory_mb=1e6, **pool_kwargs) as pool:

        def broken(self):
            raise OSError("simulated: /proc unreadable")

        monkeypatch.setattr(ChromeUltraAggressiveCleanup, "memory_bytes", broken)
        with pool.session() as d:
            session = session_of(pool, d)
        assert session.report is not None and session.report.ok
        s = pool.stats()
        assert (s.in_use, s.idle, s.recycled["unhealthy"]) == (0, 0, 1)
        monkeypatch.undo()
        with pool.session() as d:  # the slot is free again (on_full="reject" would raise otherwise)
            d.get(page("slot free"))
            assert d.title == "slot free"


#: Frozen-browser teardowns in the thread-count test (bench/frozen_threads.py runs 100).
FROZEN_ROUNDS = 4


def test_frozen_browser_teardowns_leave_no_thread_behind(pool_kwargs):
    """Each frozen browser costs a hung WebDriver call (the pool's check) until
    the browser is killed; after the teardown those threads end, so a
    long-running pool does not gain a thread per frozen browser (issue 13, 7g)."""
    baseline = {t.ident for t in threading.enumerate()}
    with ChromePool(max_size=1, **dict(pool_kwargs, check_timeout=1)) as pool:
        for _ in range(FROZEN_ROUNDS):
            with pool.session() as d:
                browser = browser_of(session_of(pool, d))
            browser.suspend()
            with pool.session() as d:  # the frozen one is retired, a new one handed out
                d.get(page("next"))
        assert pool.stats().recycled["unhealthy"] == FROZEN_ROUNDS

    def ours_left() -> list[str]:  # the watchdog's monitor is one per owner, not per browser
        return [
            t.name
            for t in threading.enumerate()
            if t.ident not in baseline and t.name.startswith("embassy") and "watchdog-monitor" not in t.name
        ]

    assert h.wait_until(lambda: not ours_left(), timeout=10), ours_left()
