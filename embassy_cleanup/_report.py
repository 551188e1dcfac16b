"""What a teardown did, stage by stage: frozen, JSON-friendly records.

A report lists both sides, like ``psutil.wait_procs``: what each stage
signalled and removed, and what survived it.  ``CleanupReport.ok`` is true
only when verification found nothing of the session left.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Stage(str, enum.Enum):
    """The six teardown stages, in the order they run.

    The values are the tokens used everywhere: logs, reports, the CLI, the
    scripts and the docs.
    """

    QUIT = "quit"
    KILL_TREE = "tree-kill"
    PORTS = "ports"
    OS_KILL = "os-kill"
    PROFILE = "profile"
    VERIFY = "verify"

    def __str__(self) -> str:
        return self.value


class Outcome(str, enum.Enum):
    """What became of one process a stage dealt with (the values are the
    tokens in reports and JSON)."""

    TERMINATED = "terminated"  # exited after SIGTERM
    KILLED = "killed"  # needed SIGKILL
    ALREADY_EXITED = "already exited"
    PID_REUSED = "pid reused"  # identity check failed: not signalled
    DENIED = "denied"  # the OS refused the signal
    SURVIVED = "survived"  # still running after SIGKILL and the wait

    def __str__(self) -> str:
        return self.value

    @property
    def signalled(self) -> bool:
        """Whether we ended it (SIGTERM or SIGKILL)."""
        return self in (Outcome.TERMINATED, Outcome.KILLED)

    @property
    def survived(self) -> bool:
        """Whether it is still there after the stage."""
        return self in (Outcome.SURVIVED, Outcome.DENIED)


@dataclass(frozen=True)
class ProcessAction:
    """One process a stage dealt with: its :class:`Outcome`, and ``via``, how
    we know it is the session's (see ``docs/architecture.md``)."""

    pid: int
    name: str
    outcome: Outcome
    via: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "outcome": self.outcome.value, "via": self.via}


@dataclass(frozen=True)
class Leftover:
    """Something of the session that verification still found."""

    kind: str  # "process", "zombie", "port", "dir", or "unverified" (verify itself failed)
    detail: str
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "pid": self.pid}

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}" + (f" (pid={self.pid})" if self.pid else "")


@dataclass(frozen=True)
class StageResult:
    """The outcome of one stage.

    ``killed`` holds every process the stage signalled (with the outcome),
    ``removed`` every path it deleted, ``survivors`` what it could not end,
    ``skipped_reason`` why it did nothing (``None`` if it ran), ``errors``
    what went wrong, ``notes`` anything else worth knowing (e.g. a port held
    by a process that is not ours, left alone).
    """

    stage: Stage
    duration_s: float
    killed: tuple[ProcessAction, ...] = ()
    removed: tuple[str, ...] = ()
    survivors: tuple[ProcessAction, ...] = ()
    skipped_reason: str | None = None
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "duration_s": round(self.duration_s, 4),
            "killed": [a.to_dict() for a in self.killed],
            "removed": list(self.removed),
            "survivors": [a.to_dict() for a in self.survivors],
            "skipped_reason": self.skipped_reason,
            "errors": list(self.errors),
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        """The stage's line (name, duration, what it did), then one line per
        further note and per error."""
        notes = list(self.notes)
        if self.skipped_reason is not None:
            what = f"skipped: {self.skipped_reason}"
        else:
            parts = [f"signalled {len(self.killed)}"] if self.killed else []
            parts += [f"removed {len(self.removed)}"] if self.removed else []
            parts += [f"{len(self.survivors)} survived"] if self.survivors else []
            if not parts and notes:
                parts.append(notes.pop(0))
            what = ", ".join(parts) or "nothing to do"
        pad = " " * 23
        return (
            [f"{self.stage.value:<9} {self.duration_s * 1000:8.1f} ms  {what}"]
            + [pad + note for note in notes]
            + [f"{pad}error: {err}" for err in self.errors]
        )

    def summary(self) -> str:
        return "\n".join(self.summary_lines())


@dataclass(frozen=True)
class CleanupReport:
    """The report of one teardown: each stage, and what was left."""

    session_id: str
    stages: tuple[StageResult, ...]
    leftovers: tuple[Leftover, ...]
    duration_s: float
    passes: int = 1

    @property
    def ok(self) -> bool:
        """True when verification found nothing of the session left."""
        return not self.leftovers

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{s.stage.value}: {e}" for s in self.stages for e in s.errors)

    @property
    def killed(self) -> tuple[ProcessAction, ...]:
        return tuple(a for s in self.stages for a in s.killed)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(p for s in self.stages for p in s.removed)

    def stage(self, stage: Stage | str) -> StageResult:
        """The (last) result of ``stage``; stages may run more than once."""
        wanted = Stage(stage)
        for result in reversed(self.stages):
            if result.stage is wanted:
                return result
        raise KeyError(wanted.value)

    def to_dict(self) -> dict[str, Any]:
        """A dict that ``json.dumps`` accepts; the keys are stable."""
        return {
            "session_id": self.session_id,
            "ok": self.ok,
            "duration_s": round(self.duration_s, 4),
            "passes": self.passes,
            "stages": [s.to_dict() for s in self.stages],
            "leftovers": [lo.to_dict() for lo in self.leftovers],
            "errors": list(self.errors),
        }

    def __str__(self) -> str:
        head = (
            f"cleanup of session {self.session_id}: "
            f"{'ok' if self.ok else 'LEFTOVERS'} in {self.duration_s * 1000:.1f} ms"
        )
        lines = [head] + ["  " + line for s in self.stages for line in s.summary_lines()]
        lines += [f"  leftover: {lo}" for lo in self.leftovers]
        return "\n".join(lines)
