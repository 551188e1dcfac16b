"""The report records (stable JSON, ok, str, stage lookup) and the error tree
(attributes, pickling, public module, messages)."""

from __future__ import annotations

import json
import pickle

import pytest

import embassy_cleanup
from embassy_cleanup import (
    CleanupIncomplete,
    CleanupReport,
    ConfigError,
    DriverNotFoundError,
    EmbassyCleanupError,
    GridError,
    LaunchError,
    LeaseExpiredError,
    Leftover,
    Outcome,
    PoolClosedError,
    PoolError,
    PoolFullError,
    PoolTimeoutError,
    ProcessAction,
    SessionClosedError,
    Stage,
    StageResult,
)
from embassy_cleanup._teardown import NOTE_NOTHING_LEFT, NOTE_PORT_NOT_OURS
from tests._helpers import has_note, is_note

REPORT_KEYS = {"session_id", "ok", "duration_s", "passes", "stages", "leftovers", "errors"}
STAGE_KEYS = {"stage", "duration_s", "killed", "removed", "survivors", "skipped_reason", "errors", "notes"}


def make_report(leftovers: tuple[Leftover, ...] = (), extra: tuple[StageResult, ...] = ()) -> CleanupReport:
    stages = (
        StageResult(Stage.QUIT, 0.25, skipped_reason="graceful=False"),
        StageResult(
            Stage.KILL_TREE,
            0.5,
            killed=(ProcessAction(101, "chromium", Outcome.TERMINATED, "descendant"),),
            survivors=(ProcessAction(102, "chromium", Outcome.SURVIVED, "cmdline"),),
        ),
        StageResult(Stage.PORTS, 0.01, notes=("port 9515 held by pid 7, not ours: left alone",)),
        StageResult(Stage.OS_KILL, 0.02, errors=("pgrep failed",)),
        StageResult(Stage.PROFILE, 0.03, removed=("/tmp/embassy_cleanup-0123456789ab",)),
        StageResult(Stage.VERIFY, 0.04),
    )
    return CleanupReport("0123456789ab", stages + extra, leftovers, duration_s=0.85, passes=1 + len(extra))


# -- Stage ---------------------------------------------------------------------------
def test_stage_values_should_be_the_six_tokens_in_teardown_order():
    assert [s.value for s in Stage] == ["quit", "tree-kill", "ports", "os-kill", "profile", "verify"]
    assert [str(s) for s in Stage] == [s.value for s in Stage]


# -- CleanupReport -----------------------------------------------------------------
def test_to_dict_should_pass_json_dumps_with_the_stable_keys():
    report = make_report(leftovers=(Leftover("process", "chromium", 102),))

    data = json.loads(json.dumps(report.to_dict()))

    assert set(data) == REPORT_KEYS
    assert data["session_id"] == "0123456789ab"
    assert data["ok"] is False
    assert data["passes"] == 1
    assert [s["stage"] for s in data["stages"]] == [s.value for s in Stage]
    assert all(set(s) == STAGE_KEYS for s in data["stages"])
    assert data["stages"][1]["killed"] == [
        {"pid": 101, "name": "chromium", "outcome": Outcome.TERMINATED.value, "via": "descendant"}
    ]
    assert data["leftovers"] == [{"kind": "process", "detail": "chromium", "pid": 102}]
    assert data["errors"] == ["os-kill: pgrep failed"]


@pytest.mark.parametrize("leftovers", [(), (Leftover("dir", "/tmp/x"),), (Leftover("port", "9515"),)])
def test_ok_should_be_false_exactly_when_there_are_leftovers(leftovers):
    report = make_report(leftovers=leftovers)

    assert report.ok is (not leftovers)
    assert report.to_dict()["ok"] is (not leftovers)


def test_ok_should_not_depend_on_stage_errors():
    assert make_report().errors == ("os-kill: pgrep failed",)
    assert make_report().ok is True


