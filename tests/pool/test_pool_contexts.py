"""ChromePool(isolation="context") (issue 15), with real Chrome and a local
http.server on 127.0.0.1 that the test starts.

Jobs of one browser run in separate WebDriver BiDi user contexts; these tests
check what one job can see of another's, what a crash or a dead browser does
to the others, and that a returned context is removed and verified gone.
"""

from __future__ import annotations

import http.server
import os
import threading

import psutil
import pytest
from selenium.common.exceptions import WebDriverException

from embassy_cleanup import ChromePool, ConfigError, LeaseExpiredError
from embassy_cleanup._contexts import NOTE_CONTEXT_GONE, NOTE_CONTEXT_REMOVED
from embassy_cleanup._report import Stage
from tests import _helpers as h

pytestmark = pytest.mark.chrome

PAGE = b"""<!doctype html><title>site</title><p>site</p>"""
#: A page that loads a cacheable script (``/cached.js``, counted by the server).
CACHED_PAGE = b"""<!doctype html><title>cached</title><script src="/cached.js"></script>"""
SW = b"self.addEventListener('fetch', () => {});"
#: How many times the server was asked for each path.
HITS: dict[str, int] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        HITS[path] = HITS.get(path, 0) + 1
        ctype, body, extra = "text/html", PAGE, {}
        if path.startswith("/cached-page"):
            body = CACHED_PAGE
        elif path == "/cached.js":
            ctype, body = "text/javascript", b"window.cachedLoaded = true;"
        elif path == "/sw.js":
            ctype, body = "text/javascript", SW
        elif path == "/file.bin":
            ctype, body = "application/octet-stream", b"x" * 1000
            extra = {"Content-Disposition": "attachment; filename=file.bin"}
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def pool_kwargs(session_kwargs):
    return dict(session_kwargs, idle_timeout=None, check_timeout=60, max_size=1)


STATE = """
document.cookie = 'job=' + arguments[0] + '; max-age=3600';
localStorage.setItem('job', arguments[0]);
sessionStorage.setItem('job', arguments[0]);
"""
READ = "return [document.cookie, localStorage.getItem('job'), sessionStorage.getItem('job')]"


