"""The ``"headless-shell"`` preset with real Chromium: the session starts
Debian's ``chromium-headless-shell`` itself, attaches chromedriver to it,
renders the benchmark pages, and leaves nothing behind; without the shell it
falls back to ``"minimal"`` with a warning; a wrong shell is a precise error.

Skipped when the shell is not installed, except in CI, where
``scripts/bootstrap.sh`` installs it and a missing shell is a failure.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from typing import Iterable

import psutil
import pytest

from embassy_cleanup import (
    ChromeUltraAggressiveCleanup,
    ConfigError,
    DriverNotFoundError,
    LaunchError,
    Outcome,
    Stage,
    _launcher,
)
from embassy_cleanup._ownership import OwnedProcess, ProcessTracker
from tests import _helpers as h
from tests.faults import _fault_helpers as fh

SHELL = _launcher.resolve_headless_shell() if not os.environ.get(_launcher.SHELL_ENV) else None
needs_shell = pytest.mark.skipif(
    SHELL is None and not os.environ.get("CI"), reason="chromium-headless-shell is not installed"
)
pytestmark = pytest.mark.chrome


def _bench():
    """bench/run.py as a module: its pages and its render check, so the test
    checks the very pages the footprint table is measured on."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "bench", "run.py")
    spec = importlib.util.spec_from_file_location("embassy_bench_run", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _executables(snap: fh.Snapshot) -> set[str]:
    out = set()
    for pid, proc in snap.procs.items():
        if pid == snap.chromedriver:
            continue
        try:
            out.add(os.path.basename(proc.cmdline()[0]))
        except (psutil.Error, IndexError):
            continue
    return out


def snapshot(cleanup: ChromeUltraAggressiveCleanup, settle: bool = False) -> fh.Snapshot:
    """``fh.snapshot`` plus the members of the shell's process group: the
    shell's helpers (zygotes, renderer, GPU, network) carry no marker on their
    command line and the zygotes overwrite their environment, so the leak
    guard's marker search cannot see them; the group of the shell our session
    started (in a new session) holds them all.  Held by identity."""
    snap = fh.snapshot(cleanup, settle=settle)
    me = os.getpid()
    shells = [pid for pid in snap.browser if snap.ppids.get(pid) == me]
    assert len(shells) == 1, f"expected one shell started by this process, got {shells}"
    shell = psutil.Process(shells[0])
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == shell.pid and proc.info["create_time"] >= shell.create_time():
                if proc.pid not in snap.procs:
                    snap.procs[proc.pid] = proc
                    snap.names[proc.pid], snap.ppids[proc.pid] = proc.name(), proc.ppid()
        except (psutil.Error, OSError):
            continue
    return snap


@pytest.fixture
def empty_root():
    root = fh.short_dir("hs")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_shell
@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "fast"])
def test_headless_shell_preset_should_render_the_bench_pages_and_leave_nothing(session_kwargs, graceful):
    bench = _bench()
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", graceful=graceful, **session_kwargs)
    with bench.serve() as base, cleanup as driver:
        assert cleanup.preset_used == "headless-shell"
        assert cleanup.preset_fallback_reason is None
        for page in ("static", "heavy"):
            driver.get(f"{base}/{page}.html")
            assert bench.page_ok(driver, page), f"{page} page did not render correctly"
        # launched with chromedriver's own switches: it is an automated browser
        assert driver.execute_script("return navigator.webdriver") is True
        snap = snapshot(cleanup, settle=True)
        # every browser process is the shell (none is chromium), and it carries our markers
        assert _executables(snap) == {os.path.basename(SHELL or "chromium-headless-shell")}
        assert len(snap.browser) >= 3, snap.procs
    report = cleanup.report
    assert report.ok, str(report)
    # chromedriver only attached: its quit() leaves the shell running, the kill stages end it
    killed = fh.outcomes(fh.stages_of(report, Stage.KILL_TREE))
    shell_pid = min(snap.browser)  # the first browser process: the one the session started
    assert killed.get(shell_pid) in (Outcome.TERMINATED, Outcome.KILLED), str(report)
    fh.assert_session_gone(snap)


@needs_shell
def test_headless_shell_session_should_be_recorded_with_the_shell_it_started(session_kwargs):
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", **session_kwargs)
    with cleanup:
        snap = snapshot(cleanup)
        started = [pid for pid, name in cleanup.pids.items() if pid != snap.chromedriver]
        # the shell is our own child: recorded at spawn, parent of the rest of the browser
        me = os.getpid()
        ours = [pid for pid in started if snap.ppids.get(pid) == me]
        assert len(ours) == 1, (started, snap.ppids)
        assert ours[0] in snap.browser
    assert cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)


def test_headless_shell_preset_should_fall_back_to_minimal_with_a_warning_when_not_installed(
    session_kwargs, monkeypatch, caplog
):
    monkeypatch.delenv(_launcher.SHELL_ENV, raising=False)
    monkeypatch.setattr(_launcher, "SHELL_PATHS", ())
    monkeypatch.setattr(_launcher, "SHELL_NAMES", ())
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", **session_kwargs)
    with caplog.at_level(logging.WARNING, logger="embassy_cleanup"):
        with cleanup as driver:
            driver.get("data:text/html,<title>fallback</title>")
            assert driver.title == "fallback"
            snap = fh.snapshot(cleanup)
            assert "chromium" in _executables(snap)
            assert not any("headless-shell" in name for name in _executables(snap))
    assert cleanup.preset_used == "minimal"
    assert "no headless shell found" in (cleanup.preset_fallback_reason or "")
    assert "install chromium-headless-shell" in (cleanup.preset_fallback_reason or "")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("using preset 'minimal'" in msg for msg in warned), warned
    assert cleanup.report.ok, str(cleanup.report)
    fh.assert_session_gone(snap)


