import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, Stage
from tests import _helpers as h

pytestmark = pytest.mark.chrome


def test_session_should_leave_nothing_and_spare_bystanders(session_kwargs, bystander):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>ok</title>")
        pids = dict(cleanup.pids)
        root = cleanup.root
        ports = cleanup.ports
        assert len(pids) >= 5
        assert driver.title == "ok"
    report = cleanup.report
    assert report.ok, str(report)
    assert [s.stage for s in report.stages] == list(Stage)
    h.assert_gone(pids, [root], ports)
