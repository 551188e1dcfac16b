"""Option validation (through the public constructor) and the launcher's
resolution, session-root and flag rules.  Nothing here starts Chrome."""

from __future__ import annotations

import math
import os
import secrets
import shutil
import stat
import sys

import pytest
from selenium.webdriver.chrome.options import Options as ChromeOptions

from embassy_cleanup import ChromeUltraAggressiveCleanup, ConfigError, DriverNotFoundError, _launcher
from embassy_cleanup._options import SessionOptions, validate
from embassy_cleanup._presets import PRESETS
from tests import _helpers as h


def chrome_options(*args: str) -> ChromeOptions:
    opts = ChromeOptions()
    for arg in args:
        opts.add_argument(arg)
    return opts


def stable_id(kwargs: dict) -> str:
    """A test id with no object address in it: pytest-xdist workers must collect the same names."""
    return "-".join(f"{k}={getattr(x, 'arguments', x)!r}" for k, x in kwargs.items())


# -- validation: ConfigError (a ValueError) --------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "option", "value", "shown"),
    [
        ({"cleanup_timeout": 0}, "cleanup_timeout", 0, "0"),
        ({"cleanup_timeout": -1}, "cleanup_timeout", -1, "-1"),
        ({"cleanup_timeout": float("inf")}, "cleanup_timeout", float("inf"), "inf"),
        ({"preset": "nope"}, "preset", "nope", "'nope'"),
        ({"extra_args": ["x"]}, "extra_args", "x", "'x'"),
        ({"extra_args": ["--lang=en", "x"]}, "extra_args", "x", "'x'"),
        ({"extra_args": ["--user-data-dir=/x"]}, "extra_args", "--user-data-dir=/x", "--user-data-dir=/x"),
        (
            {"options": chrome_options("--user-data-dir=/x")},
            "options",
            "--user-data-dir=/x",
            "--user-data-dir=/x",
        ),
        ({"binary": ""}, "binary", None, "binary"),
    ],
    ids=lambda v: stable_id(v) if isinstance(v, dict) else None,
)
def test_constructor_should_reject_a_bad_value_with_a_config_error_naming_it(kwargs, option, value, shown):
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(**kwargs)

    err = info.value
    assert isinstance(err, ValueError)
    assert err.option == option
    assert err.value == value
    assert option in str(err)
    assert shown in str(err)


def test_constructor_should_reject_a_nan_cleanup_timeout():
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(cleanup_timeout=float("nan"))

    assert info.value.option == "cleanup_timeout" and math.isnan(info.value.value)
    assert "cleanup_timeout" in str(info.value) and "nan" in str(info.value)


def test_constructor_should_reject_a_temp_root_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(temp_root=missing)

    assert info.value.option == "temp_root"
    assert info.value.value == missing
    assert "temp_root" in str(info.value) and missing in str(info.value)


def test_constructor_should_reject_a_temp_root_that_is_a_file(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigError) as info:
        ChromeUltraAggressiveCleanup(temp_root=a_file)  # os.PathLike is accepted as a path

    assert info.value.option == "temp_root" and info.value.value == str(a_file)
    assert "temp_root" in str(info.value) and str(a_file) in str(info.value)


# -- validation: TypeError for the wrong type -------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"cleanup_timeout": "10"}, ["cleanup_timeout", "'10'"]),
        ({"cleanup_timeout": True}, ["cleanup_timeout", "True"]),
        ({"preset": 3}, ["preset", "int"]),
        ({"extra_args": "--x"}, ["extra_args", "'--x'"]),
        ({"options": {"args": []}}, ["options", "ChromeOptions", "dict"]),
        ({"env": [("A", "1")]}, ["env", "list"]),
        ({"env": {"A": 1}}, ["env", "'A'", "1"]),
        ({"env": {1: "A"}}, ["env", "1", "'A'"]),
        ({"headless": "yes"}, ["headless", "'yes'"]),
        ({"graceful": 1}, ["graceful", "1"]),
        ({"raise_on_leak": None}, ["raise_on_leak", "None"]),
        ({"watchdog": "no"}, ["watchdog", "'no'"]),
        ({"driver_path": 5}, ["driver_path", "int"]),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_constructor_should_reject_a_wrong_type_with_a_type_error_naming_it(kwargs, shown):
    with pytest.raises(TypeError) as info:
        ChromeUltraAggressiveCleanup(**kwargs)

    assert type(info.value) is TypeError
    for text in shown:
        assert text in str(info.value)


def test_constructor_should_take_options_by_keyword_only():
    with pytest.raises(TypeError):
        ChromeUltraAggressiveCleanup(True)  # type: ignore[misc]


