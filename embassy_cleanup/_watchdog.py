"""Crash safety: the owner-death watchdog (filled in by the crash-safety work)."""

from __future__ import annotations

from typing import Any


def on_session_started(state: Any) -> None:
    """Register a new session with this owner's watchdog."""
