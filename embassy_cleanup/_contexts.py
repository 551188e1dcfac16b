"""Browser contexts: a fifth kind of session, for ``ChromePool(isolation="context")``.

One pooled browser serves up to ``contexts_per_browser`` jobs at once, each
in its own WebDriver BiDi *user context* (Chrome's off-the-record browser
context: its own cookies, storage, cache, service workers, permissions; no
renderer process is ever shared between two of them).

* **Lanes.**  Each job drives the browser through its own WebDriver session:
  a chromedriver attached to the browser (``debuggerAddress``, with BiDi),
  started by the browser's session and recorded by its tracker like its own
  chromedriver, so the browser's teardown and its watchdog end it too.  A
  browser starts its lanes once, before its first context; a lane serves one
  job at a time and is reused, a context never is.  (Measured in
  ``bench/``: attaching a chromedriver costs more than a context; see
  docs/pool.md.)
* **The kind** (:class:`ContextKind`, ``_lifecycle.Kind``): its plan closes
  the context's tabs and removes the user context (``quit``), ends what is
  left of the context's renderers (``tree-kill``), removes its download dir
  (``profile``), and verifies all three (``verify``).  ``ports`` and
  ``os-kill`` are skipped with a reason: a context has no port and no
  marker of its own.  It has no watchdog record: it owns no process, and
  the browser's record covers everything in it.
* **Whose renderer is it?**  Chrome does not say which renderer serves which
  context.  :class:`BrowserHost` keeps the birth and end time of every
  context of its browser: a renderer born after the lanes started, while
  only one context was open, is that context's.  One born while several
  were open is ascribed once none of them is open any more.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

from ._clock import call_with_deadline
from ._dirs import CONTEXTS_DIR
from ._lifecycle import Lifecycle
from ._ownership import OwnedProcess, ProcessTracker
from ._report import CleanupReport, Leftover, Stage
from ._teardown import (
    QUIT_SHARE,
    Plan,
    StageRun,
    TeardownRun,
    TeardownTarget,
    stage_kill_tree,
    stage_profile,
    stage_verify,
)
from ._webdriver import first_line, quit_within, release_driver

if TYPE_CHECKING:  # pragma: no cover
    from ._session import ChromeUltraAggressiveCleanup

log = logging.getLogger("embassy_cleanup")

#: How long the quit stage waits for the context's renderers to end on their own.
RENDERER_SETTLE_S = 1.0
#: How often Selenium's BiDi client looks for an answer (its default: 0.1 s).
BIDI_POLL_S = 0.002
#: Why two of the six stages do nothing for a context.
NO_PORTS = "a context has no port of its own (the browser's are its session's)"
NO_MARKER = "a context's processes carry the browser session's markers, not a context's"
#: Notes of the quit and verify stages.
NOTE_CONTEXT_REMOVED = "user context {uc} removed with its {tabs} tab(s)"
NOTE_CONTEXT_GONE = "user context {uc} gone, no tab of it left"


def browser_process(session: ChromeUltraAggressiveCleanup) -> psutil.Process | None:
    """The browser's main process: the child of the session's chromedriver
    that the session's own discovery counts as its."""
    view = session.view()
    leader = view.leader
    if leader is None:
        return None
    ours = {p.pid for p in view.discover()}
    try:
        return next((c for c in psutil.Process(leader.pid).children() if c.pid in ours), None)
    except psutil.Error:
        return None


def _renderers(browser: psutil.Process | None) -> dict[int, OwnedProcess]:
    """The browser's renderer processes now: its descendants (children of its
    zygote) run with ``--type=renderer``.  One walk of the browser's tree, not
    a scan of the process table: this runs on every context's return."""
    out: dict[int, OwnedProcess] = {}
    if browser is None:
        return out
    try:
        procs = browser.children(recursive=True)
    except psutil.Error:
        return out
    for proc in procs:
        try:
            if "--type=renderer" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                out[proc.pid] = OwnedProcess(proc.pid, proc.create_time(), proc.name(), "context")
        except psutil.Error:
            continue
    return out


