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


# -- the start deadline (issue 14) ------------------------------------------------
def test_run_bounded_should_give_up_at_the_deadline_and_hand_a_late_result_to_on_late():
    import threading

    from embassy_cleanup._clock import Budget, Expired, run_bounded

    release, late = threading.Event(), []
    done = threading.Event()

    def slow():
        release.wait(10)
        return "made after all"

    def on_late(result):
        late.append(result)
        done.set()

    with pytest.raises(Expired):
        run_bounded(slow, Budget(0.05), "test-slow", on_late=on_late)
    release.set()
    assert done.wait(10) and late == ["made after all"]


def test_run_bounded_should_return_the_result_and_reraise_the_error_in_time():
    from embassy_cleanup._clock import Budget, run_bounded

    assert run_bounded(lambda: 42, Budget(10), "test-fast") == 42

    def fails():
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        run_bounded(fails, Budget(10), "test-fails")
