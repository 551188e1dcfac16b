"""The ``embassy-cleanup`` command: help, usage errors, the console script,
and the demo against real Chrome."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil
import pytest

import embassy_cleanup
from embassy_cleanup import Stage
from tests import _helpers as h

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embassy_cleanup", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def test_help_should_describe_the_command_and_list_demo():
    out = run_cli("--help")

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: embassy-cleanup")
    assert "Chrome under Selenium that leaves nothing behind" in out.stdout
    assert "demo" in out.stdout


def test_demo_help_should_describe_the_demo_its_options_and_exit_status():
    out = run_cli("demo", "--help")

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: embassy-cleanup demo")
    for text in ("built-in page", "cleanup report", "--json", "--preset", "--fast", "--cleanup-timeout"):
        assert text in out.stdout, text
    assert "0 clean, 1 leftovers, 2" in " ".join(out.stdout.split())


def test_version_should_print_the_package_version():
    out = run_cli("--version")

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"embassy-cleanup {embassy_cleanup.__version__}"


@pytest.mark.parametrize("args", [("frobnicate",), ()], ids=["unknown", "missing"])
def test_a_bad_command_should_exit_2_with_usage_on_stderr(args):
    out = run_cli(*args)

    assert out.returncode == 2
    assert out.stdout == ""
    assert "Usage: embassy-cleanup" in out.stderr
    if args:
        assert "No such command 'frobnicate'" in out.stderr


def test_demo_should_exit_2_naming_a_bad_option():
    out = run_cli("demo", "--cleanup-timeout", "0")

    assert out.returncode == 2
    assert "Error: Invalid value for '--cleanup-timeout'" in out.stderr
    assert "0.0" in out.stderr


def test_demo_should_exit_2_naming_where_a_missing_chromedriver_came_from(tmp_path):
    missing = str(tmp_path / "chromedriver")

    out = run_cli("demo", CHROMEDRIVER_PATH=missing)

    assert out.returncode == 2
    assert "embassy-cleanup: error:" in out.stderr
    assert missing in out.stderr and "CHROMEDRIVER_PATH" in out.stderr


def test_console_script_should_be_installed_with_the_interpreter():
    script = Path(sysconfig.get_path("scripts")) / "embassy-cleanup"

    assert script.is_file() and os.access(script, os.X_OK), f"no console script at {script}"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"embassy-cleanup {embassy_cleanup.__version__}"


def _watchdogs_of(owner: int) -> list[psutil.Process]:
    """The demo's watchdog (``python -c WATCHDOG_ENTRY OWNER ...``), keyed on the demo's PID."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "embassy_cleanup._watchdog" in cmd and str(owner) in cmd:
            out.append(proc)
    return out


