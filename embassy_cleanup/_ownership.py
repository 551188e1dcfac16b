"""Process ownership: how a session tells its own processes from everyone else's.

This is the only module that sends signals.  A session owns:

* the processes it started (chromedriver, recorded with its create time) and
  their descendants, including those re-parented to init after their parent
  died;
* the members of chromedriver's process group (chromedriver is started in a
  new session, so the group is ours alone while chromedriver lives);
* any process of the same user, born after the session started, that carries
  one of the session's markers: ``EMBASSY_CLEANUP_SESSION=<id>`` in its
  environment (chromedriver, the browser and crashpad), or, for a
  Chrome-family process only, the session root path on its command line
  (every Chrome process: the profile dir, or the crashpad ``--database``
  under the session's ``XDG_CONFIG_HOME``; Chrome overwrites the environ area
  of zygote-forked processes with their titles, so for those the command line
  is the key).  A bystander that merely names the root (``tail -f``) is not
  ours.  A record (``session.json``) names processes, but a recorded PID is
  never enough on its own: it must pass this rule like any other process.

Discovery is the union of all four, in one pass over the process table.
Every signal is identity-checked (PID plus create time, through a pidfd on
Linux), only same-user processes are ever considered, and the owner process
and its ancestors are never candidates (a pattern search would otherwise
match a shell whose command line carries the marker).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import psutil

from . import _platform
from ._clock import Bounded, Budget
from ._platform import SignalResult
from ._report import Outcome, ProcessAction

log = logging.getLogger("embassy_cleanup")

#: Environment variable every process of a session inherits.
ENV_MARKER = "EMBASSY_CLEANUP_SESSION"
#: ``<pid>:<create_time>`` of the session's owner, in the same environment: it
#: tells a live owner from a dead one even when the session dir (and the owner
#: lock in it) was deleted by someone else, e.g. a tmp cleaner.
OWNER_MARKER = "EMBASSY_CLEANUP_OWNER"


def owner_marker() -> str:
    """This process's value for :data:`OWNER_MARKER`."""
    return f"{os.getpid()}:{psutil.Process().create_time()!r}"


def owner_alive(pid: int, create_time: float) -> bool:
    """Whether the owner process born at ``create_time`` still runs (a zombie
    owner is dead; an owner whose identity cannot be read counts as alive)."""
    return _platform.is_running(pid, create_time)


def marked_owner_alive(marker: str) -> bool | None:
    """Whether the owner named by an :data:`OWNER_MARKER` value still runs
    (None when the value cannot be read)."""
    pid_s, _, ct_s = marker.partition(":")
    try:
        pid, ct = int(pid_s), float(ct_s)
    except ValueError:
        return None
    return owner_alive(pid, ct)


#: Prefix of every session root directory.
ROOT_PREFIX = "embassy_cleanup-"
#: A session root in a path; group 1 is the session id.
SESSION_IN_PATH = re.compile(re.escape(ROOT_PREFIX) + r"([0-9a-f]{12})")
#: Names of the Chrome family's processes (the kernel's 15-character names
#: included: ``chrome_crashpa``, ``chromium-headle``).
CHROME_FAMILY = re.compile(r"^(chrome|chromium|chromedriver|headless_shell|chrome-headless-shell)", re.I)


def is_chrome_family(name: str) -> bool:
    """Whether a process name is Chrome's, Chromium's, a headless shell's or chromedriver's."""
    return bool(CHROME_FAMILY.match(name))


_BORN_SLACK_S = 2.0  # clock slack between time.time() and /proc create times


@dataclass(frozen=True)
class OwnedProcess:
    """A process of ours: ``(pid, create_time)`` is its identity.

    ``via`` says how we know it is ours: ``started`` (we spawned it),
    ``recorded``, ``descendant``, ``group``, ``cmdline``, ``env``, or
    ``os-tool`` (found by the OS's own search in the os-kill stage).
    """

    pid: int
    create_time: float
    name: str
    via: str

    @property
    def ident(self) -> tuple[int, float]:
        return (self.pid, self.create_time)

    def is_running(self) -> bool:
        return _platform.is_running(self.pid, self.create_time)


