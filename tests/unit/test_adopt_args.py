"""adopt(): what it refuses before touching anything, with fake drivers (no Chrome),
and the whole-path match that keeps a chosen profile dir from matching its neighbours."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from embassy_cleanup import ConfigError, adopt
from embassy_cleanup._adopt import profile_origin
from embassy_cleanup._ownership import root_in_args


def fake_driver(caps: dict | None = None, service: object = "default") -> SimpleNamespace:
    if service == "default":
        service = SimpleNamespace(process=None, port=0)
    drv = SimpleNamespace(capabilities={"browserName": "chrome", **(caps or {})}, quit=lambda: None)
    if service is not None:
        drv.service = service
    return drv


def test_adopt_should_refuse_something_that_is_not_a_webdriver():
    with pytest.raises(
        ConfigError, match=r"adopt\(\) needs a Selenium WebDriver, got object; pass the object"
    ):
        adopt(object())


def test_adopt_should_refuse_a_driver_without_a_chromedriver_service():
    remote = fake_driver(service=None)
    remote.command_executor = SimpleNamespace(
        client_config=SimpleNamespace(remote_server_addr="http://grid:4444")
    )

    with pytest.raises(ConfigError) as caught:
        adopt(remote)

    assert "has no chromedriver service (it talks to http://grid:4444)" in str(caught.value)
    assert caught.value.option == "driver"


def test_adopt_should_refuse_a_browser_that_is_not_chromium_based():
    with pytest.raises(ConfigError, match=r"supports Chrome and Chromium drivers, got browserName='firefox'"):
        adopt(fake_driver({"browserName": "firefox"}))


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_adopt_should_refuse_a_cleanup_timeout_that_is_not_a_positive_number(value):
    with pytest.raises(ConfigError, match=r"cleanup_timeout must be a finite number of seconds > 0"):
        adopt(fake_driver(), cleanup_timeout=value)


@pytest.mark.parametrize(
    ("name", "value"), [("remove_profile", "yes"), ("raise_on_leak", None), ("graceful", 1)]
)
def test_adopt_should_refuse_flags_that_are_not_booleans(name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be True"):
        adopt(fake_driver(), **{name: value})


def test_adopt_should_refuse_to_remove_the_home_dir_as_a_profile():
    home = os.path.expanduser("~")

    with pytest.raises(ConfigError, match=r"remove_profile=True would remove .*refusing") as caught:
        adopt(fake_driver({"chrome": {"userDataDir": home}}), remove_profile=True)

    assert caught.value.option == "remove_profile"
    assert os.path.isdir(home)


def test_profile_origin_should_tell_chromedriver_temp_profiles_from_chosen_dirs(tmp_path):
    env = {"TMPDIR": str(tmp_path)}

    assert profile_origin(str(tmp_path / "org.chromium.Chromium.scoped_dir.AbC123"), env) == "chromedriver"
    assert profile_origin(str(tmp_path / ".org.chromium.Chromium.AbC123"), env) == "chromedriver"
    assert profile_origin(str(tmp_path / "deep" / "org.chromium.Chromium.scoped_dir.AbC123"), env) == "user"
    assert profile_origin(str(tmp_path / "my-profile"), env) == "user"
    assert profile_origin(str(tmp_path / "org.chromium.Chromium.AbC123"), env) == "user"  # a singleton dir


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--user-data-dir=/p/profile"], True),
        (["--database=/p/profile/Crash Reports"], True),
        (["/p/profile"], True),
        (["--user-data-dir=/p/profile-2"], False),
        (["--user-data-dir=/p/profiles"], False),
        (["--user-data-dir=/x/p/profile"], False),
        (["--other=/p/prof"], False),
    ],
)
def test_root_in_args_should_match_the_root_only_as_a_whole_path(args, expected):
    assert root_in_args("/p/profile", args) is expected


def test_root_in_args_should_match_nothing_for_an_empty_root():
    assert root_in_args("", ["anything", ""]) is False
