"""The suite's own safety net: the leak guard still catches real leaks, and
the per-module bystander is replaced after a test that killed it.

The direct tests call :class:`tests._helpers.LeakGuard` on leftovers made
on purpose; the child-pytest tests prove the wiring (the autouse fixture
fails exactly the leaking test).  Each child runs with ``TMPDIR`` under
this run's sessions dir, so its run dir, and anything it might fail to
clean, carries this run's marker and the outer guard sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import psutil
import pytest

from tests import _helpers as h

pytest_plugins = ["pytester"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Starts ``argv`` detached (its own session) and exits at once: the sleeper
#: is re-parented like an orphaned Chrome helper, so it is no child of ours.
ORPHAN_MAKER = (
    "import json, subprocess, sys\n"
    "null = subprocess.DEVNULL\n"
    "p = subprocess.Popen(json.loads(sys.argv[1]), start_new_session=True, stdin=null, stdout=null,\n"
    "                     stderr=null, env=json.loads(sys.argv[2]))\n"
    "print(p.pid)\n"
)
SLEEPER = [sys.executable, "-S", "-c", "import time; time.sleep(300)"]


def leak_orphan(extra_argv: list[str], env: dict[str, str]) -> psutil.Process:
    """A sleeper that belongs to nobody here; returns it held by identity."""
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN_MAKER, json.dumps(SLEEPER + extra_argv), json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return psutil.Process(int(out.stdout))


@pytest.fixture
def scratch():
    """A dir under the sessions dir (so what carries it is a leak to find)."""
    path = tempfile.mkdtemp(prefix="g", dir=h.SESSIONS_ROOT)
    try:
        yield path
    finally:
        h.kill_all(h.processes_under(path))
        shutil.rmtree(path, ignore_errors=True)


def test_the_guard_should_kill_and_name_a_leaked_process_marked_on_its_command_line(scratch):
    guard = h.LeakGuard(settle=0.2)
    leaked = leak_orphan([os.path.join(scratch, "profile")], dict(os.environ))
    name = leaked.name()

    problems = guard.check()

    assert problems == [f"processes left: ['{leaked.pid} {name}']"]
    assert not h.pid_running(leaked.pid, leaked.create_time())


def test_the_guard_should_kill_a_leaked_process_marked_only_in_its_tmpdir(scratch):
    guard = h.LeakGuard(settle=0.2)
    leaked = leak_orphan([], dict(os.environ, TMPDIR=scratch))  # as chromedriver is

    problems = guard.check()

    assert len(problems) == 1 and problems[0].startswith(f"processes left: ['{leaked.pid} ")
    assert not h.pid_running(leaked.pid, leaked.create_time())


def test_the_guard_should_remove_and_name_a_leaked_session_dir():
    guard = h.LeakGuard()
    leaked = os.path.join(h.SESSIONS_ROOT, "embassy_cleanup-0123456789ab")
    os.makedirs(os.path.join(leaked, "profile"))

    assert guard.check() == [f"session dirs left: ['{leaked}']"]
    assert not os.path.lexists(leaked)


def test_the_guard_should_name_a_zombie_child_and_leave_its_status_to_its_popen():
    guard = h.LeakGuard()
    child = subprocess.Popen([sys.executable, "-S", "-c", "pass"])
    assert h.wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, timeout=30)
    try:
        assert guard.check() == [f"zombie children of the test process: [{child.pid}]"]
    finally:
        assert child.wait(5) == 0  # not reaped by the guard: the Popen still gets its status
    assert guard.check() == []


def test_the_guard_should_find_nothing_after_a_clean_test_and_leave_others_processes_alone():
    guard = h.LeakGuard(settle=0.2)
    # marked with the run dir (so the end of the run kills it whatever happens
    # here) but not with the sessions dir: like the bystander, not a leak
    stranger = leak_orphan([os.path.join(h.RUN_ROOT, "stranger")], dict(os.environ))
    try:
        assert guard.check() == []
        assert h.pid_running(stranger.pid, stranger.create_time())
    finally:
        h.kill_all([stranger])


def test_processes_under_should_match_the_start_of_a_dir_name_on_the_command_line_or_in_tmpdir():
    # callers pass a prefix ("embassy-b-") or a dir: both are substrings
    by_arg = leak_orphan([os.path.join(h.RUN_ROOT, "pfx-arg", "profile")], dict(os.environ))
    by_env = leak_orphan([], dict(os.environ, TMPDIR=os.path.join(h.RUN_ROOT, "pfx-env")))
    try:
        found = {p.pid for p in h.processes_under(os.path.join(h.RUN_ROOT, "pfx-"))}
        assert found == {by_arg.pid, by_env.pid}
    finally:
        h.kill_all([by_arg, by_env])


CHILD_CONFTEST = "from tests.conftest import *  # noqa: F401,F403  (the suite's fixtures, as they are)\n"

CHILD_TESTS = textwrap.dedent(
    """
    import json, os, subprocess, sys

    from tests import _helpers as h
    from tests.test_leak_guard import ORPHAN_MAKER, SLEEPER


    def test_leaks_a_process():
        argv = SLEEPER + [os.path.join(h.SESSIONS_ROOT, "profile")]
        subprocess.run([sys.executable, "-c", ORPHAN_MAKER, json.dumps(argv), json.dumps(dict(os.environ))],
                       check=True, capture_output=True)


    def test_leaks_a_session_dir():
        os.mkdir(os.path.join(h.SESSIONS_ROOT, "embassy_cleanup-feedfacecafe"))


    def test_clean():
        pass
    """
)


@pytest.fixture
def short_scratch():
    """A dir outside the run dir, short enough for a child's bystander (its
    Chrome's singleton socket path, under the child's run dir, must fit 107
    bytes); what carries it is killed, by identity, at the end."""
    path = tempfile.mkdtemp(prefix="eg")
    try:
        yield path
    finally:
        h.kill_all(h.processes_under(path))
        shutil.rmtree(path, ignore_errors=True)


def _child_env(monkeypatch, pytester, scratch: str) -> str:
    pytester.makeconftest(CHILD_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    chrome: runs real Chromium and chromedriver\n")
    monkeypatch.setenv("BYSTANDER_NOTES", os.path.join(scratch, "notes"))
    os.mkdir(os.path.join(scratch, "notes"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("TMPDIR", scratch)
    return scratch


@pytest.fixture
def child_env(monkeypatch, pytester, scratch):
    """The child pytest imports this worktree's ``tests``, has the suite's
    fixtures and markers, and makes its run dir under ``scratch``."""
    return _child_env(monkeypatch, pytester, scratch)


@pytest.fixture
def short_child_env(monkeypatch, pytester, short_scratch):
    """``child_env``, under a short dir outside the run dir."""
    return _child_env(monkeypatch, pytester, short_scratch)


def test_the_autouse_guard_should_fail_exactly_the_tests_that_leaked(pytester, child_env):
    pytester.makepyfile(test_child=CHILD_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)

    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_process*",
            "*leak guard: processes left: *python*",
            "*ERROR at teardown of test_leaks_a_session_dir*",
            "*leak guard: session dirs left: *embassy_cleanup-feedfacecafe*",
        ]
    )
    assert h.processes_under(child_env) == [], "the child's guard did not kill its leak"


CHILD_BYSTANDER_TESTS = textwrap.dedent(
    """
    import json, os

    import pytest

    pytestmark = pytest.mark.chrome


    def note(by):
        with open(os.path.join(os.environ["BYSTANDER_NOTES"], "seen"), "a") as fh:
            fh.write(json.dumps(sorted(by.chrome_pids)) + "\\n")


    def test_first(bystander):
        note(bystander)


    def test_kills_the_server(bystander):
        note(bystander)
        bystander.server.kill()
        bystander.server.wait()  # dead before the fixture looks (a SIGKILL takes effect later)


    def test_after_the_kill(bystander):
        note(bystander)
        bystander.assert_alive()
    """
)


@pytest.mark.chrome
def test_the_module_bystander_should_be_shared_and_replaced_after_a_test_killed_it(pytester, short_child_env):
    pytester.makepyfile(test_child=CHILD_BYSTANDER_TESTS)
    notes = os.path.join(short_child_env, "notes")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=150)

    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_kills_the_server*", "*bystander server was killed*"]
    )
    with open(os.path.join(notes, "seen"), encoding="utf-8") as fh:
        first, killer, after = fh.read().splitlines()
    assert first == killer, "the second test did not get the module's bystander"
    assert after != killer, "the test after the kill got the killed bystander again"
