"""Types and the identity rule shared by every platform backend.

A process's identity is ``(pid, create_time)`` (psutil's ``_get_ident``): a
PID alone can be reused by the OS for a stranger, the pair cannot, within
:data:`CREATE_TIME_TOLERANCE`.  This module is the only place that compares
create times; everything else calls :func:`same_birth` or :func:`identity`.

The rule for ``AccessDenied`` (one rule, two questions):

* *may we signal it?*  Only on :attr:`Identity.MATCH`.  A process whose
  create time we cannot read (``UNKNOWN``) is never signalled: it is not
  provably ours.
* *is it gone?*  Only on :attr:`Identity.GONE` or ``REUSED``.  ``UNKNOWN``
  counts as still running: we cannot prove it exited, so verification does
  not claim it did.

The remaining race: between reading the create time and sending the signal
the process may exit and its PID be reused.  The Linux backend closes it with
a pidfd (the identity is checked after opening the fd, which pins the
process); elsewhere the window is a few microseconds.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import psutil

#: Create times are read from /proc in clock ticks (10 ms), psutil's too.
CREATE_TIME_TOLERANCE = 0.01


class SignalResult(enum.Enum):
    """What happened when we tried to signal a process."""

    SENT = "sent"
    GONE = "already exited"
    REUSED = "pid reused"
    DENIED = "denied"


class Identity(enum.Enum):
    """Whether a PID is still the process born at a given create time."""

    MATCH = "match"  # the same process (a zombie matches: it must still be reaped)
    GONE = "gone"  # no such PID
    REUSED = "reused"  # the PID now belongs to another process
    UNKNOWN = "unknown"  # its create time cannot be read (AccessDenied)


class ProcRow(NamedTuple):
    """One process, as ``process_table()`` read it."""

    pid: int
    ppid: int
    pgrp: int | None  # None where the backend does not read it cheaply
    create_time: float  # epoch seconds, the same value psutil reports
    name: str
    zombie: bool  # exited, not reaped: shown as a zombie with no thread left


def same_birth(a: float, b: float) -> bool:
    """Whether two create times name the same process birth."""
    return abs(a - b) < CREATE_TIME_TOLERANCE


def born_before(a: float, b: float) -> bool:
    """Whether birth ``a`` is provably earlier than birth ``b`` (a child is never
    older than its parent; a group member never older than its leader)."""
    return a + CREATE_TIME_TOLERANCE < b


def identity(pid: int, create_time: float) -> Identity:
    """The identity check through psutil (see the module docstring)."""
    try:
        born = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return Identity.GONE
    except psutil.AccessDenied:
        return Identity.UNKNOWN
    return Identity.MATCH if same_birth(born, create_time) else Identity.REUSED
