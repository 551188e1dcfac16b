"""Helpers for the plugin tests' child pytests (see conftest.child_tmp)."""

from __future__ import annotations

import os

from tests import _helpers as h


def read_note(child_tmp: str, name: str) -> str:
    with open(os.path.join(child_tmp, "notes", name), encoding="utf-8") as fh:
        return fh.read()


def still_running(child_tmp: str) -> list[str]:
    h.wait_until(lambda: not h.processes_under(child_tmp), timeout=5)
    out = []
    for p in h.processes_under(child_tmp):
        try:
            out.append(f"{p.pid} {p.name()}")
        except Exception:
            out.append(str(p.pid))
    return out