def test_two_jobs_on_one_browser_never_see_each_others_cookies_or_storage(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as a, pool.session() as b:
            assert pool.session_of(a) is pool.session_of(b) is not None  # one browser, two jobs
            a.get(f"{site}/a")
            a.execute_script(STATE, "a")
            b.get(f"{site}/b")
            assert b.execute_script(READ) == ["", None, None]
            b.execute_script(STATE, "b")
            assert a.execute_script(READ) == ["job=a", "a", "a"]
            assert a.window_handles != b.window_handles and len(a.window_handles) == 1
            with pytest.raises(WebDriverException, match="not in this job's browser context|no such window"):
                a.switch_to.window(b.window_handles[0])
        with pool.session() as c:  # a context is never reused
            c.get(f"{site}/c")
            assert c.execute_script(READ) == ["", None, None]
        assert pool.stats().created == 1


def test_a_returned_context_is_removed_verified_and_its_download_dir_gone(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as d:
            d.get(f"{site}/x")
            d.switch_to.new_window("tab")  # opened in the job's own context
            d.get(f"{site}/y")
            assert len(d.window_handles) == 2
        (report,) = pool.context_reports()
        assert report.ok, report
        stages = {s.stage: s for s in report.stages}
        assert h.has_note(NOTE_CONTEXT_REMOVED, stages[Stage.QUIT].notes, tabs=2), report
        assert stages[Stage.PORTS].skipped_reason and stages[Stage.OS_KILL].skipped_reason
        assert h.has_note(NOTE_CONTEXT_GONE, stages[Stage.VERIFY].notes), report
        assert report.removed and not os.path.lexists(report.removed[0])
        with pytest.raises(LeaseExpiredError):
            _ = d.title


def test_a_job_that_crashes_its_renderer_leaves_the_other_job_of_the_browser_working(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as other:
            other.get(f"{site}/other")
            try:
                with pool.session() as crasher:
                    crasher.get(f"{site}/crash-first")
                    with pytest.raises(WebDriverException):
                        crasher.get("chrome://crash")
            except WebDriverException:
                pass
            other.get(f"{site}/still")
            assert other.title == "site"
            assert other.execute_script("return 1 + 1") == 2
        assert pool.stats().recycled["unhealthy"] == 0
        with pool.session() as after:
            after.get(f"{site}/after")
            assert after.title == "site"
        assert pool.stats().created == 1


def _browser_process(session) -> psutil.Process:
    view = session.view()
    leader = view.leader
    procs = {p.pid for p in view.discover()}
    for child in psutil.Process(leader.pid).children():
        if child.pid in procs:
            return child
    raise AssertionError("no browser process")


def test_when_the_browser_dies_every_job_on_it_gets_a_clear_error_and_the_pool_replaces_it(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as a, pool.session() as b:
            a.get(f"{site}/a")
            first = pool.session_of(a)
            browser = _browser_process(first)
            browser.kill()
            assert h.wait_until(lambda: not h._running(browser), timeout=20)
            for job in (a, b):
                with pytest.raises(LeaseExpiredError, match="died under this job"):
                    job.get(f"{site}/after-death")
        assert h.wait_until(lambda: first.report is not None, timeout=30)
        assert pool.stats().recycled["unhealthy"] == 1
        with pool.session() as c:
            assert pool.session_of(c) is not first
            c.get(f"{site}/new")
            assert c.title == "site"


def test_bad_isolation_options_get_a_clear_error(session_kwargs):
    with pytest.raises(ConfigError, match="isolation must be one of 'browser', 'context', got 'tab'"):
        ChromePool(isolation="tab", **session_kwargs)
    with pytest.raises(ConfigError, match="contexts_per_browser must be a finite number >= 1, got 0"):
        ChromePool(isolation="context", contexts_per_browser=0, **session_kwargs)


def test_cache_service_workers_and_downloads_stay_in_their_jobs_context(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as a, pool.session() as b:
            root = pool.session_of(a).root
            # cache: a's second page takes the script from a's cache; b's first page cannot
            HITS.clear()
            a.get(f"{site}/cached-page-1")
            a.get(f"{site}/cached-page-2")
            assert a.execute_script("return window.cachedLoaded") is True
            assert HITS["/cached.js"] == 1, HITS
            b.get(f"{site}/cached-page-1")
            assert HITS["/cached.js"] == 2, HITS
            # a service worker registered by a is not b's
            a.get(f"{site}/sw-page")
            a.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "navigator.serviceWorker.register('/sw.js').then(() => navigator.serviceWorker.ready)"
                ".then(() => done(true), e => done(String(e)));"
            )
            count = (
                "const done = arguments[0];"
                "navigator.serviceWorker.getRegistrations().then(r => done(r.length));"
            )
            assert a.execute_async_script(count) == 1
            b.get(f"{site}/sw-page")
            assert b.execute_async_script(count) == 0
            # a download lands in a's own download dir, not b's
            dirs = {d: os.path.join(root, "contexts", d) for d in os.listdir(os.path.join(root, "contexts"))}
            assert len(dirs) == 2
            a.get(f"{site}/file.bin")
            assert h.wait_until(
                lambda: any("file.bin" in os.listdir(p) for p in dirs.values()), timeout=20
            ), dirs
            holding = [p for p in dirs.values() if "file.bin" in os.listdir(p)]
            assert len(holding) == 1
        reports = pool.context_reports()
        assert len(reports) == 2 and all(r.ok for r in reports), reports
        assert holding[0] in [path for r in reports for path in r.removed]
        assert not os.path.lexists(holding[0])


def test_a_job_whose_page_hangs_leaves_the_other_job_of_the_browser_working(pool_kwargs, site):
    ended: list[str] = []

    def hang(driver):
        try:
            driver.execute_script("while (true) {}")  # chromedriver waits on the hung renderer
            ended.append("returned")  # chromedriver answers once the context is removed
        except Exception as err:  # or with an error, as the lease is over
            ended.append(type(err).__name__)

    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as other:
            other.get(f"{site}/other")
            with pool.session() as hung:
                hung.get(f"{site}/hang")
                stuck = threading.Thread(target=hang, args=(hung,), daemon=True)
                stuck.start()
                stuck.join(1.0)  # let the script start
                other.get(f"{site}/still")  # the hung renderer is not this job's
                assert other.title == "site"
                assert other.execute_script("return 1 + 1") == 2
                assert stuck.is_alive(), "precondition: the hung job's script still runs"
            stuck.join(60)
            assert ended and not stuck.is_alive(), "the hung call should end when its context is removed"
            other.get(f"{site}/after")
            assert other.title == "site"
        reports = pool.context_reports()
        assert len(reports) == 2 and all(r.ok for r in reports), reports
        assert pool.stats().recycled["unhealthy"] == 0


def test_a_browser_is_retired_after_max_uses_contexts_and_after_max_memory(pool_kwargs, site):
    with ChromePool(isolation="context", contexts_per_browser=2, max_uses=3, **pool_kwargs) as pool:
        sessions = []
        for i in range(4):
            with pool.session() as d:
                d.get(f"{site}/{i}")
                sessions.append(pool.session_of(d))
        assert sessions[0] is sessions[1] is sessions[2] is not sessions[3]
        assert sessions[0].report is not None and sessions[0].report.ok, sessions[0].report
        assert pool.stats().recycled["max_uses"] == 1
    with ChromePool(isolation="context", max_memory_mb=1, **pool_kwargs) as pool:
        with pool.session() as d:
            first = pool.session_of(d)
        assert first.report is not None and first.report.ok
        assert pool.stats().recycled["memory"] == 1


def test_four_threads_share_two_lanes_of_one_browser_and_every_job_starts_clean(pool_kwargs, site):
    seen: list[list] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(3):
                with pool.session(timeout=120) as d:
                    d.get(f"{site}/w{n}-{i}")
                    seen.append(d.execute_script(READ))
                    d.execute_script(STATE, f"w{n}-{i}")
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert seen == [["", None, None]] * 12
        stats = pool.stats()
        assert (stats.created, stats.errors) == (1, 0)
        reports = pool.context_reports()
        assert len(reports) == 12 and all(r.ok for r in reports)


def test_a_permission_a_job_grants_holds_in_its_context_only(pool_kwargs, site):
    query = (
        "const done = arguments[0];"
        "navigator.permissions.query({name: 'geolocation'}).then(r => done(r.state));"
    )
    with ChromePool(isolation="context", contexts_per_browser=2, **pool_kwargs) as pool:
        with pool.session() as a, pool.session() as b:
            a.get(f"{site}/a")
            b.get(f"{site}/b")  # the same origin as a's page
            assert a.execute_async_script(query) == b.execute_async_script(query) == "prompt"
            a.set_permissions("geolocation", "granted")
            assert a.execute_async_script(query) == "granted"
            assert b.execute_async_script(query) == "prompt"
        with pool.session() as c:
            c.get(f"{site}/c")
            assert c.execute_async_script(query) == "prompt"
