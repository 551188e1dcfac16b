"""A full disk or an unwritable temp root at start (issue 13, item 6): a
LaunchError that names the path and the free space, and nothing left behind.

The full disk is a real tmpfs of a few pages, mounted by the test (root only;
skipped where mounting is not allowed), then filled up."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from embassy_cleanup import ChromeUltraAggressiveCleanup, LaunchError
from tests import _helpers as h

pytestmark = pytest.mark.chrome


@pytest.fixture
def full_tmpfs():
    mount = os.path.join(h.RUN_ROOT, "f" + secrets.token_hex(2))
    os.mkdir(mount)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "tmpfs", mount],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        os.rmdir(mount)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        with open(os.path.join(mount, "filler"), "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
        os.rmdir(mount)


def test_a_full_temp_root_gives_a_launch_error_naming_the_dir_and_leaves_nothing(full_tmpfs):
    before = set(os.listdir(full_tmpfs))
    cleanup = ChromeUltraAggressiveCleanup(temp_root=full_tmpfs)
    with pytest.raises(LaunchError) as caught:
        cleanup.start()
    message = str(caught.value)
    assert full_tmpfs in message, message
    assert "free" in message and "temp_root=" in message, message
    assert set(os.listdir(full_tmpfs)) == before, "something was left in the temp root"
    assert h.processes_under(full_tmpfs) == []


def test_a_read_only_temp_root_gives_a_launch_error_naming_the_dir(tmp_path):
    if os.getuid() == 0:
        pytest.skip("root writes to a mode-0500 dir anyway")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(LaunchError, match=str(ro)):
        ChromeUltraAggressiveCleanup(temp_root=str(ro)).start()
