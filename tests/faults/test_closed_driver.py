"""After the end (issue 14): a driver used after its session was torn down
raises SessionClosedError (also a WebDriverException) naming the session; a
command pending in another thread when the teardown starts is cut off with the
same error, and does not make close() wait for quit()'s share of the budget."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from embassy_cleanup import ChromeUltraAggressiveCleanup, SessionClosedError, Stage
from embassy_cleanup._teardown import SKIP_BUSY
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

pytestmark = pytest.mark.chrome


def test_the_driver_its_elements_and_switch_to_refuse_commands_after_the_block(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(**session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<p id=x>hi</p>")
        element = driver.find_element(By.ID, "x")
    for call in (lambda: driver.title, lambda: element.text, lambda: driver.switch_to.new_window("tab")):
        with pytest.raises(SessionClosedError) as caught:
            call()
        assert isinstance(caught.value, WebDriverException)
        assert caught.value.session_id == cleanup.session_id
        assert caught.value.closed_at is not None
    err = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(err, SessionClosedError) and err.session_id == cleanup.session_id


@pytest.mark.parametrize(
    "pending",
    [
        "execute_async_script",  # a script whose callback is never called
        "implicit_wait",  # find_element waiting for an element that never comes
        "navigation",  # driver.get of a page whose server never answers
    ],
)
def test_close_with_a_command_pending_in_another_thread_cuts_it_off_and_skips_quit(session_kwargs, pending):
    cleanup = ChromeUltraAggressiveCleanup(**dict(session_kwargs, cleanup_timeout=10))
    driver = cleanup.start()
    driver.get("data:text/html,<p>page</p>")
    snap = fh.snapshot(cleanup)
    errors: list[BaseException] = []
    started = threading.Event()

    # The timeouts first, here: the worker then sends exactly one command.
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    if pending == "execute_async_script":
        driver.set_script_timeout(600)
    elif pending == "implicit_wait":
        driver.implicitly_wait(600)
    else:
        driver.set_page_load_timeout(600)

    def job() -> None:
        started.set()
        try:
            if pending == "execute_async_script":
                driver.execute_async_script("/* never calls back */")
            elif pending == "implicit_wait":
                driver.find_element(By.ID, "never")
            else:
                driver.get(f"http://127.0.0.1:{silent.getsockname()[1]}/never")
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    started.wait(5)
    assert h.wait_until(lambda: _pending(cleanup), timeout=10), "the command never went out"

    report = cleanup.close()
    silent.close()

    worker.join(10)
    assert not worker.is_alive(), "the pending command was not cut off"
    assert errors and isinstance(errors[0], SessionClosedError), errors
    quit_stage = report.stage(Stage.QUIT)
    assert quit_stage.skipped_reason == SKIP_BUSY.format(busy=1), str(report)
    assert report.ok, str(report)
    fh.assert_session_gone(snap)


def _pending(cleanup: ChromeUltraAggressiveCleanup) -> bool:
    return cleanup.pending_commands() > 0
