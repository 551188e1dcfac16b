"""Remote sessions on a Selenium Grid 4: the client side (issue #8).

A session created with ``remote_url=`` runs its browser on a Grid node, so
nothing of it exists on this host: no chromedriver, no Chrome, no session
dir.  What this module adds to a plain ``webdriver.Remote``:

* **start**: the Grid's ``/status`` is asked first (short timeout), so an
  unreachable Grid is a :class:`LaunchError` naming the URL and the
  connection error, and nothing is created locally;
* **teardown** (same six stages, same report): ``quit`` runs
  ``driver.quit()`` within its share of ``cleanup_timeout`` in a thread; when
  it raised, hung or was skipped (``graceful=False``) the session is deleted
  through the Grid's own WebDriver endpoint, ``DELETE /session/{id}``.  The
  four local stages are reported as skipped (:data:`REMOTE_SKIP`).
  ``verify`` polls ``/status`` until no slot of any node lists the session;
* **owner death**: the session is registered with the owner's watchdog (its
  Grid URL and remote session id); when the owner dies the watchdog sends
  ``DELETE /session/{id}`` (:func:`reap_remote`), so the slot is free within
  about a second instead of after the Grid's ``--session-timeout``.

Only the standard library talks to the Grid here (``urllib``): teardown and
the watchdog must not depend on the WebDriver client's state.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from ._clock import Budget, Expired, run_bounded
from ._errors import GridError, LaunchError
from ._launcher import copy_user_options, webdriver_reason
from ._options import SessionOptions
from ._ownership import ProcessTracker
from ._presets import merge_flags, preset_flags
from ._report import Leftover, Stage
from ._teardown import QUIT_SHARE, Plan, StageRun, TeardownRun, TeardownTarget
from ._watchdog import Reaper
from ._webdriver import CommandGuard, first_line, quit_within, release_driver

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.remote.webdriver import WebDriver

log = logging.getLogger("embassy_cleanup")

#: Why the local stages do nothing for a remote session.
REMOTE_SKIP = "remote session: the browser runs on the Grid node"
#: How long ``/status`` may take at session start before the Grid counts as unreachable.
STATUS_TIMEOUT = 5.0
#: Most time one ``DELETE /session/{id}`` may take.
DELETE_TIMEOUT = 5.0
#: How often the watchdog tries ``DELETE`` for a dead owner's session.
WATCHDOG_DELETE_TRIES = 3
#: Capability naming our session id, so that ``/status`` shows whose a session is.
SESSION_CAPABILITY = "embassy_cleanup:session"
#: Notes of the quit stage (see ``_teardown`` for the local ones).
NOTE_NO_QUIT = "graceful=False: no driver.quit()"
NOTE_QUIT_RETURNED = "driver.quit() returned"
NOTE_DELETE = "DELETE /session/{rsid}: {outcome}"
ERROR_QUIT_HUNG = "driver.quit() did not return within {share:.2f} s; deleting the session"
DELETED = "deleted"
ALREADY_GONE = "already gone (404)"


# -- talking to the Grid --------------------------------------------------------
def _request(url: str, method: str, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=max(0.05, timeout)) as resp:  # noqa: S310 - user's Grid URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        body = err.read() if err.fp is not None else b""
        err.close()
        return err.code, body
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections
        reason = getattr(err, "reason", err)
        raise GridError(f"{method} {url}: {type(reason).__name__}: {reason}", url=url) from err


def grid_status(url: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """The ``value`` of the Grid's ``GET /status``; GridError when it cannot be had."""
    code, body = _request(f"{url}/status", "GET", timeout)
    try:
        value = json.loads(body)["value"]
    except (ValueError, KeyError, TypeError):
        raise GridError(
            f"GET {url}/status answered {code} without a WebDriver status body", url=url
        ) from None
    if code != 200 or not isinstance(value, dict):
        raise GridError(f"GET {url}/status answered {code}", url=url)
    return value