@pytest.mark.chrome
def test_demo_should_exit_0_with_a_clean_six_stage_report_and_leave_nothing():
    demo = subprocess.Popen(
        [sys.executable, "-m", "embassy_cleanup", "demo", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        stdout, stderr = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()

    assert demo.returncode == 0, stderr
    report = json.loads(stdout)  # with --json, stdout is the JSON alone; progress is on stderr
    assert report["ok"] is True, report
    assert report["leftovers"] == []
    assert [s["stage"] for s in report["stages"]] == [s.value for s in Stage]

    # The session lived in the system temp dir, outside the leak guard's view: check it here.
    (root,) = [p for s in report["stages"] for p in s["removed"]]
    assert os.path.basename(root) == f"embassy_cleanup-{report['session_id']}"
    assert f"in {root}" in stderr
    assert not os.path.lexists(root)
    leftovers = h.processes_under(root)
    h.kill_all(leftovers)
    assert [p.pid for p in leftovers] == []
    gone = h.wait_until(lambda: not _watchdogs_of(demo.pid), timeout=10)
    watchdogs = _watchdogs_of(demo.pid)
    h.kill_all(watchdogs)
    assert gone, f"the demo's watchdog outlived it: {[p.pid for p in watchdogs]}"


# -- the wheel: what a pip install gets ------------------------------------------
#: What the wheel is built from (a copy, so the build leaves nothing in the checkout).
SOURCE = [
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "cleanup_chrome.sh",
    "cleanup_chrome.bat",
    "embassy_cleanup",
]


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """The package built as a wheel and pip-installed with its dependencies
    (from PyPI, through pip's cache) into a fresh venv; returns its bin dir."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    run = dict(capture_output=True, text=True, env=_pip_env(), cwd=tmp, timeout=300, check=False)
    built = subprocess.run([*pip, "wheel", str(src), "--no-deps", "-w", str(tmp / "dist")], **run)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("embassy_cleanup-*.whl")
    venv = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], **run)
    assert venv.returncode == 0, venv.stderr
    python = tmp / "venv" / "bin" / "python"
    installed = subprocess.run([*pip, "--python", str(python), "install", str(wheel)], **run)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return tmp / "venv" / "bin"


def _run_installed(bindir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bindir / "embassy-cleanup"), *args],
        capture_output=True,
        env=_pip_env(),
        cwd=bindir,  # not the checkout: the installed package is imported
        timeout=timeout,
        check=False,
    )


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_console_script(installed_wheel):
    where = subprocess.run(
        [str(installed_wheel / "python"), "-c", "import embassy_cleanup; print(embassy_cleanup.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed_wheel,
        env=_pip_env(),
        timeout=60,
        check=False,
    )
    out = _run_installed(installed_wheel, "--version")

    assert where.stdout.startswith(str(installed_wheel.parent)), where.stdout + where.stderr
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == f"embassy-cleanup {embassy_cleanup.__version__}"


@pytest.mark.parametrize("kind", ["sh", "bat"])
def test_the_installed_package_prints_the_clean_up_scripts_byte_for_byte(installed_wheel, kind):
    out = _run_installed(installed_wheel, "script", kind)
    path = _run_installed(installed_wheel, "script", kind, "--path")

    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / f"cleanup_chrome.{kind}").read_bytes()
    assert path.stdout.decode().strip().startswith(str(installed_wheel.parent)), path.stdout


@pytest.mark.chrome
def test_the_installed_package_runs_the_demo_clean(installed_wheel):
    out = _run_installed(installed_wheel, "demo", "--json", timeout=120)

    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["leftovers"] == [], report
    (root,) = [p for s in report["stages"] for p in s["removed"]]
    assert not os.path.lexists(root)
    leftovers = h.processes_under(root)
    h.kill_all(leftovers)
    assert [p.pid for p in leftovers] == []


def test_script_with_an_unknown_kind_exits_2():
    out = run_cli("script", "ps1")

    assert out.returncode == 2
    assert "'ps1' is not one of 'bat', 'sh'" in out.stderr


@pytest.mark.parametrize("kind", ["sh", "bat"])
def test_script_in_the_checkout_prints_the_top_level_script(kind):
    out = subprocess.run(
        [sys.executable, "-m", "embassy_cleanup", "script", kind], capture_output=True, cwd=REPO, timeout=60
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / f"cleanup_chrome.{kind}").read_bytes()


# -- the docs show the real output --------------------------------------------------
DOCS = REPO / "docs"


@pytest.mark.parametrize("command", ["", "demo", "diagnose", "clean", "stress", "watch", "script"])
def test_docs_cli_md_shows_each_commands_real_help(command):
    out = run_cli(*([command] if command else []), "--help", COLUMNS="80")

    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") in (DOCS / "cli.md").read_text(), f"docs/cli.md: stale help of {command!r}"


def test_docs_usage_md_shows_the_real_demo_help_and_cleanup_timeout_error():
    usage = (DOCS / "usage.md").read_text()
    helptext = run_cli("demo", "--help", COLUMNS="80")
    refused = run_cli("demo", "--cleanup-timeout", "0")

    assert helptext.stdout.rstrip("\n") in usage
    assert refused.returncode == 2
    assert refused.stderr.rstrip("\n") in usage
