"""Ownership records: ``session.json`` and the owner lock.

Each session root holds ``session.json`` (owner pid and create time, session
id, pids, ports) and ``owner.lock``, which the owner keeps locked
(``flock``) for the session's whole life.  The kernel drops that lock the
moment the owner dies, however it dies, so liveness is decided without
looking at PIDs at all, and PID reuse cannot fool it: a session whose lock
can be taken has no live owner.

A record is only ever a hint (see :func:`load_record`): the stale sweep
(``_sweep``) decides what is a session's by the ownership rule of
``_ownership``, never by a recorded PID alone.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from . import _platform
from ._dirs import free_space_note
from ._errors import LaunchError
from ._ownership import ROOT_PREFIX

log = logging.getLogger("embassy_cleanup")

RECORD_NAME = "session.json"
LOCK_NAME = "owner.lock"
#: A root with no lock file yet may be a session being created right now;
#: only one older than this is treated as a crash leftover.
YOUNG_ROOT_S = 30.0

#: The largest ``session.json`` we read, and the most PIDs we take from one.
MAX_RECORD_BYTES = 1 << 20
MAX_RECORD_PIDS = 4096
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class OwnerLock:
    """The owner's lock on one session root, held until :meth:`release`.

    ``owner.lock`` appears already locked: the lock is taken on a private
    temp file that is then hard-linked into place, so a sweep can never find
    the file unlocked while its session is starting.
    """

    def __init__(self, root: str) -> None:
        try:
            self._take(root)
        except OSError as err:  # a full disk, a read-only dir
            raise LaunchError(
                f"cannot create the owner lock in {root!r}: {err.strerror or err}{free_space_note(root)}; "
                "free some space or pass temp_root= on another file system",
                path=root,
            ) from err

    def _take(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        tmp = os.path.join(root, f".{LOCK_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        try:
            if not _platform.lock_file(fd, blocking=False):  # pragma: no cover - a fresh file
                raise RuntimeError(f"{tmp} is locked by another process")
            os.link(tmp, self.path)
        except FileExistsError:
            # There is one already (a released or crashed owner's): take it
            # if nobody holds it.
            os.close(fd)
            fd = os.open(self.path, os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _platform.lock_file(fd, blocking=False):
                os.close(fd)
                raise RuntimeError(f"{self.path} is locked by another process") from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        self.fd: int | None = fd

    def forget(self) -> None:
        """Close this copy of the fd without unlocking (a fork()ed child's copy:
        the parent's lock stays held)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def release(self) -> None:
        """Unlock and close: the owner is done with the session."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                _platform.unlock_file(fd)  # explicit: a stray fork()ed copy must not hold it
            finally:
                os.close(fd)


def write_record(root: str, data: dict[str, Any]) -> None:
    """Write ``session.json`` atomically (a reader never sees half of it).

    A full disk or an unwritable dir raises :class:`LaunchError` naming the
    path and the free space; the half-written temp file is removed.
    """
    tmp = os.path.join(root, f".{RECORD_NAME}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, os.path.join(root, RECORD_NAME))
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LaunchError(
            f"cannot write the session record in {root!r}: {err.strerror or err}"
            f"{free_space_note(root)}; free some space or pass temp_root= on another file system",
            path=root,
        ) from err


def _read_regular(path: str, limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened non-blocking and without following symlinks, so a FIFO, a device
    or a link planted under the record's name never blocks or misleads us."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)[:limit]
    except OSError:
        return None
    finally:
        os.close(fd)


def _finite_positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _valid_pid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 < value < 2**22


def load_record(root: str) -> tuple[dict[str, Any], list[str]]:
    """The record's valid fields, and what was wrong with the rest.

    A record is a hint written by a process that may be dead, or forged by
    anyone who can write to the temp dir: every field is checked, its size
    is capped (:data:`MAX_RECORD_BYTES`, :data:`MAX_RECORD_PIDS`), and a bad
    field is dropped and named, never trusted and never fatal."""
    raw = _read_regular(os.path.join(root, RECORD_NAME), MAX_RECORD_BYTES)
    if raw is None:
        return {}, []
    try:
        data = json.loads(raw)
    except ValueError:
        return {}, ["session.json is not valid JSON"]
    if not isinstance(data, dict):
        return {}, ["session.json is not an object"]
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key in ("session_id", "root"):
        if isinstance(data.get(key), str):
            out[key] = data[key]
    if _valid_pid(data.get("owner_pid")):
        out["owner_pid"] = data["owner_pid"]
    for key in ("owner_create_time", "created"):
        if _finite_positive(data.get(key)):
            out[key] = float(data[key])
    pids = data.get("pids", [])
    if isinstance(pids, list):
        good = [
            [p[0], float(p[1]), p[2]]
            for p in pids[:MAX_RECORD_PIDS]
            if isinstance(p, list)
            and len(p) == 3
            and _valid_pid(p[0])
            and _finite_positive(p[1])
            and isinstance(p[2], str)
        ]
        if len(good) < len(pids):
            problems.append(
                f"{len(pids) - len(good)} of {len(pids)} recorded process(es) invalid or over the cap"
            )
        out["pids"] = good
    ports = data.get("ports", [])
    if isinstance(ports, list):
        out["ports"] = [p for p in ports[:64] if _valid_pid(p) and p < 65536]
    return out, problems


def read_record(root: str) -> dict[str, Any]:
    """The record's valid fields (see :func:`load_record`); ``{}`` when missing."""
    return load_record(root)[0]


def session_id_of(root: str) -> str | None:
    name = os.path.basename(root.rstrip(os.sep))
    if not name.startswith(ROOT_PREFIX):
        return None
    sid = name[len(ROOT_PREFIX) :]
    return sid if sid and all(c in "0123456789abcdef" for c in sid) else None


@dataclass(frozen=True)
class Candidate:
    """A session root of ours found in a temp dir."""

    root: str
    session_id: str


def find_roots(temp_root: str | None = None) -> list[Candidate]:
    """Session roots in ``temp_root`` that are real dirs owned by us."""
    base = temp_root if temp_root is not None else tempfile.gettempdir()
    out = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in names:
        if not name.startswith(ROOT_PREFIX):
            continue
        root = os.path.join(base, name)
        sid = session_id_of(root)
        if sid is None:
            continue
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # symlinks included: never followed
            continue
        if uid is not None and st.st_uid != uid:  # another user's: not ours to judge
            continue
        out.append(Candidate(root, sid))
    return out


class Owner(enum.Enum):
    """What the owner lock of a session root says about its owner."""

    DEAD = "dead"  # we hold its lock now: nobody else will touch the session
    ALIVE = "alive"  # the lock is held: a live owner (never touched)
    NO_LOCK = "no lock"  # no lock file: a session being created, or one that crashed first
    INVALID = "invalid"  # the lock is not a regular file of ours (a symlink, a FIFO): never trusted


@contextlib.contextmanager
def dead_owner_lock(root: str) -> Iterator[Owner]:
    """Take the owner lock of ``root`` if its owner is dead, for the ``with`` block.

    Yields :attr:`Owner.DEAD` while the lock is held (released at the end of
    the block), or what else the lock says.  An ``owner.lock`` that is a
    symlink or not a regular file is :attr:`Owner.INVALID`: the dir is not
    a live session's (a live owner's lock is a regular file it created), but
    nothing of it is trusted either."""
    path = os.path.join(root, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
    except FileNotFoundError:
        yield Owner.NO_LOCK
        return
    except OSError:
        yield Owner.INVALID if os.path.lexists(path) else Owner.NO_LOCK
        return
    try:
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            yield Owner.INVALID
            return
        if not _platform.lock_file(fd, blocking=False):
            yield Owner.ALIVE
            return
        # Another sweeper may have locked, swept and deleted this file between
        # our open() and our lock: then we hold a lock on a file that is gone.
        try:
            held, now = os.fstat(fd), os.lstat(path)
            same = held.st_nlink > 0 and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
        except OSError:
            same = False
        yield Owner.DEAD if same else Owner.ALIVE
    finally:
        os.close(fd)