def test_a_wrong_headless_shell_path_should_raise_naming_the_variable_and_leave_nothing(
    empty_root, tmp_path, monkeypatch
):
    missing = str(tmp_path / "no-such-shell")
    monkeypatch.setenv(_launcher.SHELL_ENV, missing)
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", temp_root=empty_root)
    with pytest.raises(DriverNotFoundError) as info:
        with cleanup:
            pytest.fail("the with block ran without a headless shell")
    assert missing in str(info.value) and _launcher.SHELL_ENV in str(info.value)
    assert os.listdir(empty_root) == []
    assert cleanup.pids == {}


def test_a_headless_shell_that_exits_at_start_should_raise_launch_error_with_its_words(
    empty_root, tmp_path, monkeypatch
):
    fake = fh.write_executable(
        str(tmp_path / "fake-shell"), "#!/bin/sh\necho 'fake shell: cannot open display' >&2\nexit 3\n"
    )
    monkeypatch.setenv(_launcher.SHELL_ENV, fake)
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", temp_root=empty_root)
    with pytest.raises(LaunchError) as info:
        with cleanup:
            pytest.fail("the with block ran although the shell exited")
    err = info.value
    assert "exited with status 3" in str(err), str(err)
    assert "fake shell: cannot open display" in str(err), str(err)
    assert err.report is not None and err.report.ok, str(err.report)
    assert os.listdir(empty_root) == []
    # chromedriver is started only once the shell is up
    assert "chromedriver" not in cleanup.pids.values(), cleanup.pids


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"headless": False}, "headless=True"),
        ({"options": "prefs"}, "experimental options"),
    ],
    ids=["headed", "experimental-options"],
)
def test_headless_shell_preset_should_reject_what_it_cannot_honour(empty_root, kwargs, named):
    if kwargs.get("options") == "prefs":
        from selenium.webdriver import ChromeOptions

        options = ChromeOptions()
        options.add_experimental_option("prefs", {"intl.accept_languages": "de"})
        kwargs = {"options": options}
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(preset="headless-shell", temp_root=empty_root, **kwargs)
    assert named in str(info.value)
    assert os.listdir(empty_root) == []


def test_headless_shell_on_path_should_be_skipped_when_it_is_a_wrapper_script(tmp_path, monkeypatch):
    # Debian's /usr/bin/chromium-headless-shell is an sh script that does not
    # exec: the shell would run as a child of sh.  Only real binaries count.
    wrapper = fh.write_executable(str(tmp_path / "chromium-headless-shell"), "#!/bin/sh\nexec true\n")
    monkeypatch.delenv(_launcher.SHELL_ENV, raising=False)
    monkeypatch.setattr(_launcher, "SHELL_PATHS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("chromium-headless-shell") == wrapper
    assert _launcher.resolve_headless_shell() is None
    h.assert_gone((), (), ())


@needs_shell
def test_helpers_orphaned_by_a_dead_shell_should_be_found_by_its_process_group(session_kwargs, monkeypatch):
    # The shell and its zygotes die mid-session; the remaining helpers are
    # stopped (so they cannot exit by themselves) and never recorded (as if
    # spawned after the last scan).  They carry no marker: only the shell's
    # process group, pinned while the shell is our unreaped child, still says
    # they are the session's.
    never_recorded = _record_no_helpers(monkeypatch)
    cleanup = ChromeUltraAggressiveCleanup(preset="headless-shell", **session_kwargs)
    with cleanup as driver:
        driver.get("data:text/html,<title>orphans</title>")
        snap = snapshot(cleanup, settle=True)
        me = os.getpid()
        shell = next(pid for pid in snap.browser if snap.ppids.get(pid) == me)
        parents = {shell} | {
            pid for pid in snap.browser if snap.ppids.get(pid) == shell and _is_zygote(snap, pid)
        }
        orphans = {pid: p for pid, p in snap.browser.items() if pid not in parents}
        assert orphans, snap.procs
        fh.suspend(orphans.values())
        for pid in parents:
            snap.procs[pid].kill()
        assert h.wait_until(lambda: not [p for p in parents if fh.is_alive(snap.procs[p])], timeout=10)
        assert set(orphans) <= never_recorded, (orphans, never_recorded)
        assert not set(orphans) & set(cleanup.pids), "the record lists a helper"
    report = cleanup.report
    assert report.ok, str(report)
    actions = {a.pid: a for s in fh.stages_of(report, Stage.KILL_TREE) for a in s.killed}
    assert {actions[pid].via for pid in orphans if pid in actions} == {"group"}, str(report)
    assert set(orphans) <= set(actions), str(report)
    fh.assert_session_gone(snap)


def _record_no_helpers(monkeypatch) -> set[int]:
    """Make every tracker leave out of its record the shell's helpers (a
    ``--type=`` other than the zygote's); returns the pids left out."""
    left_out: set[int] = set()
    record = ProcessTracker.record

    def is_helper(pid: int) -> bool:
        try:
            args = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return any(a.startswith("--type=") for a in args) and "--type=zygote" not in args

    def record_no_helpers(self: ProcessTracker, procs: Iterable[OwnedProcess]) -> None:
        keep = []
        for p in procs:
            if is_helper(p.pid):
                left_out.add(p.pid)
            else:
                keep.append(p)
        record(self, keep)

    monkeypatch.setattr(ProcessTracker, "record", record_no_helpers)
    return left_out


def _is_zygote(snap: fh.Snapshot, pid: int) -> bool:
    try:
        return "--type=zygote" in snap.procs[pid].cmdline()
    except psutil.Error:
        return False