class BrowserHost:
    """One pooled browser in context mode: its lanes and its contexts' books."""

    def __init__(self, session: ChromeUltraAggressiveCleanup, lanes: int) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.free: list[Any] = []
        self.lanes: list[Any] = []
        #: context id -> [born, ended or None], in epoch seconds (as process create times)
        self.spans: dict[str, tuple[float, float | None]] = {}
        self.control: Any = None
        #: One BiDi connection serves every context of the browser: one call at a time.
        self.bidi_lock = threading.Lock()
        try:
            # chromedriver refuses a second BiDi session on one browser ("unexpected
            # alert open" from the first one's mapper tab): one BiDi lane manages
            # the contexts, the job lanes are classic WebDriver sessions.
            self.control = session.attach_driver(bidi=True)
            # Selenium's BiDi client polls for each answer every websocket_interval
            # (0.1 s by default): measured, that was most of a context's cost.
            self.control.command_executor.client_config.websocket_interval = BIDI_POLL_S
            for _ in range(lanes):
                lane = session.attach_driver(bidi=False)
                self.lanes.append(lane)
                self.free.append(lane)
        except BaseException:
            self.close()
            raise
        self.browser = browser_process(session)
        # What runs before any context: the browser's own tab, the lanes' BiDi mappers.
        self.baseline = {(p.pid, p.create_time) for p in _renderers(self.browser).values()}

    # -- user contexts, through the BiDi lane ----------------------------------
    def create_context(self, downloads: str | None) -> tuple[str, str]:
        """A new user context and its first tab: ``(user context, tab)``."""
        with self.bidi_lock:
            uc = self.control.browser.create_user_context()
            if downloads is not None:
                self.control.browser.set_download_behavior(
                    allowed=True, destination_folder=downloads, user_contexts=[uc]
                )
            tab = self.control.browsing_context.create(type="tab", user_context=uc)
        return str(uc), str(tab)

    def new_tab(self, uc: str, kind: str) -> str:
        with self.bidi_lock:
            return str(self.control.browsing_context.create(type=kind, user_context=uc))

    def tabs(self, uc: str) -> list[str]:
        """The top-level browsing contexts (tabs, windows) of user context ``uc``."""
        with self.bidi_lock:
            tree = self.control.browsing_context.get_tree(max_depth=0)
        return [c.context for c in tree if c.user_context == uc]

    def remove_context(self, uc: str) -> int:
        """Remove user context ``uc``: BiDi closes its tabs with it (without
        running their unload handlers); return how many it had."""
        with self.bidi_lock:
            tree = self.control.browsing_context.get_tree(max_depth=0)
            self.control.browser.remove_user_context(uc)
        return sum(1 for c in tree if c.user_context == uc)

    def user_contexts(self) -> list[str]:
        with self.bidi_lock:
            return list(self.control.browser.get_user_contexts())

    def set_permission(self, uc: str, name: str, state: str, origin: str) -> None:
        """A permission for ``origin`` in user context ``uc`` only (chromedriver's
        own ``setPermissions`` would set it in the default context)."""
        with self.bidi_lock:
            self.control.permissions.set_permission(name, state, origin, user_context=uc)

    def take_lane(self) -> Any:
        with self.lock:
            return self.free.pop()

    def give_lane(self, lane: Any) -> None:
        with self.lock:
            if lane in self.lanes and lane not in self.free:
                self.free.append(lane)

    def open_count(self) -> int:
        with self.lock:
            return sum(1 for span in self.spans.values() if span[1] is None)

    def context_opened(self, cid: str) -> None:
        with self.lock:
            self.spans[cid] = (time.time(), None)

    def context_removed(self, cid: str) -> None:
        with self.lock:
            if cid in self.spans and self.spans[cid][1] is None:
                self.spans[cid] = (self.spans[cid][0], time.time())

    def renderers_of(self, cid: str) -> tuple[list[OwnedProcess], int]:
        """After context ``cid`` was removed: the renderers still running that
        are its (or an already removed context's), and how many more were born
        while another, still open, context might own them."""
        now = _renderers(self.browser)
        with self.lock:
            spans = dict(self.spans)
        mine = spans.get(cid)
        if mine is None:
            return [], 0
        ours, unsure = [], 0
        for p in now.values():
            if (p.pid, p.create_time) in self.baseline or p.create_time < mine[0]:
                continue
            others_open = [
                k
                for k, (born, ended) in spans.items()
                if k != cid and born <= p.create_time and (ended is None or ended >= p.create_time)
            ]
            if any(spans[k][1] is None for k in others_open):
                unsure += 1
            else:
                ours.append(p)
        return ours, unsure

    def browser_alive(self) -> bool:
        """Whether the browser still answers on its DevTools port."""
        port = self.session.devtools_port
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1.0) as resp:  # noqa: S310
                resp.read(1)
            return True
        except Exception:
            return False

    def close(self) -> None:
        """Quit every lane (each within 2 s); the browser's teardown ends any
        chromedriver that did not exit."""
        for lane in [*self.lanes, *([self.control] if self.control is not None else [])]:
            call = quit_within(lane, 2.0)
            if not call.done or call.error is not None:
                release_driver(lane)
        self.lanes, self.free, self.control = [], [], None


@dataclass
class ContextTarget(TeardownTarget):
    """A teardown target that is one user context of a pooled browser; ``root``
    is the context's download dir (inside the browser's session dir)."""

    host: BrowserHost | None = None
    user_context: str | None = None
    lane: Any = None


