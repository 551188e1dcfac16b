"""A one-iteration smoke run of the benchmark harness, so it cannot rot.
No timing is asserted: figures live in docs/benchmarks.md, not in tests."""

import json
import os
import subprocess
import sys

import pytest

from tests import _helpers as h

pytestmark = pytest.mark.chrome
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_smoke_run_should_write_every_section(tmp_path):
    md, js = tmp_path / "bench.md", tmp_path / "bench.json"
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bench", "run.py"),
            "--smoke",
            "--md",
            str(md),
            "--json",
            str(js),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(js.read_text())
    assert set(res) >= {
        "date",
        "machine",
        "lifecycle",
        "frozen",
        "crash",
        "footprint",
        "scale",
        "pool",
        "contexts",
    }
    assert res["pool"]["pool_clean"] and res["pool"]["pool_stats"]["errors"] == 0, res["pool"]
    assert res["lifecycle"]["ratios"]["start_ours_vs_plain"] is not None
    assert all(v["renders_correctly"] for v in res["footprint"].values()), res["footprint"]
    assert {"headless-shell/static", "headless-shell/heavy"} <= set(res["footprint"])
    assert res["lifecycle"]["ours_fast_stages_ms"]  # the per-stage figures the report explains
    # the physical floor, measured in the same run, and the fast mode's ratio to it
    assert res["lifecycle"]["floor_kill_gone"]["n"] == 1
    assert res["lifecycle"]["ratios"]["fast_clean_vs_floor"] is not None
    # the contexts section: every approach side by side, each target with its verdict
    ctx = res["contexts"]
    for key in ("fresh_c1", "pool_c4", "context_c1", "context_c4", "context_create_remove_s"):
        assert ctx[key] > 0, (key, ctx)
    assert ctx["context_reports_ok_c1"] and ctx["context_reports_ok_c4"], ctx
    assert {t["target"].split(" at ")[0] for t in ctx["targets"]} >= {"tree PSS per concurrent isolated job"}
    assert res["scale"]["swept"] == res["scale"]["stale_dirs"]
    text = md.read_text()
    for heading in (
        "## Start-up and teardown",
        "## Footprint per preset",
        "## Bookkeeping at scale",
        "## Pool vs a fresh session per job",
        "### Against the physical floor",
        "## Isolated jobs: browser contexts",
    ):
        assert heading in text
    # The harness cleans up after itself, plain Selenium sessions included.
    assert not [p for p in h.processes_under("embassy-b-")], "the bench left processes"