def test_validate_should_return_frozen_options_with_the_documented_defaults():
    opts = validate()

    assert opts == SessionOptions()
    assert (opts.headless, opts.cleanup_timeout, opts.preset, opts.graceful) == (True, 10.0, "balanced", True)
    assert (opts.raise_on_leak, opts.watchdog, opts.env, opts.extra_args) == (False, True, {}, ())
    with pytest.raises(AttributeError):
        opts.headless = False  # type: ignore[misc]


def test_validate_should_normalise_accepted_values(tmp_path):
    opts = validate(cleanup_timeout=3, extra_args=["--lang=en"], temp_root=tmp_path, env={"A": "b"})

    assert opts.cleanup_timeout == 3.0 and isinstance(opts.cleanup_timeout, float)
    assert opts.extra_args == ("--lang=en",)
    assert opts.temp_root == str(tmp_path)
    assert opts.env == {"A": "b"}


# -- resolve_driver / resolve_binary ---------------------------------------------
def make_executable(path, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return str(path)


def test_resolve_driver_should_name_a_missing_explicit_path(tmp_path):
    missing = str(tmp_path / "chromedriver")
    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_driver(missing)

    assert info.value.tried == (("driver_path=", "missing"),)
    assert missing in str(info.value) and "driver_path=" in str(info.value)


@pytest.mark.parametrize("kind", ["file without x bit", "directory"])
def test_resolve_driver_should_refuse_a_path_that_is_not_executable(tmp_path, kind):
    if kind == "directory":
        path = str(tmp_path)
    else:
        path = make_executable(tmp_path / "chromedriver", 0o644)
    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_driver(path)

    assert info.value.tried == (("driver_path=", "not executable"),)
    assert path in str(info.value) and "not an executable" in str(info.value)


def test_resolve_driver_should_not_fall_back_when_chromedriver_path_is_wrong(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere")
    monkeypatch.setenv(_launcher.DRIVER_ENV, missing)
    monkeypatch.setenv("PATH", str(tmp_path))
    make_executable(tmp_path / "chromedriver")  # would be found on PATH: must not be used

    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_driver(None)

    assert info.value.tried == (("$CHROMEDRIVER_PATH", "missing"),)
    assert "$CHROMEDRIVER_PATH" in str(info.value) and missing in str(info.value)


def test_resolve_driver_should_take_the_sources_in_the_documented_order(tmp_path, monkeypatch):
    on_path = make_executable(tmp_path / "chromedriver")
    explicit = make_executable(tmp_path / "explicit")
    from_env = make_executable(tmp_path / "from_env")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(_launcher.DRIVER_ENV, raising=False)

    assert _launcher.resolve_driver(None) == (on_path, "PATH")
    monkeypatch.setenv(_launcher.DRIVER_ENV, from_env)
    assert _launcher.resolve_driver(None) == (from_env, "$CHROMEDRIVER_PATH")
    assert _launcher.resolve_driver(explicit) == (explicit, "driver_path=")


def test_resolve_driver_should_list_every_source_tried_when_nothing_is_found(tmp_path, monkeypatch):
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def broken(self, args):
        raise RuntimeError("Selenium Manager is offline\nmore detail")

    monkeypatch.setenv("PATH", str(tmp_path))  # empty: no chromedriver
    monkeypatch.delenv(_launcher.DRIVER_ENV, raising=False)
    monkeypatch.setattr(SeleniumManager, "binary_paths", broken)
    monkeypatch.setitem(sys.modules, "webdriver_manager.chrome", None)  # import fails

    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_driver(None)

    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert err.tried == (
        ("driver_path=", "not given"),
        ("$CHROMEDRIVER_PATH", "not set"),
        ("PATH", "no chromedriver on PATH"),
        ("Selenium Manager", "Selenium Manager is offline"),
        ("webdriver-manager", "not installed"),
    )
    text = str(err)
    for source, outcome in err.tried:
        assert f"{source}: {outcome}" in text
    assert "install chromium-driver" in text


def test_resolve_binary_should_name_a_missing_binary_and_its_source(tmp_path, monkeypatch):
    missing = str(tmp_path / "chromium")
    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_binary(missing)
    assert info.value.tried == (("binary=", "missing"),)
    assert "binary=" in str(info.value) and missing in str(info.value)

    monkeypatch.setenv(_launcher.BINARY_ENV, missing)
    with pytest.raises(DriverNotFoundError) as info:
        _launcher.resolve_binary(None)
    assert info.value.tried == (("$CHROME_BINARY", "missing"),)
    assert "$CHROME_BINARY" in str(info.value) and missing in str(info.value)


def test_resolve_binary_should_return_none_when_nothing_is_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(_launcher.BINARY_ENV, raising=False)

    assert _launcher.resolve_binary(None) is None

    chromium = make_executable(tmp_path / "chromium")
    assert _launcher.resolve_binary(None) == chromium


# -- make_session_root -------------------------------------------------------------
@pytest.fixture
def session_id():
    sid = secrets.token_hex(6)
    yield sid
    shutil.rmtree(os.path.join(h.SESSIONS_ROOT, f"embassy_cleanup-{sid}"), ignore_errors=True)


def test_make_session_root_should_create_a_private_dir_named_for_the_session(session_id):
    paths = _launcher.make_session_root(h.SESSIONS_ROOT, session_id)

    assert paths.root == os.path.join(h.SESSIONS_ROOT, f"embassy_cleanup-{session_id}")
    assert os.path.basename(paths.root).startswith(f"embassy_cleanup-{session_id}")
    assert stat.S_IMODE(os.stat(paths.root).st_mode) == 0o700
    for sub in (paths.profile, paths.tmp, paths.config, paths.cache):
        assert os.path.dirname(sub) == paths.root
        assert stat.S_IMODE(os.stat(sub).st_mode) == 0o700


@pytest.mark.skipif(_launcher.max_temp_root_length() is None, reason="no Unix socket path limit here")
def test_make_session_root_should_refuse_a_temp_root_longer_than_the_limit(session_id, tmp_path):
    limit = _launcher.max_temp_root_length()
    assert limit is not None
    too_long = os.path.join(h.RUN_ROOT, "x" * max(1, limit - len(h.RUN_ROOT)))
    os.makedirs(too_long, exist_ok=True)
    try:
        assert len(too_long) > limit
        with pytest.raises(ConfigError) as info:
            _launcher.make_session_root(too_long, session_id)
        assert info.value.option == "temp_root"
        assert f"at most {limit} characters" in str(info.value)
        assert os.listdir(too_long) == []
    finally:
        shutil.rmtree(too_long, ignore_errors=True)


def test_make_session_root_should_accept_a_temp_root_of_exactly_the_limit(session_id):
    limit = _launcher.max_temp_root_length()
    if limit is None or len(h.RUN_ROOT) + 2 > limit:
        pytest.skip("no Unix socket path limit here, or the run dir is already too long")
    base = os.path.join(h.RUN_ROOT, "y" * (limit - len(h.RUN_ROOT) - 1))
    assert len(base) == limit
    os.makedirs(base, exist_ok=True)
    try:
        paths = _launcher.make_session_root(base, session_id)
        assert os.path.isdir(paths.tmp)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- chrome_arguments ----------------------------------------------------------------
def features(args: list[str], flag: str = "--disable-features") -> list[list[str]]:
    return [a.partition("=")[2].split(",") for a in args if a.partition("=")[0] == flag]


def test_chrome_arguments_should_merge_every_disable_features_into_one_flag():
    preset = dict(PRESETS["minimal"])
    preset_features = next(
        f.partition("=")[2].split(",") for f in preset if f.startswith("--disable-features=")
    )
    opts = validate(
        preset="minimal",
        options=chrome_options("--disable-features=FromOptions"),
        extra_args=["--disable-features=Translate,FromExtra"],
    )

    args = _launcher.chrome_arguments(opts, "/p")

    (merged,) = features(args)
    assert set(merged) == {"FromOptions", "FromExtra", *preset_features}
    assert len(merged) == len(set(merged))


def test_chrome_arguments_should_put_user_data_dir_last_and_once():
    opts = validate(extra_args=["--lang=en"])

    args = _launcher.chrome_arguments(opts, "/profile/dir")

    assert args[-1] == "--user-data-dir=/profile/dir"
    assert [a for a in args if a.startswith("--user-data-dir")] == ["--user-data-dir=/profile/dir"]
    assert "--lang=en" in args
    assert len(args) == len(set(args))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_chrome_arguments_should_disable_the_sandbox_when_running_as_root():
    assert "--no-sandbox" in _launcher.chrome_arguments(validate(), "/p")


@pytest.mark.parametrize("sandbox", [True, False])
def test_chrome_arguments_should_add_no_sandbox_only_when_the_sandbox_cannot_work(sandbox, monkeypatch):
    monkeypatch.setattr(_launcher._platform, "can_use_chrome_sandbox", lambda: sandbox)

    args = _launcher.chrome_arguments(validate(), "/p")

    assert ("--no-sandbox" in args) is (not sandbox)


@pytest.mark.parametrize("headless", [True, False])
def test_chrome_arguments_should_follow_headless(headless):
    args = _launcher.chrome_arguments(validate(headless=headless), "/p")

    assert ("--headless=new" in args) is headless
