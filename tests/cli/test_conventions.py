"""CLI conventions (issue 16): -v/-q after the command, Ctrl-C exits 130,
environment-variable defaults, errors that name the source of a bad value,
shell completion, and diagnose's summary first with trees on demand."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

import embassy_cleanup.cli as cli_module
from embassy_cleanup._grid_node import GridInventory, render
from tests import _helpers as h
from tests.cli import REPO, clean_env, make_litter, run_cli, tiny_tmp_dir

#: Options that must never take a default from the environment: a stray
#: variable in a crontab must not widen what clean kills or change the output.
NEVER_FROM_ENV = {"all_processes", "yes", "all_users", "dry_run", "as_json", "grid_url"}


@pytest.fixture
def logging_reset():
    yield
    cli_module.configure_logging(0)


# -- -v / -q --------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, env, level",
    [
        (["-v", "script", "sh", "--path"], {}, logging.INFO),
        (["script", "sh", "--path", "-v"], {}, logging.INFO),
        (["script", "sh", "--path", "-vv"], {}, logging.DEBUG),
        (["-v", "script", "sh", "--path", "-v"], {}, logging.DEBUG),
        (["script", "sh", "--path", "-q"], {}, logging.ERROR),
        (["script", "sh", "--path"], {"EMBASSY_CLEANUP_VERBOSE": "1"}, logging.INFO),
        (["script", "sh", "--path", "-q"], {"EMBASSY_CLEANUP_VERBOSE": "2"}, logging.INFO),
    ],
    ids=["before", "after", "after-vv", "both-add-up", "quiet", "env", "env-and-quiet"],
)
def test_verbosity_flags_work_before_and_after_the_command_and_add_up(logging_reset, args, env, level):
    result = CliRunner().invoke(cli_module.cli, args, env=env)

    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level


def test_diagnose_accepts_v_after_the_command(tdir):
    out = run_cli("diagnose", "-v", "--temp-dir", tdir, "--json", "-q")

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["healthy"] is True


# -- Ctrl-C -----------------------------------------------------------------------
def _interrupt_after(args, lines: int, timeout: float = 60) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "embassy_cleanup", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=clean_env(),
    )
    try:
        for _ in range(lines):
            assert proc.stdout.readline(), "the command ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_ctrl_c_in_watch_exits_130(tdir):
    # the header and a first sample: watch is in its sampling loop
    rc, err = _interrupt_after(["watch", "--interval", "1", "--duration", "600", "--temp-dir", tdir], 2)

    assert rc == cli_module.EXIT_INTERRUPTED == 130, err
    assert "Traceback" not in err


@pytest.mark.chrome
def test_ctrl_c_in_stress_exits_130_and_leaves_nothing():
    with tiny_tmp_dir() as tiny:
        args = ["stress", "-n", "50", "-s", "normal", "--temp-dir", tiny]
        rc, err = _interrupt_after(args, 1, timeout=120)  # after the first iteration's line

        leftovers = h.processes_under(tiny.rstrip(os.sep) + os.sep)
        h.kill_all(leftovers)
        assert rc == cli_module.EXIT_INTERRUPTED, err
        assert [p.pid for p in leftovers] == []
        assert os.listdir(tiny) == [], "the interrupted run left its run dir"


# -- environment-variable defaults ------------------------------------------------
def test_every_env_var_belongs_to_an_option_and_none_widens_what_clean_does():
    seen = set()
    for command in cli_module.cli.commands.values():
        for param in command.params:
            if param.name in NEVER_FROM_ENV:
                assert param.envvar is None, f"{command.name} {param.name} reads {param.envvar}"
            if param.name in cli_module.ENV_VARS and param.name not in ("verbose", "quiet"):
                assert param.envvar == cli_module.ENV_VARS[param.name], (command.name, param.name)
                seen.add(param.name)
    top = {p.name: p.envvar for p in cli_module.cli.params if p.name in ("verbose", "quiet")}
    assert top == {"verbose": "EMBASSY_CLEANUP_VERBOSE", "quiet": "EMBASSY_CLEANUP_QUIET"}
    assert seen | set(top) == set(cli_module.ENV_VARS)
    assert all(v.startswith("EMBASSY_CLEANUP_") for v in cli_module.ENV_VARS.values())


def test_temp_dir_and_strict_come_from_the_environment(tdir):
    make_litter(tdir)

    out = run_cli("diagnose", "--json", EMBASSY_CLEANUP_TEMP_DIR=tdir, EMBASSY_CLEANUP_STRICT="1")

    assert out.returncode == cli_module.EXIT_LEAKS, out.stderr
    data = json.loads(out.stdout)
    assert data["temp_dir"] == tdir and data["strict"] is True
    assert [d["kind"] for d in data["litter"]] == ["chromium"]


def test_a_flag_wins_over_its_environment_variable(tdir):
    out = run_cli("diagnose", "--temp-dir", tdir, "--json", EMBASSY_CLEANUP_TEMP_DIR="/nonexistent/ec")

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["temp_dir"] == tdir


def test_a_bad_value_from_the_environment_names_the_variable_not_the_flag():
    out = run_cli("diagnose", EMBASSY_CLEANUP_TEMP_DIR="/nonexistent/ec")

    assert out.returncode == cli_module.EXIT_USAGE
    assert "Invalid value for EMBASSY_CLEANUP_TEMP_DIR" in out.stderr
    assert "Invalid value for '--temp-dir'" not in out.stderr


def test_a_bad_value_from_the_flag_names_the_flag_not_the_variable():
    out = run_cli("diagnose", "--temp-dir", "/nonexistent/ec")

    assert out.returncode == cli_module.EXIT_USAGE
    assert "Invalid value for '--temp-dir'" in out.stderr
    assert "EMBASSY_CLEANUP_TEMP_DIR" not in out.stderr


def test_stress_with_a_too_long_tmpdir_names_tmpdir_not_the_flag(tdir):
    long_dir = os.path.join(tdir, "a-temp-dir-that-is-too-long-for-chrome")
    os.mkdir(long_dir)

    out = run_cli("stress", "-n", "1", "-s", "normal", TMPDIR=long_dir)

    assert out.returncode == cli_module.EXIT_USAGE, out.stdout + out.stderr
    assert "Invalid value for $TMPDIR" in out.stderr and long_dir in out.stderr
    assert "Invalid value for '--temp-dir'" not in out.stderr
    assert os.listdir(long_dir) == [], "a refused run must not start"


# -- shell completion ---------------------------------------------------------------
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    "words, expected",
    [
        (["di"], ["diagnose"]),
        (["diagnose", "--st"], ["--strict"]),
        (["script", ""], ["bat", "sh"]),
        (["demo", "--preset", ""], ["balanced", "headless-shell", "minimal", "stock"]),
    ],
    ids=["command", "option", "argument", "choice"],
)
def test_bash_completion_as_documented_completes_commands_options_and_values(tmp_path, words, expected):
    # what docs/cli.md tells users to put in ~/.bashrc, with this checkout on PATH
    wrapper = tmp_path / "embassy-cleanup"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m embassy_cleanup "$@"\n')
    wrapper.chmod(0o755)
    script = (
        'eval "$(_EMBASSY_CLEANUP_COMPLETE=bash_source embassy-cleanup)"\n'
        f"COMP_WORDS=(embassy-cleanup {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        "_embassy_cleanup_completion embassy-cleanup\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = clean_env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))

    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )

    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == expected


# -- diagnose: summary first, trees on demand -------------------------------------
@pytest.mark.parametrize(
    "limit, flags, shown",
    [(10**6, [], True), (-1, [], False), (-1, ["--tree"], True), (10**6, ["--no-tree"], False)],
    ids=["few", "many", "many-with-tree", "few-with-no-tree"],
)
def test_diagnose_prints_the_summary_first_and_the_trees_only_when_few_or_asked(
    monkeypatch, tdir, limit, flags, shown
):
    monkeypatch.setattr(cli_module, "TREE_AUTO_MAX", limit)

    result = CliRunner().invoke(cli_module.cli, ["diagnose", "--temp-dir", tdir, "--no-memory", *flags])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == cli_module.HEALTHY
    assert ("Process trees" in lines) is shown
    assert any(line.startswith("Process trees: ") and "--tree" in line for line in lines) is not shown


def test_the_exit_codes_are_the_documented_constants():
    assert (cli_module.EXIT_OK, cli_module.EXIT_LEAKS, cli_module.EXIT_USAGE) == (0, 1, 2)
    assert cli_module.EXIT_INTERRUPTED == 128 + signal.SIGINT
    assert isinstance(cli_module.cli, click.Group)


def test_the_grid_hint_names_the_users_grid_url_not_a_placeholder():
    url = "http://grid.example:4444"
    root = SimpleNamespace(pid=4242)
    orphan = SimpleNamespace(cls="orphan", root=root, procs=[1, 2], session_id=None, reason="gone")

    lines = render(GridInventory(url=url, jvm_pids=[1], sessions=[], trees=[orphan]))

    assert f"'embassy-cleanup clean --grid {url}'" in lines[-1]
