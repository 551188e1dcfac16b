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
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._deadline import Deadline, Expired, run_bounded
from ._errors import ConfigError, LaunchError
from ._launcher import copy_user_options
from ._report import CleanupReport, Leftover, Stage, StageResult
from ._teardown import QUIT_SHARE, TeardownInterrupted, TeardownTarget, _Clock, _run_stage, _StageRun

if TYPE_CHECKING:  # pragma: no cover
    from selenium.webdriver.remote.webdriver import WebDriver

    from ._options import SessionOptions

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


class GridError(OSError):
    """The Grid did not answer as expected (connection, HTTP status, JSON)."""


# -- options ------------------------------------------------------------------
def check_remote_options(url: Any, *, driver_path: Any, env: Any) -> str:
    """Validate ``remote_url`` and the options that cannot go with it."""
    if not isinstance(url, str):
        raise TypeError(f"remote_url must be a string like 'http://grid:4444', got {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"remote_url {url!r} is not an http(s) URL of a Selenium Grid; pass e.g. 'http://127.0.0.1:4444'",
            option="remote_url",
            value=url,
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(f"remote_url {url!r}: {err}", option="remote_url", value=url) from None
    if parts.query or parts.fragment:
        raise ConfigError(
            f"remote_url {url!r} must not carry a query or fragment; pass the Grid's base URL",
            option="remote_url",
            value=url,
        )
    if driver_path is not None:
        raise ConfigError(
            "driver_path= cannot be used with remote_url=: chromedriver runs on the Grid node "
            "(configure it there)",
            option="driver_path",
            value=driver_path,
        )
    if env:
        raise ConfigError(
            "env= cannot be used with remote_url=: the browser's environment is the Grid node's",
            option="env",
            value=dict(env),
        )
    return url.strip().rstrip("/")


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
        raise GridError(f"{method} {url}: {type(reason).__name__}: {reason}") from err


def grid_status(url: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """The ``value`` of the Grid's ``GET /status``; GridError when it cannot be had."""
    code, body = _request(f"{url}/status", "GET", timeout)
    try:
        value = json.loads(body)["value"]
    except (ValueError, KeyError, TypeError):
        raise GridError(f"GET {url}/status answered {code} without a WebDriver status body") from None
    if code != 200 or not isinstance(value, dict):
        raise GridError(f"GET {url}/status answered {code}")
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
        return "deleted"
    if code == 404:
        return "already gone (404)"
    try:
        message = json.loads(body)["value"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    raise GridError(f"DELETE {url}/session/{remote_sid} answered {code}: {message}")


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

    from ._presets import merge_flags, preset_flags

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


def start_session(state: Any) -> WebDriver:
    """Create the remote session for ``state`` (a ``_session._SessionState``).

    Sets ``state.target`` first, so that a failure after the Grid created the
    session still deletes it (the caller tears down on any exception).
    """
    from selenium import webdriver

    opts: SessionOptions = state.opts
    url = opts.remote_url
    assert url is not None
    deadline = Deadline(opts.start_timeout)  # start_timeout bounds /status and the new session
    check_reachable(url, min(STATUS_TIMEOUT, max(0.05, deadline.remaining())))
    from ._ownership import ProcessTracker

    target = RemoteTarget(
        state.session_id,
        ProcessTracker(state.session_id, ""),  # nothing local to track
        None,
        graceful=opts.graceful,
        remote_url=url,
    )
    state.target = target
    options = chrome_options(opts, state.session_id)
    try:
        driver = run_bounded(
            lambda: webdriver.Remote(command_executor=url, options=options),
            deadline,
            f"embassy-cleanup-start-{state.session_id}",
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
        from ._launcher import webdriver_reason

        reason = webdriver_reason(err)
        raise LaunchError(
            f"Selenium Grid at {url!r} did not create a session: {reason}; check the Grid's "
            "log, its free slots and the node's Chrome",
            path=url,
        ) from err
    target.driver = driver
    target.remote_session_id = driver.session_id
    register_with_watchdog(state)
    return driver


def _quit_late(driver: Any) -> None:
    """``on_late`` for a new session that arrived after ``start_timeout``."""
    driver.quit()


def register_with_watchdog(state: Any) -> None:
    """List the session as live (signal handlers tear live sessions down) and,
    when ``watchdog=True``, tell the owner's watchdog about it."""
    from . import _watchdog

    _watchdog._live[state.session_id] = state
    if not state.opts.watchdog:
        return
    hook = _watchdog._CrashSafetyHook(None, registered=False)
    state.hooks.append(hook)
    _watchdog._get_client().send(add_message(state))
    hook.registered = True


def add_message(state: Any) -> dict[str, Any]:
    """The watchdog's ``add`` message for a remote session."""
    target = state.target
    return {
        "op": "add",
        "sid": state.session_id,
        "root": None,
        "remote_url": target.remote_url,
        "remote_sid": target.remote_session_id,
    }


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


# -- teardown -----------------------------------------------------------------------
def _stage_quit(target: RemoteTarget, clock: _Clock, run: _StageRun) -> None:
    rsid = target.remote_session_id
    if rsid is None:
        run.skipped = "no remote session was created"
        return
    quit_ok = False
    if target.driver is None:
        run.notes.append("no WebDriver to quit")
    elif not target.graceful:
        run.notes.append("graceful=False: no driver.quit()")
    else:
        share = min(clock.remaining(), (clock.deadline - clock.start) * QUIT_SHARE)
        done = threading.Event()
        failure: list[BaseException] = []
        driver = target.driver

        def quit_driver() -> None:
            try:
                driver.quit()
            except BaseException as err:  # noqa: BLE001 - reported, never raised here
                failure.append(err)
            finally:
                done.set()

        threading.Thread(target=quit_driver, name="embassy-cleanup-quit", daemon=True).start()
        if not done.wait(share):
            run.errors.append(f"driver.quit() did not return within {share:.2f} s; deleting the session")
        elif failure:
            first = str(failure[0]).strip().splitlines()
            run.notes.append(f"quit raised {type(failure[0]).__name__}: {first[0] if first else ''}")
        else:
            run.notes.append("driver.quit() returned")
            quit_ok = True
    if quit_ok:
        return
    # Leave verification at least a third of what is left.
    timeout = min(DELETE_TIMEOUT, clock.remaining() * 2 / 3)
    try:
        outcome = delete_session(target.remote_url, rsid, timeout)
    except GridError as err:
        run.errors.append(str(err))
    else:
        run.notes.append(f"DELETE /session/{rsid}: {outcome}")


#: Pause between two ``/status`` polls while waiting for the slot to free.
VERIFY_POLL_S = 0.1


def _stage_verify(target: RemoteTarget, clock: _Clock, run: _StageRun) -> list[Leftover]:
    rsid = target.remote_session_id
    if rsid is None:
        run.notes.append("no remote session was created")
        return []
    last_error: str | None = None
    while True:
        try:
            listed = listed_sessions(grid_status(target.remote_url, min(STATUS_TIMEOUT, clock.remaining())))
        except GridError as err:
            last_error = str(err)
        else:
            last_error = None
            if rsid not in listed:
                run.notes.append(f"the Grid lists no slot with session {rsid}: slot free")
                return []
        if clock.remaining() <= VERIFY_POLL_S:
            break
        time.sleep(VERIFY_POLL_S)
    if last_error is not None:
        run.errors.append(last_error)
        return [Leftover("unverified", f"Grid /status: {last_error}")]
    run.notes.append(f"the Grid still lists session {rsid}")
    return [Leftover("remote-session", f"{rsid} still listed by {target.remote_url}")]


def run_remote_teardown(
    target: RemoteTarget, budget: float, now: Callable[[], float] = time.monotonic
) -> CleanupReport:
    """The six stages for a remote session, within ``budget`` seconds.

    Same contract as ``_teardown.run_teardown`` (one report, every stage
    listed, TeardownInterrupted after finishing on Ctrl-C).
    """
    clock = _Clock(budget, now)
    stages: list[StageResult] = []
    _run_stage(stages, Stage.QUIT, _stage_quit, target, clock)
    for stage in (Stage.KILL_TREE, Stage.PORTS, Stage.OS_KILL, Stage.PROFILE):
        stages.append(StageResult(stage, 0.0, skipped_reason=REMOTE_SKIP))
    found = _run_stage(stages, Stage.VERIFY, _stage_verify, target, clock)
    leftovers = found if found is not None else [Leftover("unverified", stages[-1].errors[0])]
    report = CleanupReport(
        session_id=target.session_id,
        stages=tuple(stages),
        leftovers=tuple(leftovers),
        duration_s=clock.now() - clock.start,
        passes=1,
    )
    if report.ok:
        log.info(
            "session %s (remote %s) cleaned in %.0f ms",
            target.session_id,
            target.remote_session_id,
            report.duration_s * 1000,
        )
    else:
        log.warning(
            "session %s (remote %s): %s",
            target.session_id,
            target.remote_session_id,
            ", ".join(str(lo) for lo in leftovers),
        )
    if clock.interrupted:
        raise TeardownInterrupted(report, clock.interrupted[0])
    return report
