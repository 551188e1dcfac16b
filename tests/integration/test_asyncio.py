"""``async with`` (issue 16): start and teardown run off the event loop, and a
cancelled task still tears its session down."""

from __future__ import annotations

import asyncio

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests.faults import _fault_helpers as fh

pytestmark = pytest.mark.chrome


async def _ticker(ticks: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        ticks.append(loop.time())
        await asyncio.sleep(0.01)


def test_async_with_starts_and_tears_down_while_the_loop_keeps_ticking(session_kwargs):
    async def main() -> tuple[int, int, ChromeUltraAggressiveCleanup, fh.Snapshot]:
        ticks: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(ticks, stop))
        await asyncio.sleep(0)
        cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
        async with cleanup as driver:
            during_start = len(ticks)
            snap = fh.snapshot(cleanup)
            title = await asyncio.to_thread(
                lambda: (driver.get("data:text/html,<title>t</title>"), driver.title)
            )
            assert title[1] == "t"
            before_teardown = len(ticks)
        during_teardown = len(ticks) - before_teardown
        stop.set()
        await ticker
        return during_start, during_teardown, cleanup, snap

    during_start, during_teardown, cleanup, snap = asyncio.run(main())
    assert during_start > 1, "the event loop stood still while the browser started"
    assert during_teardown > 1, "the event loop stood still during the teardown"
    assert cleanup.report is not None and cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)


@pytest.mark.parametrize("when", ["in the block", "while starting"])
def test_a_cancelled_task_still_tears_its_session_down(session_kwargs, when):
    holder: dict[str, ChromeUltraAggressiveCleanup] = {}
    inside = asyncio.Event() if when == "in the block" else None

    async def job() -> None:
        cleanup = holder["c"] = ChromeUltraAggressiveCleanup(**session_kwargs)
        async with cleanup:
            assert inside is not None
            inside.set()
            await asyncio.sleep(600)

    async def main() -> None:
        task = asyncio.create_task(job())
        if inside is not None:
            await inside.wait()
        else:
            await asyncio.sleep(0.05)  # the start is under way in its thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    cleanup = holder["c"]
    assert cleanup.report is not None, "the cancelled task left its session open"
    assert cleanup.report.ok, str(cleanup.report)


def test_async_with_pool_session_checks_out_and_returns_off_the_loop(session_kwargs):
    from embassy_cleanup import ChromePool

    async def main() -> tuple[int, str]:
        ticks: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(ticks, stop))
        with ChromePool(max_size=1, idle_timeout=None, **session_kwargs) as pool:
            async with pool.session() as driver:
                title = await asyncio.to_thread(
                    lambda: (driver.get("data:text/html,<title>p</title>"), driver.title)[1]
                )
            during = len(ticks)
            assert pool.stats().idle == 1, "the browser went back to the pool"
        stop.set()
        await ticker
        return during, title

    during, title = asyncio.run(main())
    assert title == "p"
    assert during > 1, "the event loop stood still during the checkout"