def test_str_should_print_a_head_line_then_one_line_per_stage_and_one_per_further_note():
    report = make_report()

    lines = str(report).splitlines()
    stage_lines = [ln for ln in lines[1:] if not ln.startswith("   ")]

    assert "0123456789ab" in lines[0] and "ok" in lines[0]
    assert [ln.split()[0] for ln in stage_lines] == [s.stage.value for s in report.stages]
    assert "skipped: graceful=False" in stage_lines[0]
    assert "1 survived" in stage_lines[1]
    notes_and_errors = sum(len(s.notes) + len(s.errors) for s in report.stages)
    counted = sum(
        1
        for s in report.stages
        if s.skipped_reason is None and not (s.killed or s.removed or s.survivors) and s.notes
    )
    assert len(lines) == 1 + len(report.stages) + notes_and_errors - counted, "one line per note"


def test_str_should_add_one_line_per_leftover():
    report = make_report(leftovers=(Leftover("process", "chromium", 102), Leftover("dir", "/tmp/x")))

    lines = str(report).splitlines()

    assert "LEFTOVERS" in lines[0]
    assert lines[-2:] == ["  leftover: process chromium (pid=102)", "  leftover: dir /tmp/x"]


def test_stage_should_return_the_last_result_of_a_stage_that_ran_twice():
    killed = (ProcessAction(103, "chromium", Outcome.KILLED, "env"),)
    second = StageResult(Stage.KILL_TREE, 0.75, killed=killed)
    report = make_report(extra=(second,))

    assert report.stage("tree-kill") is second
    assert report.stage(Stage.KILL_TREE) is second
    assert report.stage("quit").skipped_reason == "graceful=False"


def test_stage_should_refuse_unknown_and_missing_stages():
    report = CleanupReport("0123456789ab", (StageResult(Stage.QUIT, 0.1),), (), 0.1)

    with pytest.raises(KeyError):
        report.stage(Stage.VERIFY)
    with pytest.raises(ValueError):
        report.stage("no-such-stage")


def test_report_should_gather_killed_and_removed_across_stages():
    report = make_report()

    assert [a.pid for a in report.killed] == [101]
    assert report.removed == ("/tmp/embassy_cleanup-0123456789ab",)


def test_report_records_should_be_frozen():
    report = make_report()

    with pytest.raises(AttributeError):
        report.session_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report.stages[0].duration_s = 1.0  # type: ignore[misc]


# -- errors -------------------------------------------------------------------------
ERRORS = [
    pytest.param(EmbassyCleanupError("something failed", pid=7), {"pid": 7}, id="EmbassyCleanupError"),
    pytest.param(
        ConfigError("bad timeout", option="cleanup_timeout", value=-1),
        {"option": "cleanup_timeout", "value": -1},
        id="ConfigError",
    ),
    pytest.param(
        DriverNotFoundError("no driver", tried=[("PATH", "missing")]),
        {"tried": (("PATH", "missing"),)},
        id="DriverNotFoundError",
    ),
    pytest.param(
        LaunchError("no start", path="/usr/bin/chromium", report=make_report()),
        {"path": "/usr/bin/chromium", "report": make_report()},
        id="LaunchError",
    ),
    pytest.param(
        GridError("GET http://grid:4444/status answered 500", url="http://grid:4444"),
        {"url": "http://grid:4444"},
        id="GridError",
    ),
    pytest.param(
        SessionClosedError("torn down", session_id="ab12", closed_at=1700000000.5),
        {"session_id": "ab12", "closed_at": 1700000000.5},
        id="SessionClosedError",
    ),
    pytest.param(
        CleanupIncomplete("leftovers", report=make_report(leftovers=(Leftover("dir", "/tmp/x"),))),
        {"report": make_report(leftovers=(Leftover("dir", "/tmp/x"),))},
        id="CleanupIncomplete",
    ),
    pytest.param(PoolError("pool trouble"), {}, id="PoolError"),
    pytest.param(PoolClosedError("closed", session_id="ab12"), {"session_id": "ab12"}, id="PoolClosedError"),
    pytest.param(PoolFullError("full", max_size=3), {"max_size": 3}, id="PoolFullError"),
    pytest.param(
        PoolTimeoutError("waited", max_size=3, seconds=0.5),
        {"max_size": 3, "seconds": 0.5},
        id="PoolTimeoutError",
    ),
    pytest.param(
        LeaseExpiredError("returned", session_id="ab12"), {"session_id": "ab12"}, id="LeaseExpiredError"
    ),
]


