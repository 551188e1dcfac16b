"""Linux backend: the POSIX one, plus pidfds and Chrome's sandbox checks.

A pidfd (``pidfd_open(2)``, Linux 5.3+) refers to one process for its whole
life, so once we hold it and have checked its create time, a reused PID can
no longer be hit; it also becomes readable when the process exits, which lets
us wait on the exit itself instead of polling.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import stat
import struct
import time
from typing import Iterable, Sequence

import psutil

from ._posix import (
    HAVE_PGREP,
    HAVE_PROCESS_GROUPS,
    _identity_matches,
    _threads_left,
    is_running,
    kill_group,
    lock_file,
    new_session_popen_kw,
    os_find_by_marker,
    os_kill_pids,
    process_group_of,
    reap_child,
    running_as_init,
    same_user,
    unlock_file,
)
from ._posix import signal_process as _posix_signal_process
from ._posix import wait_gone as _posix_wait_gone
from ._types import ProcRow, SignalResult, same_birth

__all__ = [
    "HAVE_PGREP",
    "HAVE_PIDFD",
    "HAVE_PROCESS_GROUPS",
    "UNIX_SOCKET_PATH_MAX",
    "can_use_chrome_sandbox",
    "dev_shm_too_small",
    "is_running",
    "kill_group",
    "process_table",
    "lock_file",
    "new_session_popen_kw",
    "os_find_by_marker",
    "os_kill_pids",
    "process_group_of",
    "reap_child",
    "running_as_init",
    "same_user",
    "signal_process",
    "listening_ports",
    "unix_socket_paths",
    "unlock_file",
    "wait_gone",
]

# Chrome needs at least this much /dev/shm; Docker gives 64 MiB by default.
_MIN_DEV_SHM_BYTES = 512 * 1024 * 1024


@functools.cache
def _can_use_pidfd() -> bool:
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS on old kernels, EPERM under some seccomp filters
        return False
    return True


HAVE_PIDFD = _can_use_pidfd()
#: Longest usable AF_UNIX socket path (sun_path less its NUL byte).
UNIX_SOCKET_PATH_MAX: int | None = 107


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    """``btime`` from /proc/stat, read afresh as psutil reads it for every
    ``create_time()``: btime moves when the wall clock is stepped (NTP, a
    resumed VM or laptop), and a create time computed with an older value
    would no longer match psutil's, so every identity check would fail."""
    return psutil.boot_time()


def create_time_offset() -> float:
    """Seconds to add to a create time to compare it with a file's times.

    ``btime`` counts whole seconds, so create times run up to a second behind
    the wall clock; the exact boot time is now minus ``/proc/uptime``."""
    try:
        with open("/proc/uptime", "rb") as fh:
            up = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, time.time() - up - _boot_time())


_COMM_MAX = 15  # the kernel cuts a process's name (comm) to 15 bytes


def _full_name(pid: int, comm: str) -> str:
    """``comm``, or the executable's file name when ``comm`` is that name cut
    to 15 bytes (``chrome_crashpa`` -> ``chrome_crashpad_handler``): one
    ``readlink`` only for names that long."""
    if len(comm) < _COMM_MAX:
        return comm
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return comm
    return exe if exe.startswith(comm) else comm


def _read_stat(pid: int, boot_time: float | None = None) -> ProcRow | None:
    """One process's row from ``/proc/<pid>/stat`` (None if it is gone);
    ``boot_time`` is read when not given."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ... starttime(22) ...": comm may hold spaces and ')'
    head, _, tail = data.rpartition(b")")
    fields = tail.split()
    if len(fields) < 20:
        return None
    return ProcRow(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        create_time=int(fields[19]) / _CLOCK_TICKS + (_boot_time() if boot_time is None else boot_time),
        name=_full_name(pid, head.partition(b"(")[2].decode("utf-8", "replace")),
        zombie=fields[0] in (b"Z", b"X") and not _threads_left(pid),
    )


def process_table() -> list[ProcRow]:
    """Every process, from one read of ``/proc/<pid>/stat`` each.

    ``name`` is the kernel's ``comm``, lengthened from the executable's
    path when the kernel cut it to 15 bytes."""
    rows = []
    boot_time = _boot_time()  # once a table: one clock for every row
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            row = _read_stat(int(entry), boot_time)
            if row is not None:
                rows.append(row)
    return rows


def _identity(pid: int, create_time: float) -> bool | None:
    """Like ``_posix._identity_matches`` (a zombie matches; None when gone),
    from one read of ``/proc/<pid>/stat``."""
    row = _read_stat(pid)
    if row is None:
        return None if not os.path.exists(f"/proc/{pid}") else _identity_matches(pid, create_time)
    return same_birth(row.create_time, create_time)


def _open_checked(pid: int, create_time: float) -> tuple[int | None, SignalResult | None]:
    """A pidfd for ``pid`` if it is still the process born at ``create_time``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None, SignalResult.GONE
    except OSError:
        return None, SignalResult.DENIED
    # Check identity *after* opening: from now on the fd pins that process.
    match = _identity(pid, create_time)
    if match:
        return fd, None
    os.close(fd)
    return None, SignalResult.GONE if match is None else SignalResult.REUSED