def listed_sessions(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Session id -> session entry, for every slot of every node in a ``/status`` value."""
    out: dict[str, dict[str, Any]] = {}
    for node in status.get("nodes") or ():
        for slot in node.get("slots") or ():
            session = slot.get("session")
            if isinstance(session, dict) and isinstance(session.get("sessionId"), str):
                out[session["sessionId"]] = session
    return out


def delete_session(url: str, remote_sid: str, timeout: float = DELETE_TIMEOUT) -> str:
    """``DELETE /session/{id}`` through the Grid; return what happened.

    A session the Grid no longer knows (404) counts as deleted: it is gone.
    Raises GridError when the Grid cannot be reached or answers otherwise.
    """
    code, body = _request(f"{url}/session/{urllib.parse.quote(remote_sid)}", "DELETE", timeout)
    if code == 200:
        return DELETED
    if code == 404:
        return ALREADY_GONE
    try:
        message = json.loads(body)["value"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    raise GridError(f"DELETE {url}/session/{remote_sid} answered {code}: {message}", url=url)


def check_reachable(url: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """The Grid's status, or LaunchError naming the URL and what went wrong."""
    try:
        status = grid_status(url, timeout)
    except GridError as err:
        raise LaunchError(
            f"Selenium Grid at {url!r} (from remote_url=) is not reachable: {err}; "
            "start the Grid or fix remote_url=",
            path=url,
        ) from err
    if not status.get("ready", False):
        log.warning("Selenium Grid at %s says it is not ready: %s", url, status.get("message"))
    return status


# -- the session ------------------------------------------------------------------
@dataclass
class RemoteTarget(TeardownTarget):
    """A teardown target whose browser runs on a Grid node."""

    remote_url: str = ""
    remote_session_id: str | None = None


def chrome_options(opts: SessionOptions, session_id: str) -> Any:
    """The ChromeOptions sent to the Grid: the preset's flags, no local paths.

    ``--no-sandbox``/``--disable-dev-shm-usage`` depend on the node, not on
    this host: pass them in ``extra_args`` when the node needs them.
    ``binary`` is a path on the node and is sent as given.
    """
    from selenium import webdriver

    # every capability and Chrome option of options= (issue #14), flags merged below
    options = copy_user_options(webdriver.ChromeOptions(), opts.options)
    start: list[str] = list(opts.options.arguments) if opts.options is not None else []
    auto = ["--headless=new"] if opts.headless else []
    for arg in merge_flags(start, preset_flags(opts.preset), auto, list(opts.extra_args)):
        options.add_argument(arg)
    binary = opts.binary or (opts.options.binary_location if opts.options is not None else None)
    if binary:
        options.binary_location = binary
    options.set_capability(SESSION_CAPABILITY, session_id)
    return options


class RemoteKind:
    """A session on a Selenium Grid (``_lifecycle.Kind``): nothing local but
    the WebDriver client.  Its plan is the bounded quit with the ``DELETE``
    fallback and the ``/status`` verification; the four local stages are
    skipped with :data:`REMOTE_SKIP`."""

    kind: ClassVar[str] = "remote"

    def __init__(self, session_id: str, opts: SessionOptions) -> None:
        self.session_id = session_id
        self.opts = opts
        self.target: RemoteTarget | None = None

    def plan(self) -> tuple[TeardownTarget, Plan] | None:
        return (self.target, REMOTE_PLAN) if self.target is not None else None

    def watchdog_record(self) -> dict[str, Any] | None:
        t = self.target
        if t is None or t.remote_session_id is None:
            return None
        return {"url": t.remote_url, "remote_sid": t.remote_session_id}

    def release(self) -> None:
        if self.target is not None:
            release_driver(self.target.driver)
            self.target.driver = None

    def forget_in_child(self) -> None:
        """Nothing of a remote session is held as a file or a lock."""

    def start(self, arm_finalizer: Callable[[], None]) -> WebDriver:
        """Create the remote session.  Sets ``target`` first, so that a failure
        after the Grid created the session still deletes it (the caller tears
        down on any exception)."""
        from selenium import webdriver

        url = self.opts.remote_url
        assert url is not None
        deadline = Budget(self.opts.start_timeout)  # bounds /status and the new session
        check_reachable(url, min(STATUS_TIMEOUT, max(0.05, deadline.remaining())))
        self.target = RemoteTarget(
            self.session_id,
            ProcessTracker(self.session_id, ""),  # nothing local to track
            None,
            graceful=self.opts.graceful,
            remote_url=url,
        )
        arm_finalizer()
        options = chrome_options(self.opts, self.session_id)
        try:
            driver = run_bounded(
                lambda: webdriver.Remote(command_executor=url, options=options),
                deadline,
                f"embassy-cleanup-start-{self.session_id}",
                on_late=_quit_late,  # a session the Grid made after we gave up is deleted at once
            )
        except Expired:
            raise LaunchError(
                f"Selenium Grid at {url!r} did not answer the new-session request within "
                f"{deadline.seconds:g} s (start_timeout={deadline.seconds:g}); check the Grid's free slots "
                "and its new-session queue",
                path=url,
                component="grid",
            ) from None
        except Exception as err:  # WebDriverException, urllib3 errors: all mean "no session"
            raise LaunchError(
                f"Selenium Grid at {url!r} did not create a session: {webdriver_reason(err)}; check the "
                "Grid's log, its free slots and the node's Chrome",
                path=url,
            ) from err
        self.target.driver = driver
        self.target.commands = CommandGuard(driver, self.session_id)
        self.target.remote_session_id = driver.session_id
        return driver


def _quit_late(driver: Any) -> None:
    """``on_late`` for a new session that arrived after ``start_timeout``."""
    driver.quit()


# -- owner death: the watchdog's reaper ----------------------------------------------
def parse_remote(body: Any) -> tuple[str, str]:
    """``(grid url, remote session id)`` of a remote session's watchdog record."""
    if not isinstance(body, dict):
        raise ValueError("a remote session's record must be an object")
    url, rsid = body.get("url"), body.get("remote_sid")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"bad Grid URL {url!r}")
    if not isinstance(rsid, str) or not 0 < len(rsid) <= 128:
        raise ValueError(f"bad remote session id {rsid!r}")
    return url, rsid


