"""adopt(): our teardown for plain Selenium drivers started without our launcher.

Every driver here is a plain ``webdriver.Chrome()``.  Its chromedriver runs
with ``TMPDIR`` and ``XDG_CONFIG_HOME`` in a dir of its own under the run's
sessions dir, so the leak guard finds whatever a failing test leaves (by
that dir, never by name), and chromedriver's temp profile lands there too.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from embassy_cleanup import AdoptedSession, ConfigError, Outcome, Stage, adopt
from embassy_cleanup._adopt import (
    CRASHPAD_UNTRACKED,
    KEPT_PROFILE,
    NO_ENV_MARKER,
    WHY_NOT_REMOVED,
    WHY_USER_PROFILE,
)
from embassy_cleanup._dirs import CHROMEDRIVER_PROFILE
from embassy_cleanup._teardown import SKIP_NOT_GRACEFUL, SKIP_NOTHING_RUNNING
from tests import _helpers as h

pytestmark = pytest.mark.chrome

#: What plain Chrome needs in this sandbox (root, small /dev/shm, no display).
PLAIN_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run")


@pytest.fixture
def plain_dir():
    """A dir for one plain driver's TMPDIR, config and chosen profiles."""
    path = tempfile.mkdtemp(prefix="plain-", dir=h.SESSIONS_ROOT)
    for sub in ("tmp", "config", "cache"):
        os.mkdir(os.path.join(path, sub))
    yield path
    shutil.rmtree(path, ignore_errors=True)  # only the dir this fixture created


def plain_options(*extra: str) -> webdriver.ChromeOptions:
    opts = webdriver.ChromeOptions()
    for flag in PLAIN_FLAGS + extra:
        opts.add_argument(flag)
    return opts


def plain_env(base: str) -> dict[str, str]:
    return dict(
        os.environ,
        TMPDIR=os.path.join(base, "tmp"),
        XDG_CONFIG_HOME=os.path.join(base, "config"),
        XDG_CACHE_HOME=os.path.join(base, "cache"),
    )


def plain_chrome(base: str, *extra: str) -> webdriver.Chrome:
    """``webdriver.Chrome()`` as its users write it, with the sandbox's flags."""
    service = Service(executable_path=h.CHROMEDRIVER, env=plain_env(base))
    return webdriver.Chrome(options=plain_options(*extra), service=service)


def tree_of(driver: webdriver.Chrome) -> dict[int, psutil.Process]:
    """chromedriver and its live descendants, held by identity (psutil)."""
    root = psutil.Process(driver.service.process.pid)
    return {p.pid: p for p in [root, *root.children(recursive=True)]}


def browser_of(driver: webdriver.Chrome) -> psutil.Process:
    """The browser process: chromedriver's child (found through the service's process tree)."""
    children = psutil.Process(driver.service.process.pid).children()
    assert len(children) == 1, f"chromedriver has {len(children)} children: {children}"
    return children[0]


def alive(procs: dict[int, psutil.Process]) -> list[str]:
    out = []
    for pid, p in procs.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {p.name()}")
        except psutil.Error:
            continue
    return out


