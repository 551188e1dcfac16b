"""The stable interfaces of ``embassy-cleanup``: the JSON schema of
``diagnose --json`` (schema version 2, docs/cli.md), the node_exporter
textfile of ``--prometheus``, and the exit status of each command.

``clean --all`` runs only in-process (click's CliRunner) with the kill path
(``embassy_cleanup._clean.execute``) replaced by a recorder.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict

import pytest
from click.testing import CliRunner

import embassy_cleanup._clean as clean_module
import embassy_cleanup.cli as cli_module
from embassy_cleanup import ChromeUltraAggressiveCleanup
from tests.cli import (
    TOP_LEVEL_KEYS,
    PlanRecorder,
    chrome_named_exe,
    cli_json,
    crashed_owner,
    leaks_of,
    make_litter,
    run_cli,
    tiny_tmp_dir,
    wait_healthy,
    wait_zombie,
)

SID = re.compile(r"^[0-9a-f]{12}$")
NUMBER = (int, float)
PROCESS_FIELDS = {
    "pid": int,
    "ppid": int,
    "name": str,
    "user": str,
    "status": str,
    "class": str,
    "session_id": (str, type(None)),
    "age_s": NUMBER,
    "rss_bytes": int,
    "uss_bytes": (int, type(None)),
    "pss_bytes": (int, type(None)),
    "cmdline": str,
}
SESSION_FIELDS = {
    "session_id": str,
    "root": (str, type(None)),
    "root_exists": bool,
    "owner_pid": (int, type(None)),
    "owner_alive": bool,
    "pids": list,
    "contexts": (list, type(None)),  # open browser contexts (tests/cli/test_diagnose_contexts.py)
}
STALE_DIR_FIELDS = {"path": str, "kind": str, "age_s": NUMBER, "size_bytes": int, "kept": (str, type(None))}
CLASS_TOTAL_FIELDS = {
    "processes": int,
    "rss_bytes": int,
    "uss_bytes": (int, type(None)),
    "pss_bytes": (int, type(None)),
}
#: The metric families of ``--prometheus`` (docs/cli.md), all gauges.
METRICS = {
    "embassy_cleanup_processes",
    "embassy_cleanup_memory_bytes",
    "embassy_cleanup_sessions",
    "embassy_cleanup_stale_dirs",
    "embassy_cleanup_stale_dir_bytes",
    "embassy_cleanup_litter_dirs",
    "embassy_cleanup_litter_dir_bytes",
    "embassy_cleanup_healthy",
    "embassy_cleanup_scan_seconds",
}


def check_fields(entry, fields, where):
    assert set(entry) == set(fields), f"{where}: keys {sorted(entry)} != {sorted(fields)}"
    for key, types in fields.items():
        value = entry[key]
        assert isinstance(value, types), f"{where}.{key} = {value!r} is not {types}"
        if types is int or types is NUMBER:
            assert not isinstance(value, bool), f"{where}.{key} is a bool"


# -- the JSON schema ------------------------------------------------------------
@pytest.mark.chrome
def test_diagnose_json_has_exactly_the_documented_keys_and_field_types(
    crash, bystander, session_kwargs, tdir
):
    litter = make_litter(tdir)
    exe = chrome_named_exe(tdir)
    zombie = None
    cleanup = ChromeUltraAggressiveCleanup(**dict(session_kwargs, temp_root=tdir))
    try:
        with cleanup as driver:
            driver.get("data:text/html,<title>schema</title>")
            # after the start: a session start sweeps dead owners' sessions in its temp dir
            _owner, orphan, _snap = crashed_owner(crash, tdir)
            zombie = subprocess.Popen([exe])  # not reaped until the end: a zombie of the owner
            wait_zombie(zombie.pid)
            data, out = cli_json("diagnose", "--temp-dir", tdir, "--json")
    finally:
        if zombie is not None:
            zombie.wait()

    assert out.returncode == 1, out.stderr
    assert set(data) == TOP_LEVEL_KEYS
    assert data["schema"] == 2
    assert data["temp_dir"] == tdir
    assert data["healthy"] is False
    assert data["strict"] is False
    assert isinstance(data["took_s"], NUMBER) and data["took_s"] >= 0

    # every list has at least one entry here, so every entry's fields are checked
    lists = {
        "orphans": "orphan",
        "foreign": "foreign",
        "zombies": "zombie",
        "session_processes": "session",
    }
    for key, cls in lists.items():
        assert data[key], f"{key} is empty: the test set-up should have made one"
        for i, p in enumerate(data[key]):
            fields = dict(PROCESS_FIELDS, ours=bool) if key == "zombies" else PROCESS_FIELDS
            check_fields(p, fields, f"{key}[{i}]")
            assert p["class"] == cls
            if key in ("orphans", "session_processes"):
                assert SID.match(p["session_id"]), p
    assert data["sessions"]
    for i, s in enumerate(data["sessions"]):
        check_fields(s, SESSION_FIELDS, f"sessions[{i}]")
        assert SID.match(s["session_id"])
        assert all(isinstance(pid, int) for pid in s["pids"])
    kinds = {}
    for key in ("stale_dirs", "litter"):
        for i, d in enumerate(data[key]):
            check_fields(d, STALE_DIR_FIELDS, f"{key}[{i}]")
            kinds[d["path"]] = (key, d["kind"])
    assert kinds[litter] == ("litter", "chromium") and kinds[orphan["root"]] == ("stale_dirs", "session")
    assert set(kinds.values()) <= {("litter", "chromium"), ("stale_dirs", "session")}
    assert {p for p in kinds if p.startswith(tdir + os.sep)} == {litter, orphan["root"]}

    # what this test made is where it belongs
    sessions = {s["session_id"]: s for s in data["sessions"]}
    assert sessions[orphan["sid"]]["owner_alive"] is False
    assert sessions[cleanup.session_id]["owner_alive"] is True
    assert sessions[cleanup.session_id]["owner_pid"] == os.getpid()
    (z,) = [z for z in data["zombies"] if z["pid"] == zombie.pid]
    assert z["ours"] is True and z["session_id"] == cleanup.session_id

    # totals agree with the lists
    t = data["totals"]
    assert set(t) == {"session", "orphan", "foreign", "zombie", "stale_dirs", "litter", "sessions"}
    for cls, key in (
        ("session", "session_processes"),
        ("orphan", "orphans"),
        ("foreign", "foreign"),
        ("zombie", "zombies"),
    ):
        check_fields(t[cls], CLASS_TOTAL_FIELDS, f"totals.{cls}")
        assert t[cls]["processes"] == len(data[key])
        assert t[cls]["rss_bytes"] == sum(p["rss_bytes"] for p in data[key])
    for key in ("stale_dirs", "litter"):
        check_fields(t[key], {"count": int, "size_bytes": int}, f"totals.{key}")
        assert t[key]["count"] == len(data[key])
        assert t[key]["size_bytes"] == sum(d["size_bytes"] for d in data[key])
    check_fields(t["sessions"], {"live": int, "orphaned": int}, "totals.sessions")
    assert t["sessions"]["live"] == sum(1 for s in data["sessions"] if s["owner_alive"])
    assert t["sessions"]["orphaned"] == sum(1 for s in data["sessions"] if not s["owner_alive"])

    assert cleanup.report.ok, str(cleanup.report)
    clean = run_cli("clean", "--temp-dir", tdir)
    assert clean.returncode == 0, f"{clean.stdout}\n{clean.stderr}"


# -- --prometheus --------------------------------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)(?: (-?\d+))?$")
_META = re.compile(rf"^# (HELP|TYPE) ({_NAME})(?: (.*))?$")


def parse_textfile(text):
    """Parse the Prometheus text exposition format, as node_exporter's textfile
    collector reads it; fail on anything it would reject.  Returns
    ``{family: {"help": str, "type": str, "samples": {labels-tuple: float}}}``."""
    assert text.endswith("\n"), "the file must end with a newline"
    families = OrderedDict()
    current = None
    finished = set()
    for n, line in enumerate(text.splitlines(), 1):
        assert line.strip() == line and line, f"line {n}: blank or padded: {line!r}"
        meta = _META.match(line)
        if meta:
            kind, name, rest = meta.groups()
            assert name not in finished, f"line {n}: {name} appears in two separate groups"
            fam = families.setdefault(name, {"help": None, "type": None, "samples": {}})
            assert not fam["samples"], f"line {n}: # {kind} {name} after its samples"
            key = kind.lower()
            assert fam[key] is None, f"line {n}: a second # {kind} for {name}"
            assert rest, f"line {n}: empty # {kind}"
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
            if current is not None and current != name:
                finished.add(current)
            current = name
            fam[key] = rest
            continue
        assert not line.startswith("#"), f"line {n}: a comment that is neither HELP nor TYPE: {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"line {n}: not a sample line `name{{labels}} value`: {line!r}"
        name, labels, value, _ts = m.groups()
        assert name == current, f"line {n}: sample of {name} outside its # HELP/# TYPE group"
        fam = families[name]
        assert fam["help"] is not None and fam["type"] is not None, f"line {n}: {name} lacks HELP or TYPE"
        pairs = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        assert len({k for k, _v in pairs}) == len(pairs), f"line {n}: a label twice"
        assert pairs not in fam["samples"], f"line {n}: duplicate sample"
        number = float(value)  # raises on anything that is not a Go float
        assert not math.isnan(number), f"line {n}: NaN"
        fam["samples"][tuple(sorted(pairs))] = number
    return families


def test_the_prometheus_parser_rejects_what_node_exporter_rejects():
    good = '# HELP m_x Help.\n# TYPE m_x gauge\nm_x{a="1"} 2\nm_x{a="2"} 3.5\n'
    assert parse_textfile(good)["m_x"]["samples"] == {(("a", "1"),): 2.0, (("a", "2"),): 3.5}
    bad = [
        "m_x 1\n",  # no HELP/TYPE
        "# HELP m_x Help.\n# TYPE m_x gauge\nm_x 1",  # no final newline
        "# HELP m_x Help.\n# TYPE m_x gauge\nm_x one\n",  # not a number
        "# HELP m_x Help.\n# TYPE m_x gauge\nm_x{a=1} 1\n",  # unquoted label value
        "# HELP m_x Help.\n# TYPE m_x gauge\nm_x 1\nm_x 2\n",  # duplicate
        "# HELP m_x Help.\n# TYPE m_x gauge\n# HELP m_y H.\n# TYPE m_y gauge\nm_x 1\n",  # out of group
        "# HELP m_x Help.\n# TYPE m_x thing\nm_x 1\n",  # unknown type
    ]
    for text in bad:
        with pytest.raises((AssertionError, ValueError)):
            parse_textfile(text)


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_prometheus_writes_a_valid_node_exporter_textfile_matching_the_json(tmp_path, tdir, strict):
    litter = make_litter(tdir)
    prom = tmp_path / "embassy.prom"

    args = ["diagnose", "--temp-dir", tdir, "--json", "--prometheus", str(prom)]
    out = run_cli(*args, *(["--strict"] * strict))

    # litter alone: healthy, unless --strict counts it
    assert out.returncode == (1 if strict else 0), out.stderr
    data = json.loads(out.stdout)
    assert data["healthy"] is not strict and data["strict"] is strict
    families = parse_textfile(prom.read_text())
    assert set(families) == METRICS
    for name, fam in families.items():
        assert fam["type"] == "gauge", name
        assert fam["help"] and fam["samples"], name
    assert os.listdir(tmp_path) == ["embassy.prom"], "a temp file was left next to the textfile"

    t = data["totals"]
    procs = families["embassy_cleanup_processes"]["samples"]
    assert procs == {
        (("class", c),): float(t[c]["processes"]) for c in ("session", "orphan", "foreign", "zombie")
    }
    for labels, value in families["embassy_cleanup_memory_bytes"]["samples"].items():
        d = dict(labels)
        assert set(d) == {"class", "kind"} and d["kind"] in ("rss", "uss", "pss"), labels
        assert d["class"] in ("session", "orphan", "foreign"), labels
        assert value >= 0
    assert families["embassy_cleanup_sessions"]["samples"] == {
        (("state", "live"),): float(t["sessions"]["live"]),
        (("state", "orphaned"),): float(t["sessions"]["orphaned"]),
    }
    assert [d["path"] for d in data["litter"]] == [litter] and data["stale_dirs"] == []
    assert families["embassy_cleanup_stale_dirs"]["samples"] == {(): 0.0}
    assert families["embassy_cleanup_stale_dir_bytes"]["samples"] == {(): 0.0}
    assert families["embassy_cleanup_litter_dirs"]["samples"] == {(): 1.0}
    assert families["embassy_cleanup_litter_dir_bytes"]["samples"] == {(): float(len("litter"))}
    assert families["embassy_cleanup_healthy"]["samples"] == {(): 0.0 if strict else 1.0}
    assert families["embassy_cleanup_scan_seconds"]["samples"][()] >= 0


# -- exit codes -----------------------------------------------------------------
def test_diagnose_exits_0_when_healthy(tdir):
    healthy, data, rc = wait_healthy(tdir)

    assert healthy, f"diagnose exit {rc}; leaks: {leaks_of(data)}"
    assert rc == 0 and data["stale_dirs"] == [] and not data["orphans"]


def test_diagnose_with_only_chromium_litter_is_healthy_and_lists_it_apart(tdir):
    litter = make_litter(tdir)

    out = run_cli("diagnose", "--temp-dir", tdir)

    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()[:2]
    assert first == cli_module.HEALTHY
    assert second.startswith("litter: 1 ")
    assert litter in out.stdout


def test_diagnose_strict_exits_1_on_litter_and_its_hint_keeps_the_temp_dir(tdir):
    make_litter(tdir)

    out = run_cli("diagnose", "--temp-dir", tdir, "--strict")

    assert out.returncode == 1, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(cli_module.LEAKS_FOUND + ":")
    assert f"'embassy-cleanup clean --dry-run --temp-dir {tdir}'" in first


@pytest.mark.parametrize(
    "args, message",
    [
        (("diagnose", "--bogus"), "No such option '--bogus'"),
        (("diagnose", "--temp-dir", "/nonexistent/embassy"), "Invalid value for '--temp-dir'"),
        (("clean", "--older-than", "-1"), "Invalid value for '--older-than'"),
        (("watch", "--interval", "0"), "Invalid value for '--interval'"),
    ],
    ids=["diagnose-bogus", "diagnose-missing-dir", "clean-negative-age", "watch-0"],
)
def test_usage_errors_exit_2(tdir, args, message):
    cmd = list(args)
    if "--temp-dir" not in cmd and args[0] in ("diagnose", "clean", "watch"):
        cmd += ["--temp-dir", tdir]

    out = run_cli(*cmd)

    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert out.stdout == ""
    assert f"Usage: embassy-cleanup {args[0]}" in out.stderr
    assert message in out.stderr


def test_clean_all_users_without_all_is_refused_as_root_too(tdir):
    out = run_cli("clean", "--all-users", "--temp-dir", tdir)

    assert out.returncode == 2
    expected = "--all-users only makes sense with --all" if os.geteuid() == 0 else "--all-users needs root"
    assert expected in out.stderr


def _as_non_root():
    """A command prefix that runs as a non-root user: nothing when we are not
    root; ``setpriv`` to nobody when we are (skip without it)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: cannot test as a non-root user")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import embassy_cleanup.cli"], capture_output=True)
    if probe.returncode != 0:  # e.g. a checkout under /root (mode 700) on a fresh Debian
        pytest.skip("the checkout or its .venv is not readable by another user: cannot run the CLI as nobody")
    return prefix


