"""The platform layer on real processes: signals, waiting, reaping, locks and
the capability checks.  The POSIX backend's own signal/wait functions are run
too where the host backend replaces them (Linux: pidfds)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from embassy_cleanup import _platform
from embassy_cleanup._platform import SignalResult
from tests import _helpers as h

pytestmark = pytest.mark.skipif(os.name != "posix", reason="exercises the POSIX backends")

if os.name == "posix":
    from embassy_cleanup._platform import _posix

    BACKENDS = [pytest.param(_platform, id="host"), pytest.param(_posix, id="posix")]
else:  # pragma: no cover
    BACKENDS = []


def identity(popen: subprocess.Popen) -> tuple[int, float]:
    return popen.pid, psutil.Process(popen.pid).create_time()


def is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("force", [False, True], ids=["term", "kill"])
def test_signal_process_should_report_a_gone_pid_as_gone(backend, force, spawn):
    child = spawn()
    pid, ct = identity(child)
    child.kill()
    child.wait()

    assert backend.signal_process(pid, ct, force) is SignalResult.GONE


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_process_should_send_to_the_right_process(backend, spawn):
    child = spawn()
    pid, ct = identity(child)

    assert backend.signal_process(pid, ct, force=False) is SignalResult.SENT

    assert child.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_process_should_refuse_a_pid_with_another_create_time(backend, spawn):
    child = spawn()
    pid, ct = identity(child)

    assert backend.signal_process(pid, ct + 5.0, force=True) is SignalResult.REUSED

    assert not h.wait_until(lambda: child.poll() is not None, timeout=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_gone_should_return_the_pids_still_running_after_the_timeout(backend, spawn):
    a, b = spawn(), spawn()
    procs = [identity(a), identity(b)]

    assert backend.wait_gone(procs, 0.05) == {a.pid, b.pid}


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_gone_should_return_nothing_once_they_exited(backend, spawn):
    a, b = spawn(), spawn()
    procs = [identity(a), identity(b)]
    b.kill()
    b.wait()
    a.kill()  # left unreaped: a zombie counts as gone

    assert backend.wait_gone(procs, 10.0) == set()
    assert is_zombie(a.pid)


@pytest.mark.parametrize("backend", BACKENDS)
def test_is_running_should_be_false_for_a_zombie_and_a_reused_pid(backend, spawn):
    child = spawn()
    pid, ct = identity(child)
    assert backend.is_running(pid, ct)
    assert not backend.is_running(pid, ct - 5.0)

    child.kill()
    assert h.wait_until(lambda: is_zombie(pid), timeout=10)

    assert not backend.is_running(pid, ct)


#: A process whose main thread exits while another thread runs on: it shows
#: as a zombie, but it has not exited, and its children are still its own.
MAIN_THREAD_EXITS = (
    "import ctypes, threading, time\n"
    "threading.Thread(target=time.sleep, args=(60,)).start()\n"
    "print('ready', flush=True)\n"
    "ctypes.CDLL(None).pthread_exit(None)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a main thread's exit, as Linux shows it")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_process_whose_main_thread_exited_should_count_as_running_everywhere(backend):
    child = subprocess.Popen([sys.executable, "-S", "-c", MAIN_THREAD_EXITS], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        pid, ct = identity(child)
        assert h.wait_until(lambda: is_zombie(pid), timeout=10)  # what ps shows

        assert backend.is_running(pid, ct)
        assert backend.wait_gone([(pid, ct)], 0.2) == {pid}
        assert [r.zombie for r in backend.process_table() if r.pid == pid] == [False]

        child.kill()
        assert backend.wait_gone([(pid, ct)], 10.0) == set()
        assert not backend.is_running(pid, ct)
        assert [r.zombie for r in backend.process_table() if r.pid == pid] == [True]
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_reap_child_should_refuse_a_process_that_is_not_our_child():
    assert _platform.reap_child(os.getppid()) is False


def test_reap_child_should_leave_a_running_child_alone(spawn):
    child = spawn()

    assert _platform.reap_child(child.pid) is False
    assert child.poll() is None


def test_reap_child_should_collect_an_exited_child(spawn):
    child = spawn()
    child.kill()
    assert h.wait_until(lambda: is_zombie(child.pid), timeout=10)

    assert _platform.reap_child(child.pid) is True
    assert not is_zombie(child.pid)


def test_new_session_popen_kw_should_start_a_child_leading_its_own_group():
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        **_platform.new_session_popen_kw(),
    )
    try:
        assert _platform.process_group_of(child.pid) == child.pid != os.getpgid(0)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


@pytest.mark.skipif(not _platform.HAVE_PGREP, reason="no pgrep")
def test_os_find_by_marker_should_find_a_process_by_its_command_line(spawn):
    marker = os.path.join(h.SESSIONS_ROOT, "embassy_cleanup-find-me")
    marked, unmarked = spawn(marker), spawn()

    found = _platform.os_find_by_marker(marker)

    assert marked.pid in found
    assert unmarked.pid not in found
    assert os.getpid() not in found


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_can_use_chrome_sandbox_should_be_false_as_root():
    assert _platform.can_use_chrome_sandbox() is False


def test_dev_shm_too_small_should_return_a_bool():
    assert isinstance(_platform.dev_shm_too_small(), bool)


def test_same_user_should_accept_our_own_process():
    assert _platform.same_user(psutil.Process()) is True


def test_lock_file_should_refuse_a_second_open_file_while_the_first_holds_it(tmp_path):
    path = tmp_path / "lock"
    path.touch()
    with open(path, "rb") as first, open(path, "rb") as second:
        assert _platform.lock_file(first.fileno(), blocking=False) is True
        assert _platform.lock_file(second.fileno(), blocking=False) is False

        _platform.unlock_file(first.fileno())

        assert _platform.lock_file(second.fileno(), blocking=False) is True
        assert _platform.lock_file(first.fileno(), blocking=False) is False
        _platform.unlock_file(second.fileno())


_HOLD_LOCK = """
import sys
from embassy_cleanup import _platform
fh = open(sys.argv[1], "rb")
assert _platform.lock_file(fh.fileno(), blocking=False)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_file_should_be_dropped_by_the_kernel_when_the_holder_dies(tmp_path):
    path = tmp_path / "lock"
    path.touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with open(path, "rb") as mine:
            assert _platform.lock_file(mine.fileno(), blocking=False) is False

            holder.kill()
            holder.wait(timeout=10)

            assert _platform.lock_file(mine.fileno(), blocking=False) is True
            _platform.unlock_file(mine.fileno())
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.skipif(not _platform.HAVE_PGREP, reason="no pgrep")
def test_os_find_by_marker_should_take_the_marker_literally(spawn):
    marker = os.path.join(h.SESSIONS_ROOT, "run (1) [a]+", "embassy_cleanup-find-me")
    marked = spawn(marker)

    assert marked.pid in _platform.os_find_by_marker(marker)


