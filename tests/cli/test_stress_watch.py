"""``embassy-cleanup stress`` (a short real run) and ``embassy-cleanup watch``.

``stress`` puts its run dir (``embassy-st-XXXXXXXX``) inside ``--temp-dir``
and its sessions inside that, so ``--temp-dir`` may have at most 9
characters for Chrome's socket path to fit: the real run uses a fresh
``/tmp/e???`` dir of this test run (``tiny_tmp_dir``), and checks itself that
nothing marked with it is left.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from tests import _helpers as h
from tests.cli import cli_json, make_litter, run_cli, tiny_tmp_dir

SUMMARY_KEYS = {
    "iterations",
    "leaked_processes",
    "zombies",
    "leaked_dirs",
    "errors",
    "owner_fd_growth",
    "teardown_p50_s",
    "teardown_p95_s",
    "teardown_max_s",
    "ok",
}
ITERATION_KEYS = {
    "index",
    "scenario",
    "teardown_s",
    "leaked_processes",
    "leaked_dirs",
    "zombies",
    "fds",
    "chrome_processes",
    "chrome_rss_bytes",
    "error",
}
SAMPLE_KEYS = {
    "time",
    "processes",
    "session",
    "orphan",
    "foreign",
    "zombie",
    "stale_dirs",
    "litter",
    "rss_bytes",
}
SCENARIOS = ["normal", "kill-browser", "sigkill-owner"]


@pytest.fixture
def tiny():
    with tiny_tmp_dir() as path:
        yield path


def _marked(path):
    return h.processes_under(path.rstrip(os.sep) + os.sep)


# -- stress -----------------------------------------------------------------------
@pytest.mark.chrome
def test_a_short_stress_run_of_three_scenarios_finds_no_leak(tiny):
    args = ["stress", "-n", "3", *(a for s in SCENARIOS for a in ("-s", s)), "--temp-dir", tiny, "--json"]

    out = run_cli(*args, timeout=170)

    leftovers = _marked(tiny)
    h.kill_all(leftovers)
    assert not leftovers, f"the stress run left processes: {[p.pid for p in leftovers]}"
    assert os.listdir(tiny) == [], "the stress run left its run dir"
    result = json.loads(out.stdout)
    summary = result["summary"]
    assert set(summary) == SUMMARY_KEYS
    assert out.returncode == 0, f"{json.dumps(result, indent=1)}\n{out.stderr}"
    assert summary["iterations"] == 3
    assert summary["leaked_processes"] == summary["zombies"] == summary["leaked_dirs"] == 0, summary
    assert summary["errors"] == 0 and summary["ok"] is True, result["iterations"]
    assert summary["owner_fd_growth"] <= 0
    assert 0 < summary["teardown_p50_s"] <= summary["teardown_p95_s"] <= summary["teardown_max_s"]
    assert [it["scenario"] for it in result["iterations"]] == SCENARIOS
    for i, it in enumerate(result["iterations"], 1):
        assert set(it) == ITERATION_KEYS
        assert it["index"] == i and it["error"] is None
        assert it["leaked_processes"] == it["leaked_dirs"] == it["zombies"] == []


def test_stress_with_an_unknown_scenario_exits_2_naming_the_choices(tiny):
    out = run_cli("stress", "-n", "1", "-s", "normal", "-s", "fly-to-the-moon", "--temp-dir", tiny)

    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert "unknown scenario(s) fly-to-the-moon" in out.stderr
    assert "normal, exception, sigkill-owner, sigterm-owner, kill-driver, kill-browser" in out.stderr
    assert os.listdir(tiny) == [], "a refused run must not start"


def test_stress_with_a_temp_dir_too_long_for_its_run_dir_is_refused_or_runs(tdir):
    out = run_cli("stress", "-n", "1", "-s", "normal", "--temp-dir", tdir, "--json")

    assert out.returncode in (0, 2), f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    if out.returncode == 2:
        assert "--temp-dir" in out.stderr and "Traceback" not in out.stderr


def test_stress_plot_without_the_plot_extra_is_refused_before_any_iteration(tiny, tmp_path, monkeypatch):
    # In-process, with matplotlib made unimportable, so this runs whether or
    # not the plot extra is installed.
    import sys

    from click.testing import CliRunner

    from embassy_cleanup import _stress
    from embassy_cleanup.cli import cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    ran = []
    monkeypatch.setattr(_stress, "run_stress", lambda *a, **k: ran.append(a))
    png = tmp_path / "stress.png"

    args = ["stress", "-n", "1", "-s", "normal", "--temp-dir", tiny, "--plot", str(png)]
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 2, result.output
    assert "embassy_cleanup[plot]" in result.output
    assert ran == [], "iterations ran before the missing extra was noticed"
    assert not png.exists()


@pytest.mark.chrome
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plot extra is not installed")
def test_stress_plot_should_draw_a_png_of_the_iterations(tiny, tmp_path):
    png = tmp_path / "stress.png"

    out = run_cli("stress", "-n", "2", "-s", "normal", "--temp-dir", tiny, "--plot", str(png))

    h.kill_all(_marked(tiny))
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# -- watch --------------------------------------------------------------------
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_watch_json_prints_one_sample_per_interval_with_the_documented_keys(tdir, strict):
    make_litter(tdir)

    # Two samples need the first one to end before --duration does: under
    # load one inventory took more than the 0.5 s this test used to allow.
    args = ["watch", "--interval", "1", "--duration", "2", "--temp-dir", tdir, "--json"]
    out = run_cli(*args, *(["--strict"] * strict))

    lines = out.stdout.splitlines()
    assert len(lines) >= 2, out.stdout
    samples = [json.loads(line) for line in lines]
    for s in samples:
        assert set(s) == SAMPLE_KEYS, s
        assert all(isinstance(s[k], int) and not isinstance(s[k], bool) for k in SAMPLE_KEYS - {"time"})
        assert s["processes"] == s["session"] + s["orphan"] + s["foreign"]
        assert s["litter"] == 1 and s["stale_dirs"] == 0, "the litter dir in --temp-dir is not counted"
    assert all(len(s["time"]) == 8 and s["time"].count(":") == 2 for s in samples)
    assert out.returncode == (1 if strict else 0), "litter is a leak only with --strict"


@pytest.mark.chrome
def test_watch_reports_the_memory_of_the_chrome_processes_it_counts(bystander, tdir):
    data, out = cli_json("watch", "--interval", "0.2", "--duration", "0", "--temp-dir", tdir, "--json")

    assert data["foreign"] >= len(bystander.alive_chrome_pids()) >= 4, data
    assert data["rss_bytes"] > 0, data


def test_watch_text_prints_a_header_and_one_row_per_sample(tdir):
    out = run_cli("watch", "--interval", "0.2", "--duration", "0", "--temp-dir", tdir)

    header, *rows = out.stdout.splitlines()
    columns = ["time", "procs", "sess", "orph", "foreign", "zomb", "stale", "litter", "RSS", "MiB"]
    assert header.split() == columns
    assert len(rows) == 1, out.stdout
    assert rows[0].split()[6:8] == ["0", "0"], "stale dirs or litter in an empty --temp-dir"
    assert out.returncode in (0, 1)
