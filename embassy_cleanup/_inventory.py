"""A read-only inventory of Chrome-family processes and dirs, classified.

Names are used only to *list* candidates (chrome, chromium, chromedriver,
crashpad handlers, headless shells); who owns a process is decided by our
markers, never by its name:

``session``  carries a session's marker (root path on the command line,
             ``EMBASSY_CLEANUP_SESSION`` in its environment, or descends from
             such a process) and that session's owner is alive (its
             ``owner.lock`` is held);
``orphan``   carries a session's marker but the owner is dead;
``foreign``  carries no marker of ours: started by someone else;
``zombie``   exited, not yet reaped (listed with its parent).

A pooled browser in context mode (``ChromePool(isolation="context")``) shows
its open browser contexts: each has its download dir ``<root>/contexts/<id>``
from its creation until its teardown's profile stage removes it, so the dirs
there are the contexts open now (or, in a stale dir, open when the owner died).

Stale dirs are our session roots whose owner is dead: a leak.  Litter is
Chromium's own dirs in the temp dir (``org.chromium.Chromium.*``,
``.org.chromium.*``, ``.com.google.Chrome.*``, ``scoped_dir*``) that no live
process uses: no session of ours owns them (plain Selenium leaves them after a
correct ``quit()``), so they are listed apart and are a leak only when asked
for (``strict``).

Nothing here signals or deletes; ``_clean`` acts on an inventory.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from . import _platform, _records
from ._dirs import CONTEXTS_DIR
from ._ownership import ENV_MARKER, OWNER_MARKER, ROOT_PREFIX, is_chrome_family, marked_owner_alive

#: The JSON schema version of :meth:`Inventory.to_dict` (2: Chromium's litter
#: moved from ``stale_dirs`` to ``litter``, and ``strict`` was added; a
#: session's ``contexts`` was added later without a new version: an added key
#: breaks no reader).
SCHEMA_VERSION = 2

_SID_IN_PATH = re.compile(re.escape(ROOT_PREFIX) + r"([0-9a-f]{12})")
_CONTEXT_ID = re.compile(r"^[0-9a-f]{12}$")
_CHROMIUM_LITTER = re.compile(r"^(\.?org\.chromium\.Chromium\.|\.com\.google\.Chrome\.|scoped_dir)")


@dataclass
class ProcInfo:
    pid: int
    ppid: int
    name: str
    user: str
    status: str
    create_time: float
    cls: str = "foreign"
    session_id: str | None = None
    rss: int = 0
    uss: int | None = None
    pss: int | None = None
    cmdline: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "name": self.name,
            "user": self.user,
            "status": self.status,
            "class": self.cls,
            "session_id": self.session_id,
            "age_s": round(max(0.0, time.time() - self.create_time), 1),
            "rss_bytes": self.rss,
            "uss_bytes": self.uss,
            "pss_bytes": self.pss,
            "cmdline": self.cmdline,
        }


@dataclass
class SessionInfo:
    session_id: str
    root: str | None
    owner_pid: int | None
    owner_alive: bool
    pids: list[int] = field(default_factory=list)
    #: The open browser contexts' ids (see :func:`open_contexts`); None: the
    #: session is no browser that has served contexts.
    contexts: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "root": self.root,
            "root_exists": bool(self.root and os.path.isdir(self.root)),
            "owner_pid": self.owner_pid,
            "owner_alive": self.owner_alive,
            "pids": sorted(self.pids),
            "contexts": self.contexts,
        }


@dataclass
class StaleDir:
    path: str
    kind: str  # "session" (ours, owner dead: in stale_dirs) or "chromium" (Chromium's own: in litter)
    age_s: float
    size_bytes: int
    #: Why ``clean`` keeps this litter dir (None: nothing live can own it).
    kept: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "age_s": round(self.age_s, 1),
            "size_bytes": self.size_bytes,
            "kept": self.kept,
        }


@dataclass
class Inventory:
    """What ``embassy-cleanup diagnose`` shows; :meth:`healthy` decides its exit status."""

    temp_dir: str
    processes: list[ProcInfo]
    sessions: list[SessionInfo]
    stale_dirs: list[StaleDir]  # our sessions' dirs whose owner is dead
    took_s: float = 0.0
    litter: list[StaleDir] = field(default_factory=list)  # Chromium's own unused dirs

    def by_class(self, cls: str) -> list[ProcInfo]:
        return [p for p in self.processes if p.cls == cls]

    @property
    def zombies_of_ours(self) -> list[ProcInfo]:
        return [p for p in self.by_class("zombie") if p.session_id is not None]

    @property
    def leaks(self) -> bool:
        """Orphans, zombies of ours, or stale session dirs: something of ours to clean."""
        return bool(self.by_class("orphan") or self.zombies_of_ours or self.stale_dirs)

    def healthy(self, strict: bool = False) -> bool:
        """No leak of ours; with ``strict``, no litter either."""
        return not self.leaks and not (strict and self.litter)

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cls in ("session", "orphan", "foreign", "zombie"):
            procs = self.by_class(cls)
            uss = [p.uss for p in procs if p.uss is not None]
            pss = [p.pss for p in procs if p.pss is not None]
            out[cls] = {
                "processes": len(procs),
                "rss_bytes": sum(p.rss for p in procs),
                "uss_bytes": sum(uss) if uss else None,
                "pss_bytes": sum(pss) if pss else None,
            }
        out["stale_dirs"] = {
            "count": len(self.stale_dirs),
            "size_bytes": sum(d.size_bytes for d in self.stale_dirs),
        }
        out["litter"] = {
            "count": len(self.litter),
            "size_bytes": sum(d.size_bytes for d in self.litter),
        }
        out["sessions"] = {
            "live": sum(1 for s in self.sessions if s.owner_alive),
            "orphaned": sum(1 for s in self.sessions if not s.owner_alive),
        }
        return out

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        """The documented, stable JSON schema (docs/cli.md); ``healthy`` as
        :meth:`healthy` with ``strict``."""
        return {
            "schema": SCHEMA_VERSION,
            "temp_dir": self.temp_dir,
            "healthy": self.healthy(strict),
            "strict": strict,
            "sessions": [s.to_dict() for s in self.sessions],
            "orphans": [p.to_dict() for p in self.by_class("orphan")],
            "foreign": [p.to_dict() for p in self.by_class("foreign")],
            "zombies": [dict(p.to_dict(), ours=p.session_id is not None) for p in self.by_class("zombie")],
            "session_processes": [p.to_dict() for p in self.by_class("session")],
            "stale_dirs": [d.to_dict() for d in self.stale_dirs],
            "litter": [d.to_dict() for d in self.litter],
            "totals": self.totals(),
            "took_s": round(self.took_s, 4),
        }


def _marker_of(proc: psutil.Process, cmdline: list[str]) -> tuple[str | None, str | None, str | None]:
    """``(session id, session root, owner marker)`` from the command line and
    the environment (the owner marker is only in the environment)."""
    try:
        env = proc.environ()
    except Exception:  # psutil errors, and garbled environ areas
        env = {}
    owner = env.get(OWNER_MARKER)
    for arg in cmdline:
        m = _SID_IN_PATH.search(arg)
        if m:
            return m.group(1), _root_in(arg, m.group(1)), owner
    sid = env.get(ENV_MARKER)
    if not sid or not re.fullmatch(r"[0-9a-f]{12}", sid):
        return None, None, None
    for key in ("TMPDIR", "XDG_CONFIG_HOME"):
        root = _root_in(env.get(key, ""), sid)
        if root:
            return sid, root, owner
    return sid, None, owner


def _root_in(text: str, sid: str) -> str | None:
    needle = f"{ROOT_PREFIX}{sid}"
    i = text.find(needle)
    if i < 0:
        return None
    start = text.rfind("=", 0, i) + 1
    return text[start : i + len(needle)]


def open_contexts(root: str | None) -> list[str] | None:
    """The ids of the browser contexts open in the session at ``root``: the
    dirs in ``<root>/contexts`` (each context's download dir, there from its
    creation until its teardown removes it).  None when the session has no
    such dir: it never served a context."""
    if root is None:
        return None
    try:
        names = os.listdir(os.path.join(root, CONTEXTS_DIR))
    except OSError:
        return None
    return sorted(
        n for n in names if _CONTEXT_ID.match(n) and os.path.isdir(os.path.join(root, CONTEXTS_DIR, n))
    )


def _dir_size(path: str, limit: int = 5000) -> int:
    total = 0
    seen = 0
    for dirpath, _dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames:
            seen += 1
            if seen > limit:
                return total
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _owner_alive(root: str | None, owner: str | None = None) -> tuple[bool, int | None]:
    """Whether the session at ``root`` has a live owner: its lock is held.

    When the dir is gone (someone deleted it: a tmp cleaner), the lock went
    with it; then the owner marker from a session process's environment
    decides, and only a provably dead (or unknown) owner counts as dead.
    """
    if root is None or not os.path.isdir(root):
        alive = marked_owner_alive(owner) if owner else None
        pid = int(owner.partition(":")[0]) if owner and alive is not None else None
        return bool(alive), pid
    record = _records.read_record(root)
    owner = record.get("owner_pid") if isinstance(record.get("owner_pid"), int) else None
    with _records.dead_owner_lock(root) as lock:  # we only look: let go at once
        if lock is _records.Owner.ALIVE:
            return True, owner
        if lock in (_records.Owner.NO_LOCK, _records.Owner.INVALID):  # being created, unless it is old
            try:
                young = time.time() - os.lstat(root).st_mtime < _records.YOUNG_ROOT_S
            except OSError:
                young = False
            return young, owner
    return False, owner


def take_inventory(
    temp_dir: str | None = None,
    all_users: bool = False,
    memory: bool = True,
    scoped: bool = False,
) -> Inventory:
    """Scan processes and the temp dir; classify everything (read-only).

    ``memory=False`` skips USS/PSS (which read every mapping) but keeps RSS.
    ``scoped=True`` limits our sessions to those whose dir is in
    ``temp_dir``: processes of sessions elsewhere are left out entirely (the
    CLI's ``--temp-dir``).  Otherwise every session of the user counts,
    wherever its dir is.
    """
    t0 = time.monotonic()
    base = temp_dir if temp_dir is not None else tempfile.gettempdir()
    me = os.getpid()
    procs: dict[int, ProcInfo] = {}
    children: dict[int, list[int]] = {}
    used_paths: set[str] = set()
    found_roots: dict[str, str] = {}
    found_owners: dict[str, str] = {}
    for proc in psutil.process_iter(["name", "ppid", "status", "create_time", "username"]):
        info = proc.info
        name = info["name"] or ""
        children.setdefault(info["ppid"] or 0, []).append(proc.pid)
        if proc.pid == me or not is_chrome_family(name):
            continue
        if not all_users and not _platform.same_user(proc):
            continue
        pi = ProcInfo(
            pid=proc.pid,
            ppid=info["ppid"] or 0,
            name=name,
            user=info["username"] or "?",
            status=info["status"] or "?",
            create_time=info["create_time"] or 0.0,
        )
        if pi.status == psutil.STATUS_ZOMBIE:
            pi.cls = "zombie"
            procs[proc.pid] = pi
            continue
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            cmdline = []
        pi.cmdline = " ".join(cmdline)[:300]
        pi.session_id, root, owner = _marker_of(proc, cmdline)
        if pi.session_id is not None and root is not None:
            found_roots.setdefault(pi.session_id, root)
        if pi.session_id is not None and owner is not None:
            found_owners.setdefault(pi.session_id, owner)
        used_paths.update(a.split("=", 1)[-1] for a in cmdline if os.sep in a)
        try:
            if memory:
                mem = proc.memory_full_info()
                pi.rss, pi.uss, pi.pss = mem.rss, getattr(mem, "uss", None), getattr(mem, "pss", None)
            else:
                pi.rss = proc.memory_info().rss
        except psutil.AccessDenied:
            try:
                pi.rss = proc.memory_info().rss
            except psutil.Error:
                pass
        except psutil.Error:
            pass
        procs[proc.pid] = pi

    # Descendants of a marked process share its session (zygote-forked helpers).
    for pid in list(procs):
        p = procs[pid]
        if p.session_id is None:
            continue
        stack = list(children.get(pid, ()))
        while stack:
            c = stack.pop()
            child = procs.get(c)
            if child is not None and child.session_id is None:
                child.session_id = p.session_id
            stack.extend(children.get(c, ()))

    # Sessions: from marked processes and from roots in the temp dir(s).
    roots: dict[str, str | None] = {}
    for cand in _records.find_roots(base):
        roots[cand.session_id] = cand.root
    for p in procs.values():
        if p.session_id and p.session_id not in roots:
            roots[p.session_id] = found_roots.get(p.session_id)
    if scoped:
        inside = os.path.abspath(base) + os.sep
        outside = {
            sid for sid, root in roots.items() if not (root and os.path.abspath(root).startswith(inside))
        }
        for sid in outside:
            del roots[sid]
        for pid in [pid for pid, p in procs.items() if p.session_id in outside]:
            del procs[pid]
    sessions: dict[str, SessionInfo] = {}
    for sid, root in roots.items():
        alive, owner_pid = _owner_alive(root, found_owners.get(sid))
        sessions[sid] = SessionInfo(sid, root, owner_pid, alive, contexts=open_contexts(root))
    for p in procs.values():
        if p.session_id is None:
            continue
        s = sessions.get(p.session_id)
        if s is not None:
            s.pids.append(p.pid)
        if p.cls != "zombie":
            p.cls = "session" if s is not None and s.owner_alive else "orphan"

    # A zombie is a leak of ours when nobody of ours will reap it: its parent
    # is a process of an orphaned session, or the owner of one of our
    # sessions (FAULTS.md: "zombies of the session left under the owner").
    # Zombies under a live session's Chrome are Chrome's normal churn.
    owners = {s.owner_pid: s.session_id for s in sessions.values() if s.owner_pid}
    for p in procs.values():
        if p.cls != "zombie":
            continue
        parent = procs.get(p.ppid)
        if parent is not None and parent.cls == "orphan":
            p.session_id = parent.session_id
        elif p.ppid in owners:
            p.session_id = owners[p.ppid]
        else:
            p.session_id = None

    stale: list[StaleDir] = []
    litter: list[StaleDir] = []
    now = time.time()
    for s in sessions.values():
        if not s.owner_alive and s.root and os.path.isdir(s.root):
            age = now - os.lstat(s.root).st_mtime
            stale.append(StaleDir(s.root, "session", age, _dir_size(s.root)))
    sockets = _platform.unix_socket_paths()
    uid = os.getuid() if hasattr(os, "getuid") else None
    # A Chromium litter dir that is younger than some live Chrome-family
    # process of this user may be that process's (a live plain-Selenium
    # session's empty scoped dir is on no command line and held open by
    # nobody): it is listed and kept.  Only litter older than every such
    # process cannot be a live one's (issue 13).
    me_user = psutil.Process().username() if all_users else None
    births = [
        p.create_time for p in procs.values() if p.cls != "zombie" and (me_user is None or p.user == me_user)
    ]
    oldest_live = min(births, default=None)
    try:
        names = os.listdir(base)
    except OSError:
        names = []
    for name in names:
        if not _CHROMIUM_LITTER.match(name):
            continue
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path) or (uid is not None and st.st_uid != uid):
            continue
        prefix = path + os.sep
        if any(u == path or u.startswith(prefix) for u in used_paths | sockets):
            continue
        kept = None
        if oldest_live is not None and st.st_mtime + 1.0 >= oldest_live:
            kept = "younger than a live Chrome-family process of this user, which may own it"
        litter.append(StaleDir(path, "chromium", now - st.st_mtime, _dir_size(path), kept))

    return Inventory(
        temp_dir=base,
        processes=sorted(procs.values(), key=lambda p: p.pid),
        sessions=sorted(sessions.values(), key=lambda s: s.session_id),
        stale_dirs=sorted(stale, key=lambda d: d.path),
        took_s=time.monotonic() - t0,
        litter=sorted(litter, key=lambda d: d.path),
    )
