"""The Python examples in the README and in docs/ type-check with
``mypy --strict`` (issue 16): a user who copies one into a typed code base
gets no error from it.  Each ```python block is checked as its own module."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str]]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            out.append((f"{doc.stem.replace('-', '_')}_{i}", m.group(1)))
    return out


def test_there_are_examples_to_check():
    assert len(examples()) >= 8


def test_every_python_example_in_the_docs_passes_mypy_strict(tmp_path):
    for name, code in examples():
        (tmp_path / f"ex_{name}.py").write_text(code)
    out = subprocess.run(
        # the package itself is checked by the lint step; here only the examples
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
