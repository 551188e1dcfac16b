"""The manual clean-up scripts at the top level: cleanup_chrome.sh (hand-over to
``embassy-cleanup clean`` and its package-less fallback) and cleanup_chrome.bat
(not runnable here: its form only).

Their runs against real orphans and bystanders are in
tests/cli/test_diagnose_clean.py.  The fallback's ``--all`` is never run: it
would kill other people's Chrome on a shared machine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.cli import REPO, SCRIPT_BAT, SCRIPT_SH, make_litter, run_sh, scoped_dir

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


# -- cleanup_chrome.bat: every hand-over returns the child's status ---------------
#: A hand-over: a line that runs ``embassy-cleanup clean`` (the console script or
#: ``py -m embassy_cleanup``).
HAND_OVER = re.compile(r"(?:^|\s)(?:embassy-cleanup|-m\s+embassy_cleanup)\s+clean\b", re.I)
#: What must follow a hand-over, at the top level: exit with the status it left.
EXIT_WITH_STATUS = re.compile(r"^exit\s+/b(?:\s+%ERRORLEVEL%)?\s*$", re.I)
EXIT_WITH_DELAYED_STATUS = re.compile(r"^exit\s+/b\s+!ERRORLEVEL!\s*$", re.I)
#: The hand-over of the .bat before issue 16: exit /b %ERRORLEVEL% inside the if
#: block, expanded when the block is parsed, so it always exited 0.
OLD_HAND_OVER = (
    "where embassy-cleanup >nul 2>nul\r\n"
    "if %ERRORLEVEL%==0 (\r\n"
    "    embassy-cleanup clean %*\r\n"
    "    exit /b %ERRORLEVEL%\r\n"
    ")\r\n"
)


def batch_statements(text: str) -> list[tuple[int, bool, str]]:
    """The statements of a batch file as cmd.exe parses them, roughly:
    ``(line number, parsed with something before it, text)``.

    A statement is "parsed with something before it" when it is inside a
    parenthesised block or follows ``&``, ``&&`` or ``||`` on its line: cmd.exe
    reads the whole block or line first and expands ``%VAR%`` then, before
    the commands before it have run.  Comments (``rem``, ``::``) and labels are
    skipped; parentheses and ``&`` inside double quotes or after ``^``, and the
    ``&`` of a redirection (``1>&2``), do not count.
    """
    out: list[tuple[int, bool, str]] = []
    depth = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("::") or line.startswith(":") or re.match(r"(?i)@?rem(\s|$)", line):
            continue
        start, quoted, i = 0, False, 0
        after = depth > 0
        while i < len(line):
            c = line[i]
            if c == "^" and not quoted:
                i += 2
                continue
            if c == '"':
                quoted = not quoted
            elif not quoted and c == "&" and line[i - 1 : i] in (">", "<"):
                pass  # 1>&2: a redirection, not a command separator
            elif not quoted and c in "()&|":
                piece = line[start:i].strip()
                if piece:
                    out.append((n, after, piece))
                    after = True
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    after = depth > 0 or after
                start = i + 1
            i += 1
        piece = line[start:].strip()
        if piece:
            out.append((n, after, piece))
    assert depth == 0, "unbalanced parentheses"
    return out


def hand_over_problems(text: str) -> list[str]:
    """Why some path of the script does not return the child's status (empty: none)."""
    delayed = re.search(r"(?i)setlocal\b.*\bEnableDelayedExpansion\b", text) is not None
    stmts = batch_statements(text)
    problems = [
        f"line {n}: %ERRORLEVEL% is expanded before the command before it ran: {s!r}"
        for n, after, s in stmts
        if after and "%errorlevel%" in s.lower()
    ]
    hand_overs = [i for i, (_n, _a, s) in enumerate(stmts) if HAND_OVER.search(s)]
    if not hand_overs:
        problems.append("no hand-over to embassy-cleanup clean found")
    for i in hand_overs:
        n, after, s = stmts[i]
        if after:
            problems.append(f"line {n}: the hand-over {s!r} runs inside a block or after & on its line")
        nxt = stmts[i + 1] if i + 1 < len(stmts) else None
        ok = (
            nxt is not None
            and nxt[0] != n
            and (
                (not nxt[1] and EXIT_WITH_STATUS.match(nxt[2]))
                or (delayed and EXIT_WITH_DELAYED_STATUS.match(nxt[2]))
            )
        )
        if not ok:
            problems.append(f"line {n}: the hand-over is not followed by an exit with its status: {nxt}")
    return problems


def test_the_hand_over_checker_rejects_the_old_bat():
    problems = hand_over_problems(OLD_HAND_OVER)

    assert any("line 4: %ERRORLEVEL% is expanded" in p for p in problems), problems
    assert any("line 3: the hand-over" in p for p in problems), problems


def test_the_hand_over_checker_accepts_delayed_expansion_inside_a_block():
    text = (
        "setlocal EnableExtensions EnableDelayedExpansion\r\n"
        "if not errorlevel 1 (\r\n    embassy-cleanup clean %*\r\n    exit /b !ERRORLEVEL!\r\n)\r\n"
    )

    assert [p for p in hand_over_problems(text) if "not followed" in p] == []


def test_every_hand_over_of_cleanup_chrome_bat_exits_with_the_childs_status():
    text = SCRIPT_BAT.read_text(encoding="ascii")  # ASCII: blinter's W011 is off for it

    assert hand_over_problems(text) == []
    assert len([s for _n, _a, s in batch_statements(text) if HAND_OVER.search(s)]) == 2


def test_cleanup_chrome_bat_is_blinter_clean_with_the_projects_settings():
    if importlib.util.find_spec("blinter") is None:
        if os.environ.get("CI"):
            pytest.fail("blinter is missing in CI (the dev extra installs it)")
        pytest.skip("blinter is not installed")
    config = str(REPO / "scripts" / "blinter.ini")

    out = subprocess.run(
        [sys.executable, "-m", "blinter", str(SCRIPT_BAT), "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert out.returncode == 0, out.stdout + out.stderr
    assert "W071" not in out.stdout and "W028" not in out.stdout