def _stage_quit(t: TeardownRun, run: StageRun) -> None:
    target = t.target
    assert isinstance(target, ContextTarget) and target.host is not None
    uc, host = target.user_context, target.host
    if uc is None:
        run.skipped = "no user context was created"
        host.context_removed(target.session_id)
        return
    share = t.budget.share(QUIT_SHARE)
    call = call_with_deadline(lambda: host.remove_context(uc), share, "embassy-context-remove")
    target.host.context_removed(target.session_id)
    if not call.done:
        run.errors.append(f"removing user context {uc} did not return within {share:.2f} s")
    elif call.error is not None:
        run.errors.append(f"removing user context {uc} raised {first_line(call.error)}")
    else:
        run.notes.append(NOTE_CONTEXT_REMOVED.format(uc=uc, tabs=call.value))
    # Chrome ends the context's renderers on its own: wait for that, then
    # hand the survivors that are surely the context's to the tree-kill.
    end = t.clock.now() + min(RENDERER_SETTLE_S, t.budget.remaining() / 3)
    while True:
        ours, unsure = target.host.renderers_of(target.session_id)
        if not ours or t.clock.now() >= end:
            break
        t.clock.sleep(0.05)
    target.tracker.record(ours)
    if unsure:
        run.notes.append(f"{unsure} renderer(s) born while other contexts were open: left to them")


def _stage_verify(t: TeardownRun, run: StageRun) -> list[Leftover]:
    target = t.target
    assert isinstance(target, ContextTarget)
    left = stage_verify(t, run)
    uc, host = target.user_context, target.host
    if uc is None or host is None:
        return left
    call = call_with_deadline(
        lambda: (host.user_contexts(), host.tabs(uc)),
        max(0.05, t.budget.remaining()),
        "embassy-context-verify",
    )
    if not call.done or call.error is not None:
        if not host.browser_alive():
            run.notes.append("the browser is gone, and its contexts with it")
            return left
        why = "no answer" if not call.done else first_line(call.error)  # type: ignore[arg-type]
        return [*left, Leftover("unverified", f"user context {uc}: {why}")]
    assert call.value is not None
    contexts, tabs = call.value
    if uc in contexts:
        left.append(Leftover("user-context", uc))
    left += [Leftover("tab", tab) for tab in tabs]
    if uc not in contexts and not tabs:
        run.notes.append(NOTE_CONTEXT_GONE.format(uc=uc))
    return left


#: A context's plan: the stages that apply to one user context of a browser.
CONTEXT_PLAN = Plan(
    {
        Stage.QUIT: _stage_quit,
        Stage.KILL_TREE: stage_kill_tree,
        Stage.PORTS: NO_PORTS,
        Stage.OS_KILL: NO_MARKER,
        Stage.PROFILE: stage_profile,
        Stage.VERIFY: _stage_verify,
    },
    max_passes=2,
)


class ContextKind:
    """One user context of a pooled browser (``_lifecycle.Kind``)."""

    kind: ClassVar[str] = "context"

    def __init__(self, target: ContextTarget) -> None:
        self.target = target

    def plan(self) -> tuple[TeardownTarget, Plan] | None:
        return self.target, CONTEXT_PLAN

    def watchdog_record(self) -> dict[str, Any] | None:
        """None: a context owns no process; the browser's record covers it."""
        return None

    def release(self) -> None:
        """The lane goes back to its browser for the next job."""
        host, lane = self.target.host, self.target.lane
        if host is not None and lane is not None:
            host.give_lane(lane)

    def forget_in_child(self) -> None:
        """Nothing of a context is held as a file or a lock."""


class BrowserContext:
    """One job's user context: created on a lane of ``host``; ``close()``
    runs its plan through the shared lifecycle and returns its report."""

    def __init__(self, host: BrowserHost, budget: float) -> None:
        self.context_id = secrets.token_hex(6)
        lane = host.take_lane()
        root = host.session.root
        # The download dir is also the record that the context is open: the
        # profile stage removes it, and ``diagnose`` lists what is there.
        downloads = os.path.join(root, CONTEXTS_DIR, self.context_id) if root is not None else None
        target = ContextTarget(
            self.context_id,
            ProcessTracker("", "", born_after=float("inf")),  # only what the host ascribes to it
            downloads,
            no_dir_reason="the context has no download dir",
            host=host,
            lane=lane,
        )
        self.kind = ContextKind(target)
        self.lifecycle = Lifecycle(self.context_id, self.kind, budget, watchdog=False)
        self.lane = lane
        self.host = host
        try:
            host.context_opened(self.context_id)
            if downloads is not None:
                os.makedirs(downloads, 0o700)
            uc, self.tab = host.create_context(downloads)
            target.user_context = uc
            lane.switch_to.window(self.tab)
        except BaseException:
            self.close()
            raise
        self.user_context: str = uc

    @property
    def downloads(self) -> str | None:
        return self.kind.target.root

    def handles(self) -> list[str]:
        return self.host.tabs(self.user_context)

    def set_permission(self, name: str, state: str, origin: str) -> None:
        self.host.set_permission(self.user_context, name, state, origin)

    def new_tab(self, type_hint: str) -> str:
        return self.host.new_tab(self.user_context, "window" if type_hint == "window" else "tab")

    def close(self) -> CleanupReport:
        report = self.lifecycle.teardown()
        assert report is not None
        return report