def _ancestors_of(pid: int) -> set[int]:
    out = {pid}
    try:
        proc: psutil.Process | None = psutil.Process(pid)
        while proc is not None:
            out.add(proc.pid)
            proc = proc.parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return out


def _environ_has(proc: psutil.Process, key: str, value: str) -> bool:
    try:
        return proc.environ().get(key) == value
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False
    except Exception:  # garbled environ areas (see module docstring)
        return False


_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")


def root_in_args(root: str, args: Iterable[str]) -> bool:
    """Whether the path ``root`` appears in ``args`` as a whole path: not as
    part of a longer name.  ``/p/profile`` is in ``--user-data-dir=/p/profile``
    and ``--database=/p/profile/x``, never in ``--user-data-dir=/p/profile-2``
    (a user-chosen profile dir, unlike a session root, may be a prefix of
    another's).  An empty ``root`` is in nothing."""
    if not root:
        return False
    root = root.rstrip("/") or root
    for arg in args:
        start = arg.find(root)
        while start != -1:
            end = start + len(root)
            before_ok = start == 0 or (arg[start - 1] not in _PATH_CHARS and arg[start - 1] != "/")
            if before_ok and (end == len(arg) or arg[end] == "/" or arg[end] not in _PATH_CHARS):
                return True
            start = arg.find(root, start + 1)
    return False


def _chrome_named(proc: psutil.Process) -> bool:
    try:
        return is_chrome_family(proc.name())
    except psutil.Error:
        return False


def carries_root(proc: psutil.Process, root: str) -> bool:
    """Whether ``proc`` is a Chrome-family process with ``root`` on its command
    line: the command-line half of the ownership rule (see :func:`_marker_of`)."""
    return _cmdline_has(proc, root) and _chrome_named(proc)


