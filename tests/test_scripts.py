"""The manual clean-up scripts at the top level: cleanup_chrome.sh (hand-over to
``embassy-cleanup clean`` and its package-less fallback) and cleanup_chrome.bat
(not runnable here: its form only).

Their runs against real orphans and bystanders are in
tests/cli/test_diagnose_clean.py.  The fallback's ``--all`` is never run: it
would kill other people's Chrome on a shared machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.cli import SCRIPT_BAT, SCRIPT_SH, make_litter, run_sh, scoped_dir

FALLBACK = {"EMBASSY_CLEANUP_FALLBACK": "1"}
USAGE = "Usage: cleanup_chrome.sh [--dry-run] [--all [--yes]] [--older-than SECONDS] [--temp-dir DIR]"


@pytest.fixture
def tdir():
    with scoped_dir() as path:
        yield path


def test_cleanup_chrome_sh_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing in CI (scripts/bootstrap.sh installs it)")
        pytest.skip("shellcheck is not installed")

    out = subprocess.run(
        [shellcheck, str(SCRIPT_SH)], capture_output=True, text=True, timeout=60, check=False
    )

    assert out.returncode == 0, out.stdout + out.stderr


def test_cleanup_chrome_sh_is_a_posix_sh_script_and_executable():
    with open(SCRIPT_SH, encoding="utf-8") as fh:
        assert fh.readline().rstrip("\n") == "#!/bin/sh"
    assert os.access(SCRIPT_SH, os.X_OK)


def test_help_with_the_package_is_the_help_of_embassy_cleanup_clean(tdir):
    out = run_sh("--temp-dir", tdir, "--help")

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: embassy-cleanup clean [OPTIONS]")
    assert "--dry-run" in out.stdout and "--older-than" in out.stdout


def test_help_of_the_fallback_prints_its_usage_and_scope(tdir):
    out = run_sh("--temp-dir", tdir, "--help", **FALLBACK)

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cleanup_chrome.sh: clean up what embassy_cleanup sessions left behind")
    assert USAGE in out.stdout
    assert "Exit status: 0 everything went, 1 something is left, 2 usage error." in out.stdout
    assert "whose owner is dead" in out.stdout and "never another user's process" in out.stdout


def test_help_of_the_fallback_ends_with_the_exit_status_line(tdir):
    out = run_sh("--temp-dir", tdir, "-h", **FALLBACK)

    assert out.stdout.rstrip("\n").splitlines()[-1].startswith("Exit status:"), out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frobnicate"], "error: unknown option '--frobnicate' (see --help)"),
        (["--older-than"], "error: --older-than needs SECONDS"),
        (["--older-than", "1.5"], "error: --older-than takes whole seconds"),
        (["--older-than", "-3"], "error: --older-than takes whole seconds"),
        (["--temp-dir"], "error: --temp-dir needs DIR"),
        (["--temp-dir", "/nonexistent/ec"], "error: --temp-dir '/nonexistent/ec' is not a directory"),
        (["--all-users"], "error: --all-users needs the embassy_cleanup package (and root)"),
    ],
    ids=[
        "unknown",
        "older-than-missing",
        "older-than-float",
        "older-than-negative",
        "temp-dir-missing",
        "temp-dir-not-a-dir",
        "all-users",
    ],
)
def test_usage_errors_of_the_fallback_exit_2(tdir, args, message):
    # a dead owner's session dir: the fallback would remove it if it ran
    tripwire = os.path.join(tdir, "embassy_cleanup-000000000000")
    os.mkdir(tripwire)

    out = run_sh("--temp-dir", tdir, *args, TMPDIR=tdir, **FALLBACK)

    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert message in out.stderr
    assert out.stdout == ""
    assert os.path.isdir(tripwire), "the fallback ran despite the usage error"


def test_usage_errors_with_the_package_exit_2(tdir):
    out = run_sh("--temp-dir", tdir, "--frobnicate")

    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert "Usage: embassy-cleanup clean" in out.stderr
    assert "No such option '--frobnicate'" in out.stderr


def test_dry_run_with_the_package_hands_over_to_clean_and_passes_the_flags(tdir):
    litter = make_litter(tdir)

    out = run_sh("--dry-run", "--temp-dir", tdir)

    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert out.stdout.startswith("Would do (dry run)")
    assert re.search(rf"remove-dir\s+{re.escape(litter)}\s+Chromium's own, unused", out.stdout), out.stdout
    assert os.path.isdir(litter), "the dry run removed something"


def test_the_fallback_on_an_empty_temp_dir_says_nothing_to_clean(tdir):
    out = run_sh("--temp-dir", tdir, **FALLBACK)

    assert out.returncode == 0, out.stderr
    assert out.stdout == "nothing to clean\n"


def test_the_fallback_never_follows_a_symlink_named_like_a_session(tdir, tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    link = os.path.join(tdir, "embassy_cleanup-0123456789ab")
    os.symlink(tmp_path, link)

    out = run_sh("--temp-dir", tdir, **FALLBACK)

    assert out.returncode == 0, out.stderr
    assert out.stdout == "nothing to clean\n"
    assert os.path.islink(link) and precious.read_text() == "keep me"


def test_the_fallback_removes_a_dead_owners_session_dir_with_no_processes(tdir):
    # an unlocked owner.lock: the owner is gone (a crash before Chrome started)
    root = os.path.join(tdir, "embassy_cleanup-0123456789ab")
    os.mkdir(root)
    open(os.path.join(root, "owner.lock"), "w").close()

    dry = run_sh("--dry-run", "--temp-dir", tdir, **FALLBACK)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would kill session 0123456789ab processes: none",
        f"would remove {root}",
    ]
    assert os.path.isdir(root)

    out = run_sh("--temp-dir", tdir, **FALLBACK)
    assert out.returncode == 0, out.stderr
    assert f"remove {root}" in out.stdout.splitlines()
    assert not os.path.lexists(root)


def _fresh_lockless_session(tdir):
    """A session dir as it is for a moment while a session starts: no owner.lock yet."""
    root = os.path.join(tdir, "embassy_cleanup-0123456789ab")
    os.mkdir(root)
    os.mkdir(os.path.join(root, "profile"))
    return root


def test_clean_leaves_a_fresh_session_dir_without_a_lock_file_alone(tdir):
    root = _fresh_lockless_session(tdir)

    out = run_sh("--temp-dir", tdir)

    assert out.returncode == 0, out.stderr
    assert os.path.isdir(os.path.join(root, "profile")), "clean removed a session that may be starting"


def test_the_fallback_leaves_a_fresh_session_dir_without_a_lock_file_alone(tdir):
    root = _fresh_lockless_session(tdir)

    out = run_sh("--temp-dir", tdir, **FALLBACK)

    assert out.returncode == 0, out.stderr
    assert os.path.isdir(os.path.join(root, "profile")), out.stdout


def test_cleanup_chrome_bat_has_crlf_line_endings():
    data = SCRIPT_BAT.read_bytes()

    assert data.endswith(b"\r\n")
    lines = data.split(b"\n")[:-1]
    assert lines and all(line.endswith(b"\r") for line in lines), "a line without CR"
    assert b"\r\r" not in data


def test_cleanup_chrome_bat_says_it_is_not_ci_tested_and_hands_over():
    text = SCRIPT_BAT.read_text(encoding="utf-8")

    assert "Not tested in CI" in text
    assert "embassy-cleanup clean %*" in text
    assert "rmdir /s /q" in text and "embassy_cleanup-*" in text
    assert "taskkill" not in text.lower(), "the .bat fallback must kill no process"