@pytest.mark.parametrize(
    "marker",
    ["/tmp/s/embassy_cleanup-0123456789ab", "./rel", "-dash/x", "]odd", "^caret", "\\back", "a.b*c"],
)
def test_the_pgrep_pattern_should_match_the_marker_literally_without_spelling_it_out(marker):
    """pgrep's own command line carries the pattern: if it contained the
    marker, a discovery running meanwhile took pgrep for the session's and
    killed it mid-search (a flaky os-kill stage, seen in the fast teardown)."""
    from embassy_cleanup._platform._posix import ere_literal

    pattern = ere_literal(marker)
    assert marker not in pattern
    assert re.fullmatch(pattern, marker), pattern
    assert not re.fullmatch(pattern, marker + "x")


def test_the_cmdline_marker_should_not_match_pgreps_own_argv():
    from embassy_cleanup._ownership import root_in_args
    from embassy_cleanup._platform._posix import ere_literal

    marker = os.path.join(h.SESSIONS_ROOT, "embassy_cleanup-pgrep-self")
    assert root_in_args(marker, ["pgrep", "-u", "0", "-f", "--", marker])  # the old argv
    assert not root_in_args(marker, ["pgrep", "-u", "0", "-f", "--", ere_literal(marker)])


@pytest.mark.skipif(not _platform.HAVE_PIDFD, reason="no pidfds here")
def test_wait_gone_should_not_count_a_running_process_as_gone_when_out_of_file_descriptors(
    spawn, monkeypatch
):
    child = spawn()
    procs = [identity(child)]

    def out_of_fds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pidfd_open", out_of_fds)

    assert _platform.wait_gone(procs, 0.05) == {child.pid}


