"""Directories: safe removal, and what we know about Chromium's temp-dir litter.

One home for both, so teardown, the sweep, ``clean``, adopt, the Grid node
cleaner and the pytest plugin agree on what they may delete:

* :func:`remove_tree` never follows a symlink and never removes a dir owned
  by another user;
* Chromium leaves two kinds of dirs in a temp dir, even after a correct
  ``driver.quit()``: chromedriver's temp profile (:data:`CHROMEDRIVER_PROFILE`)
  and the browser's singleton dir (:data:`SINGLETON_DIR`, holding only
  ``SingletonSocket``/``SingletonCookie``/``SingletonLock``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from typing import Mapping

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


def free_space_note(path: str) -> str:
    """``" (N MiB free)"`` for the file system holding ``path``, or ``""``."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return ""
    return f" ({st.f_bavail * st.f_frsize / 2**20:.0f} MiB free on that file system)"