@pytest.mark.parametrize("args", [("diagnose", "--all-users"), ("clean", "--all-users")])
def test_all_users_as_a_non_root_user_exits_2(args):
    prefix = _as_non_root()

    with tiny_tmp_dir() as tiny:  # under the system temp dir: a non-root user can see it
        out = run_cli(*args, "--temp-dir", tiny, prefix=prefix)

    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert "Error: --all-users needs root: other users' processes are not yours to inspect" in out.stderr
    assert out.stdout == ""


# -- clean --all: refusal and confirmation, in-process with the kill path faked --
@pytest.fixture
def recorder(monkeypatch):
    rec = PlanRecorder()
    monkeypatch.setattr(clean_module, "execute", rec)
    return rec


class _TtyStdin:
    def __init__(self, real):
        self._real = real

    def isatty(self):
        return True

    def __getattr__(self, name):
        return getattr(self._real, name)


class _SysWithATerminal:
    """``sys`` for embassy_cleanup.cli, except that stdin says it is a terminal."""

    def __getattr__(self, name):
        return getattr(sys, name)

    @property
    def stdin(self):
        return _TtyStdin(sys.stdin)


@pytest.mark.chrome
def test_clean_all_without_yes_and_no_terminal_exits_2_and_does_nothing(recorder, bystander, tdir):
    # the bystander guarantees at least one Chrome-family process to ask about
    result = CliRunner().invoke(cli_module.cli, ["clean", "--all", "--temp-dir", tdir])

    assert result.exit_code == 2, result.output
    assert "--all needs --yes when there is no terminal to confirm on" in result.stderr
    assert "WARNING: --all kills" in result.stderr
    assert recorder.plans == []