def kill_and_wait(proc: psutil.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert h.wait_until(lambda: not alive({proc.pid: proc}), timeout=10)


# -- the usual case ---------------------------------------------------------------------
def test_adopt_should_quit_a_plain_driver_and_remove_chromedriver_temp_profile(plain_dir, bystander):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    profile = driver.capabilities["chrome"]["userDataDir"]

    session = adopt(driver)
    with session as same:
        assert same is driver
        same.get("data:text/html,<title>adopted</title>")
        assert same.title == "adopted"
        singleton = session.found.singleton_dir
    report = session.report

    assert report is not None and report.ok, str(report)
    assert [s.stage for s in report.stages] == list(Stage)
    assert session.found.profile_dir == profile
    assert session.found.profile_origin == "chromedriver"
    assert session.found.remove_profile is True
    assert {driver.service.process.pid, browser_of_pid(session)} <= {
        p for p, _n, _v in session.found.processes
    }
    assert NO_ENV_MARKER in report.stage(Stage.VERIFY).notes
    assert CRASHPAD_UNTRACKED in report.stage(Stage.VERIFY).notes
    assert f"profile {profile} (chromedriver's temp profile; removed)" in str(report)
    assert alive(procs) == []
    assert singleton is not None and os.path.dirname(singleton) == os.path.join(plain_dir, "tmp")
    h.assert_gone((), [profile, singleton], session.found.ports)
    assert session.close() is report  # idempotent
    assert session.driver is None


def browser_of_pid(session: AdoptedSession) -> int:
    assert session.found.browser_pid is not None
    return session.found.browser_pid


def test_adopt_without_grace_should_list_every_process_it_killed(plain_dir):
    driver = plain_chrome(plain_dir)
    browser = browser_of(driver)
    procs = tree_of(driver)
    session = adopt(driver, graceful=False)

    report = session.close()

    assert report.ok, str(report)
    assert report.stage(Stage.QUIT).skipped_reason == SKIP_NOT_GRACEFUL
    killed = {a.pid: a for a in report.killed if a.outcome == Outcome.KILLED}
    assert driver.service.process.pid in killed and browser.pid in killed, str(report)
    assert killed[driver.service.process.pid].via == "service"
    assert killed[browser.pid].via == "capabilities"
    assert session.found.profile_dir in report.removed
    assert alive(procs) == []
    assert driver.service.process.returncode is not None  # reaped: no zombie child left
    driver.quit()  # the user's own quit() afterwards is harmless


def scoped_dirs(plain_dir: str) -> list[str]:
    tmp = os.path.join(plain_dir, "tmp")
    return sorted(os.path.join(tmp, n) for n in os.listdir(tmp) if CHROMEDRIVER_PROFILE.match(n))


def test_adopt_forced_teardown_should_remove_chromedriver_second_empty_scoped_dir(plain_dir):
    driver = plain_chrome(plain_dir)
    profile = driver.capabilities["chrome"]["userDataDir"]
    both = scoped_dirs(plain_dir)
    assert len(both) == 2 and profile in both, both  # the profile and the empty one
    session = adopt(driver, graceful=False)
    scratch = session.found.scratch_dir
    assert scratch is not None and scratch.path in both and scratch.path != profile
    assert os.listdir(scratch.path) == []

    report = session.close()

    assert report.ok, str(report)
    assert scratch.path in report.stage(Stage.PROFILE).removed
    assert scoped_dirs(plain_dir) == []


def test_adopt_should_keep_an_empty_scoped_dir_another_running_chromedriver_may_have_made(plain_dir):
    first = plain_chrome(plain_dir)  # same TMPDIR: its chromedriver could have made the second's dir
    second = plain_chrome(plain_dir)
    try:
        one, two = adopt(first, graceful=False), adopt(second)
        assert one.found.scratch_dir is not None  # the second chromedriver started after it was made
        assert two.found.scratch_dir is None
        rival = f"chromedriver {first.service.process.pid} of this user, with the same temp dir"
        assert any(rival in lim for lim in two.found.limits), two.found.limits
        assert one.close().ok and two.close().ok  # the second quits: chromedriver removes its own dir
    finally:
        first.quit()
        second.quit()
    assert scoped_dirs(plain_dir) == []


# -- profile dirs the user chose -----------------------------------------------------------------
def test_adopt_should_keep_a_user_data_dir_the_user_chose(plain_dir):
    mine = os.path.join(plain_dir, "my-profile")
    driver = plain_chrome(plain_dir, f"--user-data-dir={mine}")
    procs = tree_of(driver)

    session = adopt(driver)
    report = session.close()

    assert session.found.profile_dir == mine
    assert session.found.profile_origin == "user"
    assert session.found.remove_profile is False
    assert report.ok, str(report)
    assert os.path.isdir(mine) and os.listdir(mine)  # kept, contents and all
    notes = report.stage(Stage.PROFILE).notes
    assert KEPT_PROFILE.format(path=mine, why=WHY_USER_PROFILE) in notes, notes
    assert mine not in report.removed
    assert alive(procs) == []


def test_adopt_should_remove_a_chosen_user_data_dir_when_asked_and_spare_its_neighbour(plain_dir):
    mine = os.path.join(plain_dir, "my-profile")
    neighbour = mine + "-2"  # a prefix match would take this dir and the process below too
    os.mkdir(neighbour)
    driver = plain_chrome(plain_dir, f"--user-data-dir={mine}")
    procs = tree_of(driver)
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", f"--user-data-dir={neighbour}"],
        start_new_session=True,
    )
    try:
        session = adopt(driver, remove_profile=True, graceful=False)
        report = session.close()

        assert report.ok, str(report)
        assert mine in report.removed
        assert not os.path.lexists(mine)
        assert os.path.isdir(neighbour)
        assert stranger.poll() is None, "a process using a neighbouring profile dir was killed"
        assert stranger.pid not in {a.pid for a in report.killed}
        assert alive(procs) == []
    finally:
        stranger.kill()
        stranger.wait()