def signal_process(pid: int, create_time: float, force: bool) -> SignalResult:
    if not HAVE_PIDFD:
        return _posix_signal_process(pid, create_time, force)
    fd, result = _open_checked(pid, create_time)
    if fd is None:
        assert result is not None
        return result
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        return SignalResult.GONE
    except PermissionError:
        return SignalResult.DENIED
    finally:
        os.close(fd)
    return SignalResult.SENT


def wait_gone(procs: Sequence[tuple[int, float]], timeout: float) -> set[int]:
    if not HAVE_PIDFD:
        return _posix_wait_gone(procs, timeout)
    deadline = time.monotonic() + max(0.0, timeout)
    fds: dict[int, int] = {}
    alive: set[int] = set()
    unpinned: list[tuple[int, float]] = []  # pidfd_open failed (EMFILE...): poll those
    try:
        for pid, ct in procs:
            fd, result = _open_checked(pid, ct)
            if fd is None:
                if result is SignalResult.DENIED:
                    unpinned.append((pid, ct))
                continue
            fds[fd] = pid
            alive.add(pid)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        while alive:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _event in poller.poll(remaining * 1000):
                poller.unregister(fd)
                pid = fds[fd]
                alive.discard(pid)
        if unpinned:
            alive |= _posix_wait_gone(unpinned, max(0.0, deadline - time.monotonic()))
        return alive
    finally:
        for fd in fds:
            os.close(fd)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _setuid_sandbox_helper() -> bool:
    for path in ("/usr/lib/chromium/chrome-sandbox", "/opt/google/chrome/chrome-sandbox"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_uid == 0 and st.st_mode & stat.S_ISUID:
            return True
    return False


@functools.cache
def can_use_chrome_sandbox() -> bool:
    """Chrome refuses to sandbox as root; otherwise it needs user namespaces
    (or the setuid ``chrome-sandbox`` helper).  We read the sysctls that turn
    unprivileged user namespaces off (Debian's ``unprivileged_userns_clone``,
    ``max_user_namespaces`` in containers, Ubuntu's AppArmor restriction)."""
    if os.geteuid() == 0:
        return False
    userns = (
        _read_int("/proc/sys/kernel/unprivileged_userns_clone") != 0
        and _read_int("/proc/sys/user/max_user_namespaces") != 0
        and _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") != 1
    )
    return userns or _setuid_sandbox_helper()


@functools.cache
def dev_shm_too_small() -> bool:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return True
    return st.f_blocks * st.f_frsize < _MIN_DEV_SHM_BYTES


def unix_socket_paths() -> set[str]:
    """Bound AF_UNIX socket paths, from ``/proc/net/unix`` (last column)."""
    out: set[str] = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split(None, 7)
                if len(parts) == 8 and parts[7].startswith("/"):
                    out.add(parts[7].rstrip("\n"))
    except OSError:
        pass
    return out


def listening_ports(ports: Iterable[int]) -> set[int] | None:
    """Which of ``ports`` have a TCP listener, or None if it cannot be told.

    Asked of the kernel through sock_diag netlink for listening sockets only,
    which walks just those (a fraction of a millisecond); where that is not
    allowed, read from ``/proc/net/tcp{,6}``, which lists every socket of the
    namespace (about 10 ms on the test VM, whatever the socket count)."""
    wanted = set(ports)
    try:
        return _diag_listening(wanted)
    except OSError:  # EPERM under some seccomp filters, a kernel without sock_diag
        return _proc_listening(wanted)


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_TCP_LISTEN = 10


def _diag_listening(wanted: set[int]) -> set[int]:
    found: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            # inet_diag_req_v2: family, protocol, extensions, pad, state mask, and a
            # zeroed inet_diag_sockid (48 bytes): every listening socket of the family.
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN) + bytes(48)
            header = _NLMSG_HEADER.pack(16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, seq, 0)
            sock.send(header + req)
            done = False
            while not done:
                data = sock.recv(65536)
                if not data:
                    break
                off = 0
                while off + 16 <= len(data):
                    length, kind = _NLMSG_HEADER.unpack_from(data, off)[:2]
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + 16)[0]
                        raise OSError(code, os.strerror(code))
                    # inet_diag_msg: family, state, timer, retrans, then the source port
                    port = struct.unpack_from("!H", data, off + 16 + 4)[0]
                    if port in wanted:
                        found.add(port)
                    off += (length + 3) & ~3
    return found


def _proc_listening(wanted: set[int]) -> set[int] | None:
    found: set[int] = set()
    try:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(name, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split(None, 4)
                    if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
                        port = int(parts[1].rsplit(":", 1)[1], 16)
                        if port in wanted:
                            found.add(port)
    except (OSError, ValueError, IndexError):
        return None
    return found
