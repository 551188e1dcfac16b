"""options= is honoured (issue 14): every capability and Chrome option set on
the ChromeOptions a user passes reaches the session, checked by its effect
in real Chrome; the flags the session owns are refused."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.common.proxy import Proxy

from embassy_cleanup import ChromeUltraAggressiveCleanup, ConfigError

pytestmark = pytest.mark.chrome

PAGE = b"<!doctype html><title>local</title><body>page<script>console.log('hello from the page')</script>"


class _Pages(http.server.BaseHTTPRequestHandler):
    """Serves PAGE for any URL: as a web server, and as a forward proxy."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _browser_cmdline(cleanup: ChromeUltraAggressiveCleanup) -> list[str]:
    for pid, name in cleanup.pids.items():
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        if (
            name.startswith("chrom")
            and name != "chromedriver"
            and not any(a.startswith("--type=") for a in cmd)
        ):
            return cmd
    raise AssertionError(f"no browser process among {cleanup.pids}")


def test_capabilities_should_reach_the_session(session_kwargs, server):
    o = webdriver.ChromeOptions()
    o.accept_insecure_certs = True
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    o.unhandled_prompt_behavior = "accept"
    o.page_load_strategy = "eager"
    o.timeouts = {"script": 7000}
    with ChromeUltraAggressiveCleanup(options=o, **session_kwargs) as driver:
        caps = driver.capabilities
        assert caps["acceptInsecureCerts"] is True
        assert caps["unhandledPromptBehavior"] == "accept"
        assert caps["pageLoadStrategy"] == "eager"
        assert driver.timeouts.script == 7
        driver.get(f"http://{server}/console")
        assert driver.execute_script("return document.readyState") in ("interactive", "complete")
        messages = [e["message"] for e in driver.get_log("browser")]
        assert any("hello from the page" in m for m in messages), messages
        driver.execute_script("setTimeout(() => alert('prompt'), 0)")
        # "accept": the user prompt is accepted by the next command, which then runs
        assert driver.execute_async_script("setTimeout(arguments[0], 50, 'after')") == "after"


def test_proxy_should_reach_the_session(session_kwargs, server):
    o = webdriver.ChromeOptions()
    o.proxy = Proxy({"proxyType": "manual", "httpProxy": server})
    _Pages.seen.clear()
    with ChromeUltraAggressiveCleanup(options=o, **session_kwargs) as driver:
        driver.get("http://embassy-cleanup.invalid/through-the-proxy")
        assert driver.title == "local"
    assert "http://embassy-cleanup.invalid/through-the-proxy" in _Pages.seen


def test_prefs_mobile_emulation_and_experimental_options_should_reach_the_browser(session_kwargs):
    o = webdriver.ChromeOptions()
    o.add_experimental_option("prefs", {"webkit.webprefs.default_font_size": 30})
    o.add_experimental_option(
        "mobileEmulation",
        {"deviceMetrics": {"width": 360, "height": 640, "pixelRatio": 3.0}, "userAgent": "EmbassyMobile/1"},
    )
    o.add_experimental_option("excludeSwitches", ["enable-automation"])
    cleanup = ChromeUltraAggressiveCleanup(options=o, **session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<body>x</body>")
        size, agent, ratio = driver.execute_script(
            "return [getComputedStyle(document.body).fontSize, navigator.userAgent, devicePixelRatio]"
        )
        assert (size, agent, ratio) == ("30px", "EmbassyMobile/1", 3)
        assert "--enable-automation" not in _browser_cmdline(cleanup)


def _extension_zip(tmp_path) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "manifest.json",
            '{"manifest_version": 3, "name": "embassy-test", "version": "1.0", "content_scripts": '
            '[{"matches": ["<all_urls>"], "js": ["mark.js"], "run_at": "document_start"}]}',
        )
        z.writestr("mark.js", 'document.documentElement.dataset.embassyExt = "loaded";')
    path = tmp_path / "ext.crx"
    path.write_bytes(buf.getvalue())
    return str(path)


def test_extension_should_load_despite_the_presets_disable_extensions(session_kwargs, server, tmp_path):
    o = webdriver.ChromeOptions()
    o.add_extension(_extension_zip(tmp_path))
    cleanup = ChromeUltraAggressiveCleanup(options=o, preset="balanced", **session_kwargs)
    with cleanup as driver:
        driver.get(f"http://{server}/ext")
        assert driver.execute_script("return document.documentElement.dataset.embassyExt") == "loaded"
        assert "--disable-extensions" not in _browser_cmdline(cleanup)


@pytest.mark.parametrize(
    "arg",
    [
        "--user-data-dir=/tmp/elsewhere",
        "--remote-debugging-port=9222",
        "--remote-debugging-pipe",
        "https://example.com/",
    ],
)
def test_flag_the_session_owns_should_be_refused_in_options_and_extra_args(arg, session_kwargs):
    o = webdriver.ChromeOptions()
    o.add_argument(arg)
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(options=o, **session_kwargs)
    assert info.value.option == "options" and arg in repr(info.value.value)
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(extra_args=[arg], **session_kwargs)
    assert info.value.option == "extra_args"


def test_debugger_address_should_be_refused_pointing_at_adopt(session_kwargs):
    o = webdriver.ChromeOptions()
    o.debugger_address = "127.0.0.1:9222"
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(options=o, **session_kwargs)
    assert "adopt()" in str(info.value)