@pytest.mark.chrome
@pytest.mark.parametrize("answer, status", [("n\n", 1), ("\n", 1), ("y\n", 0)], ids=["no", "default", "yes"])
def test_clean_all_asks_on_a_terminal_and_acts_only_on_yes(
    monkeypatch, recorder, bystander, tdir, answer, status
):
    monkeypatch.setattr(cli_module, "sys", _SysWithATerminal())

    result = CliRunner().invoke(cli_module.cli, ["clean", "--all", "--temp-dir", tdir], input=answer)

    assert result.exit_code == status, result.output
    assert "Kill them? [y/N]" in result.stderr
    if status == 0:
        (plan,) = recorder.plans
        kills = {int(a.target) for a in plan if a.kind == "kill-process"}
        assert set(bystander.alive_chrome_pids()) <= kills
    else:
        assert "nothing done" in result.stderr
        assert recorder.plans == []


def test_clean_all_all_users_as_a_non_root_user_exits_2_before_anything(monkeypatch, recorder, tdir):
    monkeypatch.setattr(cli_module.os, "geteuid", lambda: 1000)

    result = CliRunner().invoke(
        cli_module.cli, ["clean", "--all", "--all-users", "--yes", "--temp-dir", tdir]
    )

    assert result.exit_code == 2, result.output
    assert "--all-users needs root" in result.stderr
    assert recorder.plans == []