@pytest.mark.parametrize(("err", "attrs"), ERRORS)
def test_every_error_should_survive_pickling_with_its_attributes(err, attrs):
    back = pickle.loads(pickle.dumps(err))

    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.msg == err.msg
    assert back.args == err.args
    for name, value in attrs.items():
        assert getattr(back, name) == value, name


@pytest.mark.parametrize(("err", "attrs"), ERRORS)
def test_every_error_should_show_its_public_module_and_be_an_embassy_cleanup_error(err, attrs):
    cls = type(err)

    assert cls.__module__ == "embassy_cleanup"
    assert getattr(embassy_cleanup, cls.__name__) is cls
    assert isinstance(err, EmbassyCleanupError)


def test_every_error_class_should_be_in_the_parametrized_list():
    tested = {p.id for p in ERRORS}
    exported = {
        name
        for name in embassy_cleanup.__all__
        if isinstance(getattr(embassy_cleanup, name), type)
        and issubclass(getattr(embassy_cleanup, name), BaseException)
    }

    assert exported == tested


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ConfigError, ValueError),
        (DriverNotFoundError, FileNotFoundError),
        (LaunchError, RuntimeError),
        (GridError, OSError),
        (CleanupIncomplete, RuntimeError),
    ],
)
def test_errors_should_also_be_the_matching_builtin_error(cls, builtin):
    assert issubclass(cls, builtin)
    assert issubclass(cls, EmbassyCleanupError)


def test_error_str_should_show_the_details_but_not_the_report():
    assert str(EmbassyCleanupError("refused", pid=42, name="sshd")) == "refused (pid=42, name='sshd')"
    assert str(EmbassyCleanupError("refused", pid=42, name=None)) == "refused (pid=42)"
    assert str(GridError("no answer", url="http://grid:4444")) == "no answer (url='http://grid:4444')"
    assert str(CleanupIncomplete("leftovers", report=make_report())) == "leftovers"
    assert "value=-1" in str(ConfigError("bad", option="cleanup_timeout", value=-1))


def test_driver_not_found_str_should_list_every_source_tried():
    err = DriverNotFoundError(
        "chromedriver not found; install chromium-driver",
        tried=[("driver_path=", "not given"), ("PATH", "no chromedriver on PATH")],
    )

    assert str(err).splitlines() == [
        "chromedriver not found; install chromium-driver",
        "  - driver_path=: not given",
        "  - PATH: no chromedriver on PATH",
    ]


def test_is_note_should_match_a_template_only_with_the_values_given():
    note = NOTE_PORT_NOT_OURS.format(port=9515, who="pid 7")
    assert is_note(NOTE_PORT_NOT_OURS, note) and is_note(NOTE_PORT_NOT_OURS, note, port=9515, who="pid 7")
    assert not is_note(NOTE_PORT_NOT_OURS, note, port=9516)
    assert not is_note(NOTE_PORT_NOT_OURS, note + " (and more)")
    assert not is_note(NOTE_NOTHING_LEFT, "nothing left") and is_note(NOTE_NOTHING_LEFT, NOTE_NOTHING_LEFT)
    assert has_note(NOTE_PORT_NOT_OURS, ["other", note], who="pid 7") and not has_note(NOTE_PORT_NOT_OURS, [])
