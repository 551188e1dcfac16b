"""Fixtures of the CLI tests: the owner kit of tests/crash, and a scoped dir.

(The suite's ``bystander`` fixture already waits for its Chrome to settle.)
"""

import pytest

from tests.cli import scoped_dir
from tests.crash.conftest import crash  # noqa: F401  (the owner kit: a fixture, re-used as is)


@pytest.fixture
def tdir():
    with scoped_dir() as path:
        yield path
