"""ChromePool with jobs of different options at max_size (issue 15), real Chrome.

At ``max_size`` with an idle browser of another kind, every ``on_full`` mode
retires that browser to make room at once: a job never waits for the idle
reaper (these pools have none: ``idle_timeout=None``, so a stall would last
until the checkout's own timeout).
"""

from __future__ import annotations

import re

import psutil
import pytest

from embassy_cleanup import ChromePool, PoolFullError, PoolTimeoutError

pytestmark = pytest.mark.chrome

GERMAN = ["--lang=de-DE"]


def cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def page(text: str) -> str:
    return f"data:text/html,<title>{text}</title><p>{text}</p>"


@pytest.fixture
def pool_kwargs(session_kwargs):
    return dict(session_kwargs, idle_timeout=None, check_timeout=60)


@pytest.mark.parametrize("on_full", ["wait", "evict", "reject"])
def test_a_job_of_other_options_retires_the_idle_browser_instead_of_waiting_for_the_reaper(
    pool_kwargs, on_full
):
    with ChromePool(max_size=1, on_full=on_full, **pool_kwargs) as pool:
        with pool.session() as driver:
            default = pool.session_of(driver)
        assert default is not None and default.report is None
        # timeout=0: a checkout that had to wait for the reaper would fail at once
        with pool.session(timeout=0, extra_args=GERMAN) as driver:
            german = pool.session_of(driver)
            driver.get(page("de"))
            assert driver.title == "de"
            assert any("--lang=de-DE" in cmdline(p.pid) for p in german.view().discover())
        assert german is not default
        assert default.report is not None and default.report.ok, default.report
        stats = pool.stats()
        assert (stats.created, stats.evicted, stats.idle, stats.in_use) == (2, 1, 1, 0)
        with pool.session(timeout=0, extra_args=GERMAN) as driver:
            assert pool.session_of(driver) is german  # the same options reuse it


@pytest.mark.parametrize("on_full", ["wait", "reject"])
def test_when_every_browser_is_in_use_the_error_states_the_real_counts(pool_kwargs, on_full):
    with ChromePool(max_size=1, on_full=on_full, **pool_kwargs) as pool:
        with pool.session():
            error = PoolFullError if on_full == "reject" else PoolTimeoutError
            counts = "max_size=1: 1 in use, 0 idle, 0 starting, 0 retiring"
            with pytest.raises(error, match=re.escape(counts)) as info:
                with pool.session(timeout=0, extra_args=GERMAN):
                    pass
            assert info.value.max_size == 1
        assert pool.stats().evicted == 0
