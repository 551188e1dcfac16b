"""``driver.quit()`` ends with chromedriver asked to exit (``/shutdown``).
Selenium then polls chromedriver's port once a second, so a chromedriver that
answers before it closes the port costs a whole second of sleep; ours waits
for the process itself (``OwnedService.send_remote_shutdown_command``).

The fake chromedriver below answers ``/shutdown``, keeps listening for
``LINGER`` seconds, then exits: the shape of the race.
"""

from __future__ import annotations

import sys

import pytest

from embassy_cleanup._clock import Budget
from embassy_cleanup._launcher import OwnedService

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake chromedriver is a POSIX script")

LINGER = 0.3

FAKE_CHROMEDRIVER = f"""#!{sys.executable}
import http.server, sys, threading, time
port = int(next(a for a in sys.argv if a.startswith("--port=")).split("=", 1)[1])
done = threading.Event()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{{}}")
        if self.path == "/shutdown":
            done.set()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
done.wait(60)
time.sleep({LINGER})  # still listening: Selenium's first poll finds the port open
"""


def test_shutdown_waits_for_chromedrivers_process_instead_of_polling_once_a_second(tmp_path, monkeypatch):
    fake = tmp_path / "chromedriver"
    fake.write_text(FAKE_CHROMEDRIVER)
    fake.chmod(0o755)
    slept: list[float] = []
    monkeypatch.setattr("selenium.webdriver.common.service.sleep", slept.append)
    service = OwnedService(executable_path=str(fake))
    try:
        assert service.start_within(Budget(30)) is None, "the fake chromedriver did not listen"

        service.send_remote_shutdown_command()

        assert service.process.poll() == 0, "returned before chromedriver exited"
        assert slept == [], "Selenium's one-second polling ran"
    finally:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(10)
