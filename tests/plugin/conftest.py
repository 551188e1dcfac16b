"""Shared by the plugin tests: each child pytest gets a TMPDIR of its own.

Each child runs with ``TMPDIR`` set to a dir of its own under this run's
sessions dir: chromedriver's temp profiles and the fixtures' session dirs
land there, every process the child starts carries it in its environment,
and the leak guard (and ``child_tmp`` itself) finds what a child left by
that dir, never by name.
"""

from __future__ import annotations

import os
import shutil

import pytest

import embassy_cleanup
from embassy_cleanup.pytest_plugin import TEST_MARKER
from tests import _helpers as h


@pytest.fixture(autouse=True)
def child_imports_this_checkout(monkeypatch):
    """A child pytest imports the embassy_cleanup this process imported (a
    checkout, run from its root), not whichever copy is installed."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(embassy_cleanup.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])))


@pytest.fixture
def child_tmp(monkeypatch):
    """TMPDIR for the child pytest: short (it is the fixture's temp_root) and under the run dir."""
    for n in range(1000):
        path = os.path.join(h.SESSIONS_ROOT, f"p{n}")
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            continue
    notes = os.path.join(path, "notes")
    os.mkdir(notes)
    monkeypatch.setenv("TMPDIR", path)
    monkeypatch.setenv("PLUGIN_TEST_NOTES", notes)
    monkeypatch.delenv(TEST_MARKER, raising=False)
    yield path
    # Whatever the child left (the off-by-default case leaks on purpose), by our own marker.
    h.kill_all(h.processes_under(path))
    shutil.rmtree(path, ignore_errors=True)  # only the dir this fixture created