def test_adopt_with_remove_profile_false_should_keep_even_chromedriver_temp_profile(plain_dir):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    session = adopt(driver, remove_profile=False, graceful=False)  # no quit: chromedriver would remove it
    profile = session.found.profile_dir

    report = session.close()

    assert report.ok, str(report)
    assert profile is not None and os.path.isdir(profile)
    assert KEPT_PROFILE.format(path=profile, why=WHY_NOT_REMOVED) in report.stage(Stage.PROFILE).notes
    assert alive(procs) == []
    shutil.rmtree(profile)  # ours to remove here: it lies under plain_dir


# -- parts of the tree already dead ------------------------------------------------------------------
def test_adopt_should_clean_up_after_a_browser_killed_before_adopt(plain_dir):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    profile = driver.capabilities["chrome"]["userDataDir"]
    kill_and_wait(browser_of(driver))

    session = adopt(driver)
    report = session.close()

    assert report.ok, str(report)
    assert session.found.browser_pid is None
    assert any("was not running at adopt time" in lim for lim in session.found.limits)
    assert alive(procs) == []
    h.assert_gone((), [profile], session.found.ports)


def test_adopt_should_clean_up_after_a_browser_killed_between_adopt_and_close(plain_dir):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    session = adopt(driver)
    kill_and_wait(browser_of(driver))

    report = session.close()

    assert report.ok, str(report)
    assert alive(procs) == []
    h.assert_gone((), [session.found.profile_dir], session.found.ports)


def test_adopt_should_find_the_browser_after_chromedriver_was_killed(plain_dir):
    driver = plain_chrome(plain_dir)
    browser = browser_of(driver)
    procs = tree_of(driver)
    session = adopt(driver)
    os.kill(driver.service.process.pid, signal.SIGKILL)
    assert h.wait_until(lambda: driver.service.process.poll() is not None, timeout=10)
    assert alive({browser.pid: browser}), "the browser died with chromedriver: the test proves nothing"

    report = session.close()

    assert report.ok, str(report)
    signalled = {a.pid: a.outcome for a in report.killed}
    assert signalled.get(browser.pid) in (Outcome.KILLED, Outcome.TERMINATED), str(report)
    assert alive(procs) == []
    h.assert_gone((), [session.found.profile_dir], session.found.ports)


def test_adopt_of_an_already_quit_driver_should_report_nothing_to_do(plain_dir):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    driver.quit()

    session = adopt(driver)
    report = session.close()

    assert report.ok, str(report)
    assert session.found.processes == ()
    assert session.found.driver_pid is None
    assert "chromedriver was not running at adopt time" in session.found.limits
    assert report.stage(Stage.QUIT).skipped_reason == SKIP_NOTHING_RUNNING
    assert alive(procs) == []


# -- drivers adopt() cannot take ----------------------------------------------------------------------
def test_adopt_of_a_remote_driver_should_raise_a_clear_error_and_touch_nothing(plain_dir):
    port = h._free_port_in(20000, 30000)
    server = subprocess.Popen(
        [h.CHROMEDRIVER, f"--port={port}"],
        env=plain_env(plain_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert h.wait_until(lambda: h.port_listening(port), timeout=20)
        remote = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=plain_options())
        try:
            procs = {server.pid: psutil.Process(server.pid)}
            procs.update((p.pid, p) for p in psutil.Process(server.pid).children(recursive=True))

            with pytest.raises(ConfigError) as caught:
                adopt(remote)

            msg = str(caught.value)
            assert "adopt() needs a local Chrome driver" in msg
            assert f"http://127.0.0.1:{port}" in msg
            assert "end it with driver.quit()" in msg
            assert caught.value.option == "driver"
            assert len(alive(procs)) == len(procs)  # adopt touched nothing
        finally:
            remote.quit()
    finally:
        server.kill()
        server.wait()


def test_an_adopted_session_never_closed_should_warn_and_still_be_torn_down(plain_dir):
    """The finalizer warns, then hands the driver to the watchdog (it guards
    adopted drivers by default), which tears it down from its record."""
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    session = adopt(driver, graceful=False)
    profile = session.found.profile_dir

    with pytest.warns(ResourceWarning, match=r"adopted driver adopted-\w+ was not closed; tearing it down"):
        del session
        gc.collect()

    assert h.wait_until(lambda: alive(procs) == [], timeout=10), alive(procs)
    assert h.wait_until(lambda: not os.path.lexists(profile), timeout=5)
    h.assert_gone((), [profile])


def test_an_adopted_session_without_a_watchdog_never_closed_is_torn_down_in_place(plain_dir):
    driver = plain_chrome(plain_dir)
    procs = tree_of(driver)
    session = adopt(driver, graceful=False, watchdog=False)
    profile = session.found.profile_dir

    with pytest.warns(ResourceWarning, match=r"adopted driver adopted-\w+ was not closed; tearing it down"):
        del session
        gc.collect()

    assert alive(procs) == []
    h.assert_gone((), [profile])