WEIRD_NAME = (
    "import ctypes, sys, time\n"
    "ctypes.CDLL(None).prctl(15, b'a) b (c) 1 2', 0, 0, 0)\n"  # PR_SET_NAME: spaces and parens
    "print('up', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_table_should_match_psutil_and_parse_a_name_with_spaces_and_parens():
    child = subprocess.Popen(
        [sys.executable, "-c", WEIRD_NAME], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"up"
        rows = {r.pid: r for r in _platform.process_table()}
        row = rows[child.pid]
        proc = psutil.Process(child.pid)
        assert row.name == "a) b (c) 1 2"
        assert row.ppid == os.getpid()
        assert row.pgrp == child.pid  # a new session: its own group
        assert row.create_time == proc.create_time()
        assert row.zombie is False
        me = rows[os.getpid()]
        assert me.create_time == psutil.Process().create_time()
        child.kill()
        assert h.wait_until(lambda: is_zombie(child.pid), timeout=10)
        assert {r.pid: r for r in _platform.process_table()}[child.pid].zombie is True
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


GROUP_LEADER = (
    "import os, sys, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    time.sleep(60)\n"
    "    os._exit(0)\n"
    "print(pid, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_group_should_end_the_leader_and_its_group_only_for_the_right_identity(backend):
    leader = subprocess.Popen(
        [sys.executable, "-S", "-c", GROUP_LEADER], stdout=subprocess.PIPE, start_new_session=True
    )
    member = None
    try:
        assert leader.stdout is not None
        member = psutil.Process(int(leader.stdout.readline()))
        pid, ct = identity(leader)
        assert os.getpgid(member.pid) == pid

        assert backend.kill_group(pid, ct + 5.0) is SignalResult.REUSED
        assert not h.wait_until(lambda: leader.poll() is not None, timeout=0.3)
        assert member.is_running()

        assert backend.kill_group(pid, ct) is SignalResult.SENT
        assert leader.wait(timeout=10) == -signal.SIGKILL
        assert h.wait_until(lambda: not h.pid_running(member.pid, member.create_time()), timeout=10)
    finally:
        if leader.poll() is None:
            leader.kill()
        leader.wait()
        if member is not None and h.pid_running(member.pid):
            member.kill()
        leader.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux process table")
def test_process_table_should_lengthen_a_name_the_kernel_cut_from_the_executable(tmp_path):
    exe = tmp_path / "sleeper_with_a_long_name"
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "30"])
    try:
        assert h.wait_until(lambda: any(r.pid == proc.pid for r in _platform.process_table()), timeout=5)
        (row,) = [r for r in _platform.process_table() if r.pid == proc.pid]
        assert row.name == "sleeper_with_a_long_name"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag and /proc/net/tcp: Linux")
def test_listening_ports_should_agree_between_sock_diag_and_proc_net_tcp():
    from embassy_cleanup._platform import _linux

    with contextlib.ExitStack() as stack:
        v4 = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6 = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        v6.bind(("::1", 0))
        v6.listen()
        bound = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        bound.bind(("127.0.0.1", 0))  # bound, never listening
        client = stack.enter_context(socket.create_connection(v4.getsockname()[:2]))
        ports = {v4.getsockname()[1], v6.getsockname()[1], bound.getsockname()[1], client.getsockname()[1]}
        listening = {v4.getsockname()[1], v6.getsockname()[1]}

        assert _linux._diag_listening(set(ports)) == listening
        assert _linux._proc_listening(set(ports)) == listening
        assert _platform.listening_ports(ports) == listening
