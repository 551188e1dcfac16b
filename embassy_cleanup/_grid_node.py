"""On a Selenium Grid node: which Chrome trees are the Grid's, and which are orphans.

``diagnose --grid URL`` / ``clean --grid URL`` (issue #8).  Read-only until
:func:`kill_orphans`.  How a tree is attributed to the Grid, never by name:

1. the Grid's JVM(s) on this host are the processes listening on the port of
   ``URL`` and on the port of every node ``/status`` lists with a local
   address (a hub and a node on one host are two JVMs);
2. a Chrome *browser* process (Chrome-family, no ``--type=``; listed by name,
   judged by ancestry) that descends from such a JVM is the Grid's;
3. one that does not, but whose parent is no longer a chromedriver (it was
   re-parented: its chromedriver is gone) and whose environment holds every
   variable of the JVM's environment with the same value (chromedriver and
   Chrome inherit it; ``PWD``-like variables excepted), is the Grid's too;
   so is such a re-parented chromedriver.

A tree (the browser and all its descendants) is an **orphan** when its
chromedriver is gone, or when no session in the Grid's ``/status`` is that
browser (``goog:processID`` or ``chrome.userDataDir`` of the session's
capabilities).  Everything else is a live Grid session and is never touched.
Processes of our own local sessions (``EMBASSY_CLEANUP_SESSION``) are left to
the ordinary ``diagnose``/``clean``.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import psutil

from . import _platform
from ._dirs import profile_origin, remove_singleton_dir, remove_tree, singleton_dir_of
from ._inventory import is_chrome_family
from ._ownership import ENV_MARKER, OwnedProcess, ProcessTracker, find_listeners
from ._remote import grid_status, listed_sessions

log = logging.getLogger("embassy_cleanup")

#: Variables a shell or wrapper script changes on the way from the JVM to Chrome.
_VOLATILE_ENV = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})


class GridNodeError(RuntimeError):
    """The Grid cannot be inspected from this host (not reachable, not local)."""


@dataclass
class GridProc:
    pid: int
    create_time: float
    name: str
    ppid: int

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "ppid": self.ppid}


@dataclass
class GridTree:
    """One Chrome tree the Grid started: the browser (or a lone chromedriver) and its descendants."""

    root: GridProc
    cls: str  # "session" (a live Grid session) or "orphan"
    reason: str
    session_id: str | None = None
    user_data_dir: str | None = None
    procs: list[GridProc] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "reason": self.reason,
            "session_id": self.session_id,
            "root_pid": self.root.pid,
            "user_data_dir": self.user_data_dir,
            "pids": sorted(p.pid for p in self.procs),
            "processes": [p.to_dict() for p in sorted(self.procs, key=lambda p: p.pid)],
        }


@dataclass
class GridInventory:
    url: str
    jvm_pids: list[int]
    sessions: list[str]
    trees: list[GridTree]
    #: TMPDIR/TMP/TEMP of the Grid's JVM(s): where its chromedrivers make temp profiles.
    jvm_temp_env: dict[str, str] = field(default_factory=dict)

    @property
    def orphans(self) -> list[GridTree]:
        return [t for t in self.trees if t.cls == "orphan"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.url,
            "jvm_pids": self.jvm_pids,
            "grid_sessions": self.sessions,
            "healthy": not self.orphans,
            "trees": [t.to_dict() for t in self.trees],
        }


def _local_addresses() -> set[str]:
    addrs = {"localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname()}
    try:
        addrs.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return addrs


def _local_ports(url: str, status: dict[str, Any]) -> set[int]:
    local = _local_addresses()
    ports = set()
    for u in [url] + [str(n.get("uri", "")) for n in status.get("nodes") or ()]:
        parts = urllib.parse.urlsplit(u)
        if parts.hostname in local and parts.port:
            ports.add(parts.port)
    return ports


def _fingerprint(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in _VOLATILE_ENV}


def _env_matches(proc: psutil.Process, fingerprints: list[dict[str, str]]) -> bool:
    try:
        env = proc.environ()
    except Exception:  # psutil errors, garbled environ areas (zygote children)
        return False
    if ENV_MARKER in env:
        return False  # one of our local sessions: not the Grid's
    return any(fp and all(env.get(k) == v for k, v in fp.items()) for fp in fingerprints)


def _option(cmdline: list[str], name: str) -> str | None:
    prefix = f"--{name}="
    return next((a[len(prefix) :] for a in cmdline if a.startswith(prefix)), None)


def take_grid_inventory(url: str) -> GridInventory:
    """Classify this user's Chrome trees that belong to the Grid at ``url`` (read-only)."""
    url = url.rstrip("/")
    try:
        status = grid_status(url)
    except OSError as err:
        raise GridNodeError(f"Selenium Grid at {url!r} is not reachable: {err}") from err
    ports = _local_ports(url, status)
    jvms = sorted({lst.pid for lst in find_listeners(ports) if lst.pid is not None})
    if not jvms:
        raise GridNodeError(
            f"no process of this user listens for the Grid at {url!r} on this host (ports {sorted(ports)}); "
            "run this on the Grid node, with the node's own URL"
        )
    fingerprints = []
    for pid in jvms:
        try:
            fingerprints.append(_fingerprint(psutil.Process(pid).environ()))
        except psutil.Error as err:
            raise GridNodeError(f"cannot read the environment of the Grid's JVM (pid {pid}): {err}") from err

    sessions = listed_sessions(status)
    by_pid: dict[int, str] = {}
    by_dir: dict[str, str] = {}
    for sid, entry in sessions.items():
        caps = entry.get("capabilities") or {}
        if isinstance(caps.get("goog:processID"), int):
            by_pid[caps["goog:processID"]] = sid
        udd = (caps.get("chrome") or {}).get("userDataDir")
        if isinstance(udd, str):
            by_dir[udd] = sid

    me = os.getpid()
    infos: dict[int, GridProc] = {}
    children: dict[int, list[int]] = {}
    handles: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["name", "ppid", "create_time", "status"]):
        info = proc.info
        children.setdefault(info["ppid"] or 0, []).append(proc.pid)
        if proc.pid == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not is_chrome_family(info["name"] or "") or not _platform.same_user(proc):
            continue
        name = info["name"] or ""
        infos[proc.pid] = GridProc(proc.pid, info["create_time"] or 0.0, name, info["ppid"] or 0)
        handles[proc.pid] = proc

    jvm_set = set(jvms)

    def under_jvm(pid: int) -> bool:
        try:
            return any(a.pid in jvm_set for a in handles[pid].parents())
        except psutil.Error:
            return False

    def descendants(pid: int) -> list[GridProc]:
        out, stack = [], list(children.get(pid, ()))
        while stack:
            c = stack.pop()
            if c in infos:
                out.append(infos[c])
            stack.extend(children.get(c, ()))
        return out

    def browser_dir(driver_pid: int) -> str | None:
        """The ``--user-data-dir`` of the browser a chromedriver started (what
        its Grid session was), so an orphan rooted at a chromedriver names its
        profile too."""
        for c in children.get(driver_pid, ()):
            try:
                args = handles[c].cmdline() if c in infos else []
            except psutil.Error:
                continue
            if args and not any(a.startswith("--type=") for a in args):
                return _option(args, "user-data-dir")
        return None

    trees: list[GridTree] = []
    for pid, gp in infos.items():
        proc = handles[pid]
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any(a.startswith("--type=") for a in cmdline):
            continue  # a helper: it goes with its browser's tree
        is_driver = gp.name.startswith("chromedriver")
        if not is_driver and "crashpad" in gp.name:
            continue  # crashpad handlers are re-parented by design; they exit with their browser
        parent = infos.get(gp.ppid)
        parent_is_driver = parent is not None and parent.name.startswith("chromedriver")
        orphaned_by: str | None = None
        if under_jvm(pid):
            if is_driver:
                continue  # a live chromedriver of the Grid: its browser is judged below
            if not parent_is_driver:
                continue  # not a browser chromedriver started (a browser's own child)
        elif gp.ppid in infos or not _env_matches(proc, fingerprints):
            continue  # someone else's, or a child of a Chrome process judged with its parent
        else:
            orphaned_by = "its Grid JVM no longer runs it" if is_driver else "its chromedriver is gone"
        udd = browser_dir(pid) if is_driver else _option(cmdline, "user-data-dir")
        gsid = by_pid.get(pid) or (by_dir.get(udd) if udd else None)
        tree = GridTree(gp, "session", "a live Grid session", gsid, udd, [gp, *descendants(pid)])
        if orphaned_by is not None:
            tree.cls, tree.reason = "orphan", orphaned_by
        elif gsid is None:
            tree.cls, tree.reason = "orphan", "its Grid session no longer exists"
        trees.append(tree)
    temp_env = {k: fp[k] for fp in fingerprints for k in ("TMPDIR", "TMP", "TEMP") if fp.get(k)}
    return GridInventory(url, jvms, sorted(sessions), sorted(trees, key=lambda t: t.root.pid), temp_env)


