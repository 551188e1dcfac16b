"""The platform interface: everything that differs between operating systems.

This is the only module that looks at ``sys.platform``/``os.name``.  It picks
one backend at import time (``_linux``, ``_posix`` or ``_windows``) and
re-exports the functions below.  Every backend returns our own types and
raises our own errors, never a bare errno; a process that is already gone is
reported as :attr:`SignalResult.GONE`, not as an error.

The documented functions (each backend provides all of them):

``signal_process(pid, create_time, force) -> SignalResult``
    Send SIGTERM (``force=False``) or SIGKILL (``force=True``) to ``pid``, but
    only if the process still has ``create_time`` (so a reused PID is never
    hit).  On Linux this goes through a pidfd, which closes the window between
    the check and the signal.

``wait_gone(procs, timeout) -> set[int]``
    Wait until every ``(pid, create_time)`` in ``procs`` has stopped running
    (exited, zombie, or PID reused) or ``timeout`` seconds passed; return the
    PIDs still running.  Waits on the event itself where the OS allows (pidfd).

``is_running(pid, create_time) -> bool``
    True if that very process still runs.  A zombie does not count, unless
    other threads of it still run or exit (its main thread exited first).

``reap_child(pid) -> bool``
    Collect the exit status of ``pid`` if it is our own child and has exited.
    Scoped by PID: never ``waitpid(-1)``, which would steal the exit status
    of children that other code in the owner process is waiting for.

``new_session_popen_kw() -> dict``
    ``subprocess.Popen`` keywords that start a child in a new session/process
    group, so the group can be found (and signalled) as a whole.

``process_group_of(pid) -> int | None``
    The process group id, or None where the OS has no such thing.

``kill_group(pid, create_time) -> SignalResult``
    SIGKILL the whole process group led by ``pid`` in one system call, if
    ``pid`` is still the process born at ``create_time``.  Only for a group
    leader that is the caller's own unreaped child (chromedriver, the headless
    shell): until it is reaped its PID, and so the group id, cannot be reused.
    Windows (no process groups) returns ``SignalResult.DENIED``.

``create_time_offset() -> float``
    Seconds to add to a create time to compare it with a file's times (Linux
    counts create times from a boot time in whole seconds; elsewhere 0).

``process_table() -> list[ProcRow]``
    One row per process (pid, ppid, process group, create time, name,
    zombie), read in one pass.  Linux reads ``/proc/<pid>/stat`` once per
    process (about 10x cheaper than psutil's per-attribute reads); the other
    backends go through ``psutil.process_iter`` and leave ``pgrp`` None.

``os_find_by_marker(marker) -> list[int]``
    PIDs of the current user's processes whose command line contains
    ``marker``, found with the OS's own tool (``pgrep -f``), or ``[]`` when no
    such tool exists.

``os_kill_pids(pids) -> list[str]``
    Force-kill PIDs with the OS's own tool (``taskkill /F /T /PID`` on
    Windows).  POSIX backends return ``["unsupported"]``: there we signal
    through :func:`signal_process`, which is identity-checked.

``can_use_chrome_sandbox() -> bool``
    Whether Chrome's sandbox can work here (not root, user namespaces or the
    setuid helper available).  When False the launcher adds ``--no-sandbox``.

``dev_shm_too_small() -> bool``
    Whether ``/dev/shm`` is too small for Chrome (Docker's 64 MiB default);
    when True the launcher adds ``--disable-dev-shm-usage``.

``running_as_init() -> bool``
    Whether this process is PID 1 (a container with no init), in which case
    orphans re-parent to us and nobody else reaps them.

``same_user(proc) -> bool``
    Whether a ``psutil.Process`` belongs to the user running this code.

``listening_ports(ports) -> set[int] | None``
    Which of ``ports`` have a TCP listener (Linux: sock_diag netlink, else
    ``/proc/net/tcp*``; no process scan), or None where that cannot be told
    cheaply.

``unix_socket_paths() -> set[str]``
    Paths of bound AF_UNIX sockets (Linux: ``/proc/net/unix``); used to tell
    whether a Chromium singleton dir is still in use.  Empty where unknown.

``lock_file(fd, blocking) -> bool`` / ``unlock_file(fd)``
    An advisory whole-file lock that the kernel drops when the holder dies.

``identity(pid, create_time) -> Identity``
    Whether ``pid`` is still the process born at ``create_time``: MATCH,
    GONE, REUSED, or UNKNOWN when its create time cannot be read
    (AccessDenied).  The one rule for UNKNOWN: never signal it, never count
    it as gone (see ``_types``).

``same_birth(a, b) -> bool`` / ``born_before(a, b) -> bool``
    The one comparison of create times, within ``CREATE_TIME_TOLERANCE``
    (the 10 ms resolution of ``/proc``).

Capability flags: ``HAVE_PROCESS_GROUPS``, ``HAVE_PIDFD``, ``HAVE_PGREP``;
``UNIX_SOCKET_PATH_MAX``, the longest AF_UNIX path (None where unused).
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "SignalResult",
    "Identity",
    "identity",
    "same_birth",
    "born_before",
    "CREATE_TIME_TOLERANCE",
    "ProcRow",
    "process_table",
    "kill_group",
    "PLATFORM",
    "HAVE_PROCESS_GROUPS",
    "HAVE_PIDFD",
    "signal_process",
    "wait_gone",
    "is_running",
    "reap_child",
    "new_session_popen_kw",
    "process_group_of",
    "os_find_by_marker",
    "os_kill_pids",
    "can_use_chrome_sandbox",
    "create_time_offset",
    "dev_shm_too_small",
    "running_as_init",
    "same_user",
    "lock_file",
    "listening_ports",
    "unix_socket_paths",
    "unlock_file",
    "HAVE_PGREP",
    "UNIX_SOCKET_PATH_MAX",
]


from ._types import (  # noqa: E402
    CREATE_TIME_TOLERANCE,
    Identity,
    ProcRow,
    SignalResult,
    born_before,
    identity,
    same_birth,
)

if sys.platform.startswith("linux"):
    PLATFORM = "linux"
    from . import _linux as _backend
elif os.name == "posix":
    PLATFORM = "posix"
    from . import _posix as _backend
elif sys.platform == "win32":
    PLATFORM = "windows"
    from . import _windows as _backend
else:  # pragma: no cover
    raise NotImplementedError(f"embassy_cleanup does not support platform {sys.platform!r}")

# The backend's implementation of each documented name, chosen once.
HAVE_PGREP = _backend.HAVE_PGREP
HAVE_PIDFD = _backend.HAVE_PIDFD
HAVE_PROCESS_GROUPS = _backend.HAVE_PROCESS_GROUPS
UNIX_SOCKET_PATH_MAX = _backend.UNIX_SOCKET_PATH_MAX
can_use_chrome_sandbox = _backend.can_use_chrome_sandbox
create_time_offset = _backend.create_time_offset
dev_shm_too_small = _backend.dev_shm_too_small
is_running = _backend.is_running
kill_group = _backend.kill_group
listening_ports = _backend.listening_ports
lock_file = _backend.lock_file
new_session_popen_kw = _backend.new_session_popen_kw
os_find_by_marker = _backend.os_find_by_marker
os_kill_pids = _backend.os_kill_pids
process_group_of = _backend.process_group_of
process_table = _backend.process_table
reap_child = _backend.reap_child
running_as_init = _backend.running_as_init
same_user = _backend.same_user
signal_process = _backend.signal_process
unix_socket_paths = _backend.unix_socket_paths
unlock_file = _backend.unlock_file
wait_gone = _backend.wait_gone
