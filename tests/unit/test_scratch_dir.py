"""chromedriver's second, empty scoped dir (issue 16, item 9): found by when it
was made, removed only while it is still that dir, ours and empty."""

from __future__ import annotations

import os
import time

from embassy_cleanup._dirs import KnownEmptyDir, find_scratch_dir

SCOPED = "org.chromium.Chromium.scoped_dir."


def made(path) -> str:
    os.mkdir(path)
    return str(path)


def known(path) -> KnownEmptyDir:
    return KnownEmptyDir.of(str(path), os.lstat(path))


def test_the_one_empty_scoped_dir_made_in_the_window_is_found(tmp_path):
    profile = made(tmp_path / (SCOPED + "Profil"))
    open(os.path.join(profile, "Local State"), "w").close()
    scratch = made(tmp_path / (SCOPED + "Empty1"))
    made(tmp_path / "org.chromium.Chromium.Single")  # a singleton dir: another name
    ctime = os.lstat(scratch).st_ctime

    found, why = find_scratch_dir([str(tmp_path)], profile, ctime - 1, ctime + 1)

    assert why is None and found == known(scratch)


def test_a_dir_made_outside_the_window_or_not_empty_is_not_found(tmp_path):
    profile = made(tmp_path / (SCOPED + "Profil"))
    late = made(tmp_path / (SCOPED + "Late01"))
    full = made(tmp_path / (SCOPED + "Full01"))
    open(os.path.join(full, "x"), "w").close()
    ctime = os.lstat(late).st_ctime

    assert find_scratch_dir([str(tmp_path)], profile, ctime - 10, ctime - 5) == (None, None)
    assert find_scratch_dir([str(tmp_path)], profile, ctime + 5, ctime + 10) == (None, None)
    assert find_scratch_dir([str(tmp_path)], profile, ctime - 1, ctime + 1) == (known(late), None)


def test_two_candidates_are_both_kept_and_the_reason_names_them(tmp_path):
    profile = made(tmp_path / (SCOPED + "Profil"))
    one, two = made(tmp_path / (SCOPED + "Empty1")), made(tmp_path / (SCOPED + "Empty2"))
    ctime = os.lstat(two).st_ctime

    found, why = find_scratch_dir([str(tmp_path)], profile, ctime - 1, ctime + 1)

    assert found is None and why is not None and one in why and two in why


def test_another_users_empty_dir_is_never_found(tmp_path):
    profile = made(tmp_path / (SCOPED + "Profil"))
    theirs = made(tmp_path / (SCOPED + "Theirs"))
    if os.getuid() != 0:
        return  # cannot give a dir away without root; the uid check is the same code path as remove()
    os.chown(theirs, 65534, 65534)
    ctime = os.lstat(theirs).st_ctime
    assert find_scratch_dir([str(tmp_path)], profile, ctime - 1, ctime + 1) == (None, None)


def test_remove_takes_the_same_empty_dir_only(tmp_path):
    path = made(tmp_path / (SCOPED + "Empty1"))
    d = known(path)
    assert d.still_there()
    assert d.remove() == (True, None)
    assert not os.path.lexists(path)
    assert d.remove() == (False, None)  # already gone: nothing to do, nothing to say

    time.sleep(0.05)  # past the file system's coarse clock tick: a later ctime
    made(path)  # the same name, made again since: another dir (maybe with the same inode)
    done, problem = d.remove()
    assert not done and problem is not None and "not the dir found at adopt time" in problem
    assert os.path.isdir(path) and not d.still_there()


def test_remove_leaves_a_dir_someone_wrote_into(tmp_path):
    path = made(tmp_path / (SCOPED + "Empty1"))
    d = known(path)
    open(os.path.join(path, "late"), "w").close()
    done, problem = d.remove()
    assert not done and problem is not None  # a changed ctime, or rmdir's ENOTEMPTY within one tick
    assert os.path.exists(os.path.join(path, "late")) and not d.still_there()


def test_remove_leaves_a_symlink_put_in_its_place(tmp_path):
    path = made(tmp_path / (SCOPED + "Empty1"))
    d = known(path)
    os.rmdir(path)
    elsewhere = made(tmp_path / "elsewhere")
    os.symlink(elsewhere, path)
    done, problem = d.remove()
    assert not done and problem is not None
    assert os.path.islink(path) and os.path.isdir(elsewhere)
