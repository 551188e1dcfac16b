"""The demo bot job: a built-in page on 127.0.0.1, driven inside the context
manager, then the cleanup report."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Embassy appointment (demo)</title></head>
<body>
<h1>Book an appointment</h1>
<form id="booking" onsubmit="event.preventDefault();
  document.getElementById('result').textContent =
    'Booked: ' + document.getElementById('name').value + ' on ' +
    document.getElementById('date').value;">
  <label>Name <input id="name" name="name"></label>
  <label>Date <input id="date" name="date" value="2026-12-01"></label>
  <button id="submit" type="submit">Book</button>
</form>
<p id="result"></p>
</body></html>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_page() -> Iterator[str]:
    """Serve the demo page on 127.0.0.1 (a free port) for the block's duration."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="embassy-demo-page", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def bot_job(driver: Any, url: str, name: str = "Ada Lovelace") -> dict[str, str]:
    """Open the page, read the title, fill the form, click, read the result."""
    driver.get(url)
    title = driver.title
    field = driver.find_element(By.ID, "name")
    field.clear()
    field.send_keys(name)
    driver.find_element(By.ID, "submit").click()
    result = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "result").text or None)
    return {"title": title, "result": result}
