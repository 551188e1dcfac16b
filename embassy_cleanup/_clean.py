"""Cleaning by hand or from cron: a plan from an inventory, then its execution.

The default plan is scoped to what is provably ours and abandoned:

* every session whose owner is dead is torn down with the usual stages
  (processes found by that session's markers, its dir removed);
* Chromium's own litter in the temp dir that no live process uses, and that
  is older than every live Chrome-family process of the user (so that none
  of them can own it), is removed; younger litter is listed and kept.

A live owner's session and foreign processes are never in the default plan.
``all_processes=True`` (the CLI's ``--all``, which asks for confirmation)
adds every Chrome-family process of the inventory, which holds the current
user's processes only unless it was taken with ``all_users=True``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ._dirs import remove_tree
from ._inventory import Inventory
from ._ownership import OwnedProcess, ProcessTracker
from ._records import Owner, dead_owner_lock
from ._report import Outcome
from ._sweep import reap_orphaned


@dataclass(frozen=True)
class Action:
    """One step of a clean-up plan."""

    kind: str  # "teardown-session", "remove-dir" or "kill-process"
    target: str  # session id, path or pid
    detail: str
    pids: tuple[int, ...] = ()
    root: str | None = None
    create_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.kind, "target": self.target, "detail": self.detail, "pids": list(self.pids)}

    def __str__(self) -> str:
        return f"{self.kind:<17} {self.target}  {self.detail}"


@dataclass
class CleanResult:
    done: list[tuple[Action, str]] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "done": [dict(a.to_dict(), outcome=o) for a, o in self.done],
            "failed": [dict(a.to_dict(), outcome=o) for a, o in self.failed],
        }


def plan_clean(inv: Inventory, older_than: float = 0.0, all_processes: bool = False) -> list[Action]:
    """What ``clean`` would do with this inventory (nothing is done here)."""
    now = time.time()
    plan: list[Action] = []
    procs = {p.pid: p for p in inv.processes}
    for s in inv.sessions:
        if s.owner_alive:
            continue
        ages = [now - procs[pid].create_time for pid in s.pids if pid in procs]
        if s.root and os.path.isdir(s.root):
            try:
                ages.append(now - os.lstat(s.root).st_mtime)
            except OSError:
                pass
        if ages and min(ages) < older_than:
            continue
        running = [pid for pid in s.pids if pid in procs and procs[pid].cls != "zombie"]
        plan.append(
            Action(
                "teardown-session",
                s.session_id,
                f"owner gone; {len(running)} process(es), dir {s.root or '(none)'}",
                tuple(running),
                s.root,
            )
        )
    for d in inv.litter:
        if d.age_s >= older_than and d.kept is None:
            plan.append(Action("remove-dir", d.path, "Chromium's own, unused"))
    if all_processes:
        for p in inv.processes:
            if p.cls == "zombie" or (now - p.create_time) < older_than:
                continue
            if any(p.pid in a.pids for a in plan):
                continue
            plan.append(
                Action(
                    "kill-process",
                    str(p.pid),
                    f"{p.name} ({p.cls}, user {p.user})",
                    (p.pid,),
                    create_time=p.create_time,
                )
            )
    return plan


def execute(plan: list[Action], budget: float = 10.0) -> CleanResult:
    """Carry out ``plan``; every kill is identity-checked, every delete scoped."""
    result = CleanResult()
    loose: list[tuple[Action, OwnedProcess]] = []
    for action in plan:
        try:
            if action.kind == "teardown-session":
                outcome = _teardown_session(action, budget)
            elif action.kind == "remove-dir":
                err = remove_tree(action.target)
                outcome = "removed" if err is None else f"failed: {err}"
            elif action.kind == "kill-process":
                loose.append(
                    (action, OwnedProcess(int(action.target), action.create_time, action.detail, "clean"))
                )
                continue
            else:  # pragma: no cover
                outcome = f"failed: unknown action {action.kind}"
        except Exception as err:  # one failure must not stop the rest
            outcome = f"failed: {type(err).__name__}: {err}"
        (result.failed if outcome.startswith("failed") else result.done).append((action, outcome))
    if loose:
        tracker = ProcessTracker("", "")  # no markers: only the listed, identity-checked pids
        actions, _survivors = tracker.kill_tree([p for _a, p in loose], 0.5, budget)
        outcomes = {a.pid: a.outcome for a in actions}
        for action, p in loose:
            o = outcomes.get(p.pid, Outcome.ALREADY_EXITED)
            bad = o.survived
            (result.failed if bad else result.done).append((action, ("failed: " if bad else "") + o.value))
    return result


def _teardown_session(action: Action, budget: float) -> str:
    root = action.root if action.root and os.path.isdir(action.root) else None
    with contextlib.ExitStack() as stack:
        if root is not None:
            owner = stack.enter_context(dead_owner_lock(root))
            if owner is Owner.ALIVE:
                return "skipped: its owner is alive again"
            if owner is Owner.INVALID:
                return "skipped: its owner.lock is not a regular file of ours"
        report = reap_orphaned(action.root, action.target, budget)
    killed = sum(1 for a in report.killed if a.outcome.signalled)
    if not report.ok:
        return "failed: " + ", ".join(str(lo) for lo in report.leftovers)
    return f"torn down: {killed} process(es) killed, {len(report.removed)} dir(s) removed"
