"""LaunchError keeps chromedriver's reason, not just its first line."""

import pytest
from selenium.common.exceptions import SessionNotCreatedException

from embassy_cleanup import ChromeUltraAggressiveCleanup, LaunchError
from tests import _helpers as h

CHROMEDRIVER_SAYS = (
    "session not created\n"
    "from unknown error: unable to discover open pages; For documentation on this error, please visit: "
    "https://www.selenium.dev/documentation/webdriver/troubleshooting/errors#sessionnotcreatedexception"
)


@pytest.mark.skipif(not h.CHROMEDRIVER, reason="chromedriver is not installed")
def test_launch_error_should_carry_chromedrivers_reason_without_its_doc_link(monkeypatch):
    def refuse(*args, **kwargs):
        raise SessionNotCreatedException(CHROMEDRIVER_SAYS)

    monkeypatch.setattr("selenium.webdriver.Chrome", refuse)
    cleanup = ChromeUltraAggressiveCleanup(temp_root=h.SESSIONS_ROOT, watchdog=False)

    with pytest.raises(LaunchError) as info:
        cleanup.start()

    msg = str(info.value)
    expected = "Chrome did not start: session not created; from unknown error: unable to discover open pages"
    assert expected in msg
    assert "For documentation" not in msg
    assert info.value.report is not None and info.value.report.ok
