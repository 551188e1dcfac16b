"""A tmp cleaner (systemd-tmpfiles, tmpwatch) may delete a live session's dir,
and with it the owner lock. The session must still count as live: its
processes carry the owner's pid and create time in their environment."""

import os
import shutil

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup
from embassy_cleanup._clean import plan_clean
from embassy_cleanup._inventory import take_inventory
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def test_a_live_session_whose_dir_was_deleted_should_stay_live_and_out_of_the_clean_plan(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>live</title>")

        # The tmp cleaner. The live browser may write a file into a dir being
        # removed (ENOTEMPTY): like a real cleaner, ignore that and go again.
        def cleaned() -> bool:
            shutil.rmtree(cleanup.root, ignore_errors=True)
            return not os.path.lexists(cleanup.root)

        assert h.wait_until(cleaned)

        inv = take_inventory(h.SESSIONS_ROOT, memory=False)
        mine = [s for s in inv.sessions if s.session_id == cleanup.session_id]
        assert mine and mine[0].owner_alive, [s.to_dict() for s in inv.sessions]
        assert not [p for p in inv.by_class("orphan") if p.session_id == cleanup.session_id]
        assert not [a for a in plan_clean(inv) if a.target == cleanup.session_id]
        assert driver.title == "live"
    assert cleanup.report.ok, str(cleanup.report)