def kill_orphans(inv: GridInventory, budget: float = 10.0) -> tuple[list[str], list[str]]:
    """Kill every process of the orphan trees, identity-checked (pid + create
    time) through the usual ownership path; return ``(done, failed)`` lines."""
    done: list[str] = []
    failed: list[str] = []
    for tree in inv.orphans:
        procs = [OwnedProcess(p.pid, p.create_time, p.name, "grid-orphan") for p in tree.procs]
        tracker = ProcessTracker("", "")  # no markers: only these identity-checked pids
        actions, survivors = tracker.kill_tree(procs, 0.5, budget)
        line = f"orphan tree {tree.root.pid} ({tree.reason}): " + ", ".join(
            f"{a.pid} {a.outcome}" for a in actions
        )
        clean = not survivors
        if clean and tree.user_data_dir:
            removed, note, problem = _remove_orphan_profile(
                tree.user_data_dir, inv.jvm_temp_env, tree.root.create_time
            )
            line += "".join(f"; {x}" for x in (removed, note, problem) if x)
            clean = problem is None
        (done if clean else failed).append(line)
        log.info("%s", line)
    return done, failed


def _remove_orphan_profile(
    profile: str, jvm_env: dict[str, str], born_after: float
) -> tuple[str | None, str | None, str | None]:
    """Remove an orphan tree's profile once its processes are dead, but only
    a temp profile chromedriver made (its name pattern, directly in a temp
    dir), and the Chromium singleton dir it links to if that holds nothing
    else.  A profile anyone chose is left alone.  Returns ``(removed, note,
    problem)`` texts for the report line."""
    if profile_origin(profile, jvm_env) != "chromedriver":
        return None, f"profile {profile} kept: not a chromedriver temp profile", None
    # What still names this orphan's profile on its command line is the
    # orphan's too (its crashpad handlers: --database=<profile>/...), and
    # would write into the dir while it goes: end it first.  Nothing older
    # than the tree's root can use a profile made for it.
    users = ProcessTracker("", profile, born_after=born_after)
    stragglers = [p for p in users.discover().values() if p.is_running()]
    if stragglers:
        _actions, survivors = users.kill_tree(stragglers, 0.5, 5.0)
        if survivors:
            return None, None, f"profile {profile} left: {len(survivors)} process(es) using it survived"
    single = singleton_dir_of(profile)
    removed = []
    problem = remove_tree(profile)
    if problem is None:
        removed.append(profile)
    if single is not None:
        gone, err = remove_singleton_dir(single)
        if gone:
            removed.append(single)
        problem = problem or err
    return ("removed " + ", ".join(removed)) if removed else None, None, problem


def render(inv: GridInventory) -> list[str]:
    """Plain text lines for ``diagnose --grid`` (aligned; greps cleanly)."""
    lines = [
        f"Grid {inv.url}: JVM pid(s) {', '.join(map(str, inv.jvm_pids))}; "
        f"{len(inv.sessions)} session(s) listed in /status",
        f"{'class':<8} {'root pid':>8} {'procs':>5}  {'grid session':<32}  reason",
    ]
    for t in inv.trees:
        lines.append(f"{t.cls:<8} {t.root.pid:>8} {len(t.procs):>5}  {t.session_id or '-':<32}  {t.reason}")
    if not inv.trees:
        lines.append("(no Chrome tree of this Grid on this host)")
    hint = f"embassy-cleanup clean --grid {shlex.quote(inv.url)}"  # the user's URL, not a placeholder
    lines.append("healthy" if not inv.orphans else f"ORPHANS FOUND: run '{hint}' to kill them")
    return lines