def reap_remote(sid: str, url: str, remote_sid: str, tries: int = WATCHDOG_DELETE_TRIES) -> str:
    """The watchdog's part: delete a dead owner's remote session; return the outcome."""
    last = ""
    for attempt in range(tries):
        try:
            return delete_session(url, remote_sid)
        except GridError as err:
            last = str(err)
            log.warning("session %s: %s (attempt %d of %d)", sid, err, attempt + 1, tries)
            time.sleep(0.2)
    return f"failed: {last}"


def _reap_parsed(sid: str, parsed: tuple[str, str], exclude: set[int]) -> str:
    return f"remote {parsed[1]}: {reap_remote(sid, *parsed)}"


REMOTE_REAPER = Reaper(parse=parse_remote, reap=_reap_parsed, remote=True)


# -- teardown -----------------------------------------------------------------------
def _stage_quit(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    assert isinstance(target, RemoteTarget)
    rsid = target.remote_session_id
    if rsid is None:
        run.skipped = "no remote session was created"
        return
    quit_ok = False
    if target.driver is None:
        run.notes.append("no WebDriver to quit")
    elif not target.graceful:
        run.notes.append(NOTE_NO_QUIT)
    else:
        share = t.budget.share(QUIT_SHARE)
        call = quit_within(target.driver, share)
        if not call.done:
            run.errors.append(ERROR_QUIT_HUNG.format(share=share))
        elif call.error is not None:
            run.errors.append(f"driver.quit() raised {first_line(call.error)}; deleting the session")
        else:
            run.notes.append(NOTE_QUIT_RETURNED)
            quit_ok = True
    if quit_ok:
        return
    # Leave verification at least a third of what is left.
    timeout = min(DELETE_TIMEOUT, t.budget.remaining() * 2 / 3)
    try:
        outcome = delete_session(target.remote_url, rsid, timeout)
    except GridError as err:
        run.errors.append(str(err))
    else:
        run.notes.append(NOTE_DELETE.format(rsid=rsid, outcome=outcome))


#: Pause between two ``/status`` polls while waiting for the slot to free.
VERIFY_POLL_S = 0.1


def _stage_verify(t: TeardownRun, run: StageRun) -> list[Leftover]:
    target = t.target
    assert isinstance(target, RemoteTarget)
    rsid = target.remote_session_id
    if rsid is None:
        run.notes.append("no remote session was created")
        return []
    last_error: str | None = None
    while True:
        try:
            listed = listed_sessions(
                grid_status(target.remote_url, min(STATUS_TIMEOUT, t.budget.remaining()))
            )
        except GridError as err:
            last_error = str(err)
        else:
            last_error = None
            if rsid not in listed:
                run.notes.append(f"the Grid lists no slot with session {rsid}: slot free")
                return []
        if t.budget.remaining() <= VERIFY_POLL_S:
            break
        t.clock.sleep(VERIFY_POLL_S)
    if last_error is not None:
        run.errors.append(last_error)
        return [Leftover("unverified", f"Grid /status: {last_error}")]
    run.notes.append(f"the Grid still lists session {rsid}")
    return [Leftover("remote-session", f"{rsid} still listed by {target.remote_url}")]


#: A remote session's plan: the four local stages have nothing to do here.
REMOTE_PLAN = Plan(
    {
        Stage.QUIT: _stage_quit,
        Stage.KILL_TREE: REMOTE_SKIP,
        Stage.PORTS: REMOTE_SKIP,
        Stage.OS_KILL: REMOTE_SKIP,
        Stage.PROFILE: REMOTE_SKIP,
        Stage.VERIFY: _stage_verify,
    },
    max_passes=1,
)
