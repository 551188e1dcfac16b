"""Directories: safe removal, and what we know about Chromium's temp-dir litter.

One home for both, so teardown, the sweep, ``clean``, adopt, the Grid node
cleaner and the pytest plugin agree on what they may delete:

* :func:`remove_tree` never follows a symlink and never removes a dir owned
  by another user;
* Chromium leaves two kinds of dirs in a temp dir, even after a correct
  ``driver.quit()``: chromedriver's temp profile (:data:`CHROMEDRIVER_PROFILE`)
  and the browser's singleton dir (:data:`SINGLETON_DIR`, holding only
  ``SingletonSocket``/``SingletonCookie``/``SingletonLock``);
* chromedriver also makes a second, empty scoped dir (for extensions) that
  nothing names: :func:`find_scratch_dir` tells it apart by when it was made,
  and :class:`KnownEmptyDir` removes it only while it is still that dir.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Iterable, Mapping

#: The temp profile chromedriver creates when no ``--user-data-dir`` is given
#: (``scoped_dir``; older versions and Chrome-branded builds use the dotted
#: ``.org.chromium.Chromium.XXXXXX`` / ``.com.google.Chrome.XXXXXX`` names).
CHROMEDRIVER_PROFILE = re.compile(
    r"^((org\.chromium\.Chromium|com\.google\.Chrome)\.scoped_dir|\.(org\.chromium\.Chromium|com\.google\.Chrome))"
    r"\.\w{6}$"
)
#: Chromium's singleton dir (``SingletonSocket`` and ``SingletonCookie``) in the temp dir.
SINGLETON_DIR = re.compile(r"^\.?(org\.chromium\.Chromium|com\.google\.Chrome)\.\w{6}$")
SINGLETON_FILES = frozenset({"SingletonSocket", "SingletonCookie", "SingletonLock"})
#: The dir in a session root that holds one dir per open browser context
#: (``ChromePool(isolation="context")``): the context's download dir, named by
#: its 12-hex-digit id, there from its creation until its teardown removes it.
CONTEXTS_DIR = "contexts"


def remove_tree(path: str, attempts: int = 5) -> str | None:
    """Remove ``path`` without following symlinks; retry while files appear.

    A symlink where a dir was expected is removed as a link.  A dir owned by
    another user is left alone.  Returns None on success, else what went wrong.
    """
    last: str | None = None
    for _ in range(attempts):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):  # a link where our dir was: remove the link only
            os.unlink(path)
            return None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return f"{path!r} is owned by uid {st.st_uid}, not us: left alone"
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as err:  # ENOTEMPTY when a late writer adds files
            last = f"{type(err).__name__}: {err}"
    return last if os.path.lexists(path) else None


def temp_dirs(env: Mapping[str, str]) -> set[str]:
    """The temp dirs a process with environment ``env`` (or this one) may use."""
    dirs = {tempfile.gettempdir(), "/tmp"}
    for key in ("TMPDIR", "TMP", "TEMP"):
        for source in (env, os.environ):
            if source.get(key):
                dirs.add(source[key])
    return {os.path.realpath(d) for d in dirs}


def profile_origin(path: str, driver_env: Mapping[str, str]) -> str:
    """``"chromedriver"`` when ``path`` is a temp profile chromedriver made
    (its name pattern, directly in a temp dir chromedriver could use), else
    ``"user"``."""
    real = os.path.realpath(path)
    if CHROMEDRIVER_PROFILE.match(os.path.basename(real)) and os.path.dirname(real) in temp_dirs(driver_env):
        return "chromedriver"
    return "user"


def singleton_dir_of(profile: str) -> str | None:
    """Chromium's singleton dir in the temp dir, from the profile's
    ``SingletonSocket`` link; None unless it looks exactly like one."""
    try:
        target = os.readlink(os.path.join(profile, "SingletonSocket"))
    except OSError:
        return None
    parent = os.path.dirname(target)
    if not os.path.isabs(parent) or not SINGLETON_DIR.match(os.path.basename(parent)):
        return None
    return parent


def remove_singleton_dir(path: str) -> tuple[bool, str | None]:
    """Remove ``path`` if it holds only Chromium's singleton files.
    Returns ``(removed, problem)``."""
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return False, None
    except OSError as err:
        return False, f"cannot list {path!r}: {err.strerror or err}"
    if not names <= SINGLETON_FILES:
        return False, f"{path!r} holds more than Chromium's singleton files: left alone"
    problem = remove_tree(path)
    return problem is None, problem


@dataclass(frozen=True)
class KnownEmptyDir:
    """An empty dir known by its identity when it was found: device, inode and
    ctime (a dir made again under the same name may get the same inode back,
    not the same ctime).

    :meth:`remove` removes it only while the path is still that dir, still
    ours and still empty (``os.rmdir`` removes nothing else), so a dir made
    under the same name since, or one someone wrote into, is left alone.
    """

    path: str
    dev: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> KnownEmptyDir:
        return cls(path, st.st_dev, st.st_ino, st.st_ctime_ns)

    def to_list(self) -> list[str | int]:
        """The form a watchdog record carries: ``[path, dev, ino, ctime_ns]``."""
        return [self.path, self.dev, self.ino, self.ctime_ns]

    def _same(self) -> os.stat_result | None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino, st.st_ctime_ns) != (
            self.dev,
            self.ino,
            self.ctime_ns,
        ):
            return None
        return st

    def still_there(self) -> bool:
        """The same dir, still empty: what verification counts as left."""
        try:
            return self._same() is not None and not os.listdir(self.path)
        except OSError:
            return False

    def remove(self) -> tuple[bool, str | None]:
        """Returns ``(removed, problem)``; ``problem`` is None when there was nothing to do."""
        st = self._same()
        if st is None:
            if os.path.lexists(self.path):
                return False, f"{self.path!r} is not the dir found at adopt time any more: left alone"
            return False, None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return False, f"{self.path!r} is owned by uid {st.st_uid}, not us: left alone"
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return False, None
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False, f"{self.path!r} is not empty any more: left alone"
            return False, f"{self.path!r}: {err.strerror or err}"
        return True, None


#: How far file-system and process timestamps may disagree (both tick in
#: coarse steps of a few ms).
_STAMP_SLACK_S = 0.05


def find_scratch_dir(
    parents: Iterable[str], profile: str, made_after: float, made_before: float
) -> tuple[KnownEmptyDir | None, str | None]:
    """chromedriver's second, empty scoped dir: the one empty dir of ours named
    like :data:`CHROMEDRIVER_PROFILE` in ``parents``, other than ``profile``,
    made between ``made_after`` (chromedriver's start) and ``made_before``
    (the browser's start: chromedriver makes both dirs, then starts it).

    An empty dir was never written to, so its ctime is when it was made.
    Returns ``(dir, None)``, ``(None, why)`` when it cannot be told apart
    (two such dirs), or ``(None, None)`` when there is none.
    """
    mine = os.path.realpath(profile)
    found: list[KnownEmptyDir] = []
    for parent in sorted(set(parents)):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            path = os.path.join(parent, name)
            if not CHROMEDRIVER_PROFILE.match(name) or os.path.realpath(path) == mine:
                continue
            try:
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode) or os.listdir(path):
                    continue
            except OSError:
                continue
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                continue
            if made_after - _STAMP_SLACK_S <= st.st_ctime <= made_before + _STAMP_SLACK_S:
                found.append(KnownEmptyDir.of(path, st))
    if len(found) > 1:
        paths = ", ".join(d.path for d in found)
        return None, f"{len(found)} empty chromedriver scoped dirs were made while it started ({paths}): kept"
    return (found[0] if found else None), None


def free_space_note(path: str) -> str:
    """``" (N MiB free)"`` for the file system holding ``path``, or ``""``."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return ""
    return f" ({st.f_bavail * st.f_frsize / 2**20:.0f} MiB free on that file system)"
