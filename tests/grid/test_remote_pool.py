"""ChromePool on a Selenium Grid (issues 6 and 8): pooled remote sessions
are reused, reset, retired through the remote teardown, and leave the Grid
with no session."""

from __future__ import annotations

import pytest

from embassy_cleanup import ChromePool, LeaseExpiredError

pytestmark = [pytest.mark.chrome, pytest.mark.grid]


def page(text: str) -> str:
    return f"data:text/html,<title>{text}</title><p>{text}</p>"


def test_a_pool_of_remote_sessions_reuses_them_and_frees_every_slot_at_close(grid, remote_kwargs):
    with ChromePool(max_size=2, idle_timeout=None, max_uses=3, check_timeout=60, **remote_kwargs) as pool:
        seen = []
        for i in range(4):
            with pool.session() as driver:
                driver.get(page(f"job{i}"))
                assert driver.title == f"job{i}"
                seen.append(driver.session_id)
                assert set(grid.sessions()) >= {driver.session_id}
        # three jobs on the first remote session (max_uses=3), the fourth on a new one
        assert seen[0] == seen[1] == seen[2] != seen[3]
        s = pool.stats()
        assert (s.created, s.reused, s.recycled["max_uses"], s.errors) == (2, 2, 1, 0)
        assert seen[0] not in grid.sessions(), "the retired remote session must be deleted on the Grid"
        with pytest.raises(LeaseExpiredError):
            driver.title  # noqa: B018
    assert pool.closed
    assert not grid.sessions()