def _cmdline_has(proc: psutil.Process, needle: str) -> bool:
    try:
        return root_in_args(needle, proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _marker_of(pid: int, create_time: float, root: str, session_id: str) -> str | None:
    """``"cmdline"`` or ``"env"`` if that same-user process carries one of the
    session's markers, else None.

    The session root on a command line counts only for a Chrome-family
    process: an admin's ``tail -f <root>/tmp/x.log`` names the root too, and
    is not ours (issue 13).  The env marker is set only by us."""
    try:
        proc = psutil.Process(pid)
        if not _platform.same_birth(proc.create_time(), create_time):
            return None  # the PID was reused since the table was read
    except psutil.Error:
        return None
    if not _platform.same_user(proc):
        return None
    if root and _cmdline_has(proc, root) and _chrome_named(proc):
        return "cmdline"
    if session_id and _environ_has(proc, ENV_MARKER, session_id):
        return "env"
    return None


class ProcessTracker:
    """Everything one session knows about its processes.

    ``root`` is the session root directory (its path is the command-line
    marker), ``session_id`` the env marker's value.  ``exclude`` adds PIDs that
    must never be touched (the watchdog, for instance); the owner and its
    ancestors are always excluded.
    """

    def __init__(
        self, session_id: str, root: str, exclude: Iterable[int] = (), born_after: float = 0.0
    ) -> None:
        self.session_id = session_id
        self.root = root
        # Epoch seconds: a process created before the session started cannot
        # carry its markers, so its command line and environment are not read
        # (that is most of the process table, and most of discovery's cost).
        self.born_after = born_after
        self._recorded: dict[int, OwnedProcess] = {}
        self._leader: OwnedProcess | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[bytes]] = []  # other processes we started
        # Reentrant: a signal handler that tears the session down may run in a
        # thread that is inside record() or discover() right now.
        self._lock = threading.RLock()
        self._exclude = set(exclude)
        #: Processes the last :meth:`discover` did not examine: its budget ran out.
        self.unexamined = 0

    # -- read-only views (snapshots taken under the lock) -------------------
    @property
    def leader(self) -> OwnedProcess | None:
        """The process this session started and leads (chromedriver), if any."""
        return self._leader

    def processes(self) -> tuple[OwnedProcess, ...]:
        """Every process recorded so far (a snapshot)."""
        with self._lock:
            return tuple(self._recorded.values())

    def exclude(self, pid: int) -> None:
        """Never touch ``pid`` (the owner's watchdog, for instance)."""
        with self._lock:
            self._exclude.add(pid)

    # -- recording -----------------------------------------------------
    def adopt_leader(self, popen: subprocess.Popen[bytes], via: str = "started") -> OwnedProcess | None:
        """Record ``popen`` (chromedriver) as the process this session leads.

        ``via`` says how we know it: ``"started"`` (we spawned it), or
        ``"service"`` (adopt: Selenium's service spawned it in this process)."""
        self._popen = popen
        try:
            proc = psutil.Process(popen.pid)
            leader = OwnedProcess(popen.pid, proc.create_time(), proc.name(), via)
        except psutil.NoSuchProcess:
            popen.poll()
            return None
        with self._lock:
            self._leader = leader
            self._recorded[leader.pid] = leader
        return leader

    def adopt_child(self, popen: subprocess.Popen[bytes]) -> OwnedProcess | None:
        """Record another process this session started itself (the headless
        shell), reaped through its own ``Popen`` like the leader."""
        self._children.append(popen)
        try:
            proc = psutil.Process(popen.pid)
            owned = OwnedProcess(popen.pid, proc.create_time(), proc.name(), "started")
        except psutil.NoSuchProcess:
            popen.poll()
            return None
        self.record([owned])
        return owned

    def record(self, procs: Iterable[OwnedProcess]) -> None:
        with self._lock:
            for p in procs:
                self._recorded.setdefault(p.pid, p)

    def started_pids(self) -> list[int]:
        """PIDs of the processes this session spawned itself, not yet reaped."""
        pids = [self._leader.pid] if self._leader is not None and self._leader_unreaped() else []
        return pids + [p.pid for p in self._children if p.returncode is None]

    def wait_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the processes this session started itself
        to exit, and collect their exit status; True when none is left."""
        for popen in ([self._popen] if self._popen is not None else []) + self._children:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        return True

    def _leader_unreaped(self) -> bool:
        return self._popen is None or self._popen.returncode is None

    @property
    def excluded(self) -> set[int]:
        with self._lock:
            return _ancestors_of(os.getpid()) | self._exclude

    # -- discovery -----------------------------------------------------
    def discover(self, budget: Budget | None = None) -> dict[int, OwnedProcess]:
        """The union of every ownership key, in one pass; updates the record.

        Zombies are included (so that ours can be reaped); use
        ``OwnedProcess.is_running`` to tell them apart.  With ``budget``, the
        marker scan stops when it is spent; :attr:`unexamined` then says how
        many processes it did not look at (verification reports them).
        """
        rows = _platform.process_table()
        by_pid = {r.pid: r for r in rows}
        with self._lock:
            excluded = set(self._exclude)
            recorded = list(self._recorded.values())
        pid: int | None = os.getpid()  # the owner and its ancestors, from the same table
        while pid and pid not in excluded:
            excluded.add(pid)
            row = by_pid.get(pid)
            pid = row.ppid if row is not None else None
        table: dict[int, tuple[int, float, str]] = {}
        children: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            if r.pid in excluded:
                continue
            table[r.pid] = (r.ppid, r.create_time, r.name)
            children[r.ppid].append(r.pid)

        found: dict[int, OwnedProcess] = {}
        for rec in recorded:
            entry = table.get(rec.pid)
            if entry and _platform.same_birth(entry[1], rec.create_time):
                found[rec.pid] = rec

        # Process groups led by a process we started (chromedriver, the
        # headless shell: both in new sessions).  Its group id cannot be
        # reused while that process is unreaped, which holds as long as it
        # is in the table with its recorded identity: it is our child.
        groups = {pid: found[pid].create_time for pid in self.started_pids() if pid in found}
        scan = Bounded(rows, budget)
        for r in scan:
            if r.pid in found or r.pid not in table:
                continue
            ctime = r.create_time
            via = None
            if groups:
                pgrp = r.pgrp if r.pgrp is not None else _platform.process_group_of(r.pid)
                if pgrp in groups and not _platform.born_before(ctime, groups[pgrp]):
                    via = "group"
            # An empty marker would match every process: such a key is off.
            young = ctime + _BORN_SLACK_S >= self.born_after
            if via is None and young and not r.zombie and (self.root or self.session_id):
                via = _marker_of(r.pid, ctime, self.root, self.session_id)
            if via is not None:
                found[r.pid] = OwnedProcess(r.pid, ctime, r.name, via)

        # Descendants of anything ours are ours (a child is never older).
        stack = list(found)
        while stack:
            parent = found[stack.pop()]
            for child in children.get(parent.pid, ()):
                if child in found:
                    continue
                _ppid, ctime, name = table[child]
                if not _platform.born_before(ctime, parent.create_time):
                    found[child] = OwnedProcess(child, ctime, name, "descendant")
                    stack.append(child)

        self.unexamined = scan.left
        self.record(found.values())
        return found

    # -- signalling ----------------------------------------------------
    def kill_tree(
        self,
        procs: Sequence[OwnedProcess],
        grace_timeout: float,
        kill_timeout: float,
        while_dying: Callable[[], object] | None = None,
        group_kill: bool = False,
        budget: Budget | None = None,
    ) -> tuple[list[ProcessAction], list[ProcessAction]]:
        """SIGTERM, wait up to ``grace_timeout``, SIGKILL, wait ``kill_timeout``.

        ``while_dying`` is called once every SIGKILL is sent, before the wait
        (teardown starts removing the session dir there).  ``group_kill``
        first SIGKILLs the process group of each process this session
        started and has not reaped (chromedriver, the headless shell), in one
        system call each: signalling a dozen processes one by one takes
        10-100 ms on a loaded machine, because the first ones to die take
        the CPU; the per-process signals that follow find the group's
        members dying already.
        Stopped (SIGSTOPped) processes skip SIGTERM: it would only queue.
        ``grace_timeout=0`` sends SIGKILL at once.  With ``budget``, the
        signal loops stop when it is spent (see :class:`Bounded`); a process
        they did not reach is reported as a survivor.  Returns ``(actions,
        survivors)``; our own children are reaped, nobody else's.
        """
        excluded = self.excluded
        outcome: dict[int, Outcome] = {}
        live: list[OwnedProcess] = []
        polite: list[OwnedProcess] = []
        for p in procs:
            if p.pid in excluded:  # never the owner, whatever the markers say
                continue
            if not p.is_running():
                outcome[p.pid] = Outcome.ALREADY_EXITED
                continue
            live.append(p)
            if grace_timeout > 0 and not _is_stopped(p.pid):
                polite.append(p)

        asked = Bounded(polite, budget)
        for p in asked:
            res = _platform.signal_process(p.pid, p.create_time, force=False)
            if res is not SignalResult.SENT:
                outcome[p.pid] = _SIGNAL_OUTCOME[res]
        waiting = [p for p in polite[: len(polite) - asked.left] if p.pid not in outcome]
        if waiting:
            still = _platform.wait_gone([p.ident for p in waiting], grace_timeout)
            for p in waiting:
                if p.pid not in still:
                    outcome[p.pid] = Outcome.TERMINATED

        forced = [p for p in live if p.pid not in outcome]
        groups: dict[int, float] = {}  # group id -> its leader's create time
        if group_kill and _platform.HAVE_PROCESS_GROUPS:
            started = set(self.started_pids())
            for p in forced:
                if p.pid in started and p.via == "started":
                    res = _platform.kill_group(p.pid, p.create_time)
                    log.debug("process group %d: %s", p.pid, res.value)
                    if res is SignalResult.SENT:
                        groups[p.pid] = p.create_time
        killing = Bounded(forced, budget)
        for p in killing:
            res = _platform.signal_process(p.pid, p.create_time, force=True)
            if res is not SignalResult.SENT:
                outcome[p.pid] = _SIGNAL_OUTCOME[res]
        for p in killing.unreached():
            outcome[p.pid] = Outcome.SURVIVED
        if while_dying is not None:
            while_dying()
        waiting = [p for p in forced if p.pid not in outcome]
        # Members of the killed groups that were not in ``procs`` (spawned
        # since the last scan): dying, but "dead" means exited, so wait for
        # them too.  Their leaders are not reaped yet, so the ids still hold.
        waiting += self._group_members(groups, {p.pid for p in procs} | excluded)
        still = _platform.wait_gone([p.ident for p in waiting], kill_timeout) if waiting else set()
        for p in waiting:
            outcome[p.pid] = Outcome.SURVIVED if p.pid in still else Outcome.KILLED
        procs = list(procs) + [p for p in waiting if p.pid not in {q.pid for q in procs}]

        self.reap(procs, budget)
        actions = [ProcessAction(p.pid, p.name, outcome[p.pid], p.via) for p in procs if p.pid in outcome]
        survivors = [a for a in actions if a.outcome.survived]
        for a in actions:
            log.debug("%s pid=%d (%s, via %s)", a.outcome, a.pid, a.name, a.via)
        return actions, survivors

    def _group_members(self, groups: dict[int, float], known: set[int]) -> list[OwnedProcess]:
        """Running members of ``groups`` (group id -> leader create time) not in ``known``."""
        if not groups:
            return []
        oldest = min(groups.values())
        out = []
        for r in _platform.process_table():
            if r.pid in known or r.zombie or _platform.born_before(r.create_time, oldest):
                continue
            pgrp = r.pgrp if r.pgrp is not None else _platform.process_group_of(r.pid)
            if pgrp in groups and not _platform.born_before(r.create_time, groups[pgrp]):
                out.append(OwnedProcess(r.pid, r.create_time, r.name, "group"))
        self.record(out)
        return out

    def reap(self, procs: Iterable[OwnedProcess] = (), budget: Budget | None = None) -> list[int]:
        """Collect the exit status of our own children among ``procs`` and the
        recorded processes.  Scoped by PID and identity: never ``waitpid(-1)``,
        and never a PID whose create time is not the recorded one (it may now
        be another child of the owner, whose exit status is not ours)."""
        reaped = []
        popens = ([self._popen] if self._popen is not None else []) + self._children
        for popen in popens:
            if popen.poll() is not None:
                reaped.append(popen.pid)
        by_popen = {popen.pid for popen in popens}
        me = os.getpid()
        candidates = {p.pid: p for p in self.processes()}
        candidates.update((p.pid, p) for p in procs)
        for pid, p in Bounded(list(candidates.items()), budget):
            if pid in by_popen:
                continue
            try:
                proc = psutil.Process(pid)
                if proc.ppid() != me or not _platform.same_birth(proc.create_time(), p.create_time):
                    continue
            except psutil.Error:
                continue
            if _platform.reap_child(pid):
                reaped.append(pid)
        return reaped

    def zombie_children(self, budget: Budget | None = None) -> list[OwnedProcess]:
        """Our own children among the recorded processes that are zombies."""
        me = os.getpid()
        out = []
        for p in Bounded(self.processes(), budget):
            try:
                proc = psutil.Process(p.pid)
                if (
                    _platform.same_birth(proc.create_time(), p.create_time)
                    and proc.ppid() == me
                    and proc.status() == psutil.STATUS_ZOMBIE
                ):
                    out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out


_SIGNAL_OUTCOME = {
    SignalResult.GONE: Outcome.ALREADY_EXITED,
    SignalResult.REUSED: Outcome.PID_REUSED,
    SignalResult.DENIED: Outcome.DENIED,
}


def _is_stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Listener:
    """A socket listening on one of the session's ports."""

    port: int
    pid: int | None  # None: the OS would not tell us (another user's socket)


def find_listeners(ports: Iterable[int]) -> list[Listener]:
    """TCP listeners on exactly these ports (never a range)."""
    wanted = set(ports)
    if not wanted:
        return []
    # Cheap first: is anything listening there at all?  Mapping sockets to
    # processes means reading every process's fd table.
    listening = _platform.listening_ports(wanted)
    if listening is not None:
        wanted &= listening
        if not wanted:
            return []
    out = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # macOS without root
        return []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in wanted:
            out.append(Listener(c.laddr.port, c.pid))
    return out
