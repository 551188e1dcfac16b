"""Helpers for the tests of the ``embassy-cleanup`` command line and the scripts.

Every CLI run here is scoped with ``--temp-dir`` to a dir of this test run
(:func:`scoped_dir`), so the tests never touch other people's sessions or
Chromium litter in /tmp: with ``--temp-dir``, ``diagnose`` and ``clean``
consider only sessions whose dir is in it.  Foreign processes and zombies
are still listed machine-wide (they are only listed, never acted on without
``--all``), so :func:`wait_healthy` polls ``diagnose``.

Nothing here finds or kills processes by name: leftovers of a scoped dir
are found by the dir's path (command line, ``TMPDIR``), as the leak guard
does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import psutil

from embassy_cleanup._clean import CleanResult
from embassy_cleanup._launcher import max_temp_root_length
from embassy_cleanup._ownership import ENV_MARKER
from tests import _helpers as h

REPO = Path(__file__).resolve().parents[2]
SCRIPT_SH = REPO / "cleanup_chrome.sh"
SCRIPT_BAT = REPO / "cleanup_chrome.bat"
#: The keys ``diagnose --json`` documents (docs/cli.md), schema version 2.
TOP_LEVEL_KEYS = {
    "schema",
    "temp_dir",
    "healthy",
    "sessions",
    "orphans",
    "foreign",
    "zombies",
    "session_processes",
    "stale_dirs",
    "litter",
    "strict",
    "totals",
    "took_s",
}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without a session marker, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != ENV_MARKER}
    env.update(extra)
    return env


def run(cmd: Sequence[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` with no terminal on stdin (so nothing can ask for confirmation)."""
    return subprocess.run(
        list(cmd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env(**env),
        timeout=timeout,
        check=False,
    )


def run_cli(*args: str, timeout: float = 120, prefix: Sequence[str] = (), **env: str):
    """The real entry point: ``python -m embassy_cleanup ARGS``."""
    return run([*prefix, sys.executable, "-m", "embassy_cleanup", *args], timeout=timeout, **env)


def run_sh(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return run([str(SCRIPT_SH), *args], timeout=timeout, **env)


def cli_json(
    *args: str, expect: int | Sequence[int] | None = None
) -> tuple[Any, subprocess.CompletedProcess]:
    """Run a ``--json`` command; check its exit status; return (parsed stdout, result)."""
    out = run_cli(*args)
    if expect is not None:
        allowed = (expect,) if isinstance(expect, int) else tuple(expect)
        assert out.returncode in allowed, (
            f"{args}: exit {out.returncode}, wanted {allowed}\n{out.stdout}\n{out.stderr}"
        )
    try:
        return json.loads(out.stdout), out
    except ValueError as err:
        raise AssertionError(f"{args}: stdout is not JSON ({err}):\n{out.stdout}\n{out.stderr}") from None


def diagnose(temp_dir: str, expect: int | Sequence[int] | None = None) -> dict[str, Any]:
    data, _out = cli_json("diagnose", "--temp-dir", temp_dir, "--json", expect=expect)
    return data


def wait_healthy(temp_dir: str, timeout: float = 30.0) -> tuple[bool, dict[str, Any], int]:
    """Poll ``diagnose --json`` until it exits 0: other people's short-lived
    orphans on this shared machine count as leaks too.  Returns
    (healthy, the last inventory, the last exit status)."""
    last: dict[str, Any] = {}

    def healthy() -> bool:
        data, out = cli_json("diagnose", "--temp-dir", temp_dir, "--json", expect=(0, 1))
        last.update(data=data, rc=out.returncode)
        return out.returncode == 0 and data["healthy"] is True

    ok = h.wait_until(healthy, timeout=timeout, interval=1.0)
    return ok, last["data"], last["rc"]


def leaks_of(data: dict[str, Any]) -> str:
    """What made an inventory unhealthy, for a failure message."""
    return json.dumps(
        {
            "orphans": [(p["pid"], p["name"], p["session_id"]) for p in data["orphans"]],
            "zombies_of_ours": [(p["pid"], p["ppid"], p["name"]) for p in data["zombies"] if p["ours"]],
            "stale_dirs": data["stale_dirs"],
        }
    )


# -- dirs -------------------------------------------------------------------
def _leftovers_cleared(path: str) -> None:
    needle = path.rstrip(os.sep) + os.sep
    h.kill_all(h.processes_under(needle))
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scoped_dir(parent: str = h.SESSIONS_ROOT) -> Iterator[str]:
    """A fresh, short, empty dir of this test run: ``<parent>/c<x>``.

    Short because Chrome's singleton socket path under a session in it must
    fit (``max_temp_root_length()``, 29 on Linux).  At the end, whatever still
    carries its path is SIGKILLed (by identity) and the dir is removed.
    """
    for c in string.ascii_lowercase + string.digits:
        path = os.path.join(parent, "c" + c)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover
        raise RuntimeError(f"no free short dir name in {parent}")
    longest = max_temp_root_length()
    assert longest is None or len(path) <= longest, f"{path} is too long for Chrome"
    try:
        yield path
    finally:
        _leftovers_cleared(path)


@contextmanager
def tiny_tmp_dir(max_len: int = 9) -> Iterator[str]:
    """A fresh dir ``<system tmp>/e???`` of at most ``max_len`` characters.

    ``stress`` puts its run dir (``embassy-st-XXXXXXXX``, 20 more characters)
    in ``--temp-dir``, and the sessions' temp root must stay within 29, so its
    ``--temp-dir`` can have at most 9: no dir under the run dir is that short.
    """
    base = tempfile.gettempdir()
    n = max_len - len(base) - 2
    if n < 3:
        raise RuntimeError(f"the system temp dir {base!r} is too long for a {max_len}-character dir")
    for _ in range(100):
        path = os.path.join(base, "e" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(n)))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover
        raise RuntimeError("no free tiny dir name")
    try:
        yield path
    finally:
        _leftovers_cleared(path)


def make_litter(temp_dir: str, name: str = "org.chromium.Chromium.aB3dEf", age_s: float = 7 * 86400) -> str:
    """A Chromium-style litter dir (unused) with a file in it, ``age_s`` old."""
    path = os.path.join(temp_dir, name)
    os.mkdir(path)
    with open(os.path.join(path, "SingletonCookie"), "w") as fh:
        fh.write("litter")
    # Older than any Chrome running now: no live session can own it (a younger
    # one is kept by clean, see embassy_cleanup._inventory).
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


# -- owners -----------------------------------------------------------------
def crashed_owner(crash, temp_root: str, name: str = "crashed"):
    """An owner without watchdog, SIGKILLed: nothing cleans up after it, so its
    chromedriver, Chrome and session dir stay.  Returns (owner, session, snapshot)."""
    owner = crash.spawn(watchdog=False, temp_root=temp_root, name=name)
    assert owner.info["watchdog_pid"] is None, "watchdog=False must not start a watchdog"
    (session,) = owner.sessions
    snap = crash.snapshot(session)
    assert len(crash.running(snap)) >= 5, f"precondition: the session should run Chrome: {snap}"
    owner.kill(signal.SIGKILL)
    assert owner.wait(10) == -signal.SIGKILL
    assert len(crash.running(snap)) >= 5, "leftovers died by themselves; the test proves nothing"
    assert os.path.isdir(session["root"])
    snap.update(crash.snapshot(session))
    return owner, session, snap


def live_owner(crash, temp_root: str, name: str = "live"):
    """An owner (another process) with one open session.

    Returns (owner, session, snapshot, core): ``core`` are the session's
    chromedriver and browser pids, which must outlive any clean-up of other
    sessions.  Helpers (renderers, utilities) come and go by themselves in a
    live browser, so they are not all expected to stay."""
    owner = crash.spawn(watchdog=False, temp_root=temp_root, name=name)
    (session,) = owner.sessions
    snap = crash.snapshot(session)
    assert len(crash.running(snap)) >= 5, f"precondition: the session should run Chrome: {snap}"
    core = core_pids(crash, snap)
    assert len(core) >= 2, f"precondition: chromedriver and the browser should run: {core}"
    return owner, session, snap, core


def core_pids(crash, snap) -> list[int]:
    """The pids of a session that do not go by themselves: chromedriver and
    its direct children (the browser), from a snapshot."""
    names = {}
    for pid, proc in snap.items():
        try:
            names[pid] = (proc.name(), proc.ppid())
        except psutil.Error:
            continue
    drivers = {pid for pid, (name, _ppid) in names.items() if name == "chromedriver"}
    return sorted(pid for pid, (_name, ppid) in names.items() if pid in drivers or ppid in drivers)


def assert_live_session_untouched(crash, owner, session, snap, core, signalled=()) -> None:
    """A clean-up of other sessions left this live one alone: it signalled none
    of its processes, its chromedriver and browser run, its dir and record are
    there, and its owner still drives it (a new page loads)."""
    hit = sorted(set(snap) & set(signalled))
    assert not hit, f"the clean-up signalled processes of a live session: {hit}"
    dead = [pid for pid in core if pid not in crash.running(snap)]
    assert not dead, f"a live session lost its chromedriver or browser: {dead} of {core}"
    assert os.path.isdir(session["root"]) and os.path.exists(os.path.join(session["root"], "session.json"))
    i = session["index"]
    assert owner.cmd(f"get {i} still-alive")["title"] == "still-alive"


def close_live_owner(crash, owner, session, snap) -> None:
    """The live owner still closes its session itself, cleanly."""
    closed = owner.cmd(f"close {session['index']}")
    assert closed["ok"], closed["report"]
    owner.send("exit")
    assert owner.wait(30) == 0, owner.stderr()
    assert crash.gone({session["root"]: snap}), crash.leftovers({session["root"]: snap})


# -- bystanders ------------------------------------------------------------------
settle_bystander = h.settle_bystander  # one implementation, in tests/_helpers.py


# -- zombies ------------------------------------------------------------------
def chrome_named_exe(temp_dir: str) -> str:
    """``<dir>/chrome_zz``: a symlink to true(1), so its process is named like
    Chrome's and exits at once; unreaped, it is a Chrome-family zombie."""
    link = os.path.join(temp_dir, "chrome_zz")
    os.symlink("/bin/true", link)
    return link


def wait_zombie(pid: int) -> None:
    def is_zombie() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert h.wait_until(is_zombie, timeout=10), f"{pid} did not become a zombie"


# -- clean --all without killing --------------------------------------------------
class PlanRecorder:
    """Stands in for ``embassy_cleanup._clean.execute`` (monkeypatched): records
    each plan it is given and kills nothing.  ``clean --all`` is only ever run
    with this in place: the real one would kill other people's Chrome."""

    def __init__(self) -> None:
        self.plans: list[list[Any]] = []

    def __call__(self, plan: list[Any], budget: float = 10.0) -> CleanResult:
        self.plans.append(list(plan))
        return CleanResult(done=[(a, "faked: nothing done") for a in plan])
