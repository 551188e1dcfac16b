"""What the package promises: the public names, the constructor's options,
``py.typed``, the platform interface, and where platform checks may live."""

from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import embassy_cleanup
from embassy_cleanup import ChromeUltraAggressiveCleanup, _platform

PACKAGE = Path(embassy_cleanup.__file__).resolve().parent

#: The public API as documented (docs/architecture.md); more may be added, none removed
#: (issue 12 removed NotOwnedError and StageTimeout, which were never raised).
DOCUMENTED_PUBLIC = {
    "ChromeUltraAggressiveCleanup",
    "adopt",
    "AdoptedSession",
    "sweep_stale",
    "install_signal_handlers",
    "uninstall_signal_handlers",
    "CleanupReport",
    "StageResult",
    "ProcessAction",
    "Outcome",
    "Leftover",
    "Stage",
    "PRESETS",
    "EmbassyCleanupError",
    "ConfigError",
    "DriverNotFoundError",
    "LaunchError",
    "GridError",
    "CleanupIncomplete",
    "ChromePool",
    "PoolStats",
    "PoolError",
    "PoolClosedError",
    "PoolFullError",
    "PoolTimeoutError",
    "LeaseExpiredError",
    "__version__",
}

#: The constructor's keyword options and their documented defaults.
DOCUMENTED_OPTIONS = {
    "headless": True,
    "cleanup_timeout": 10.0,
    "preset": "balanced",
    "extra_args": (),
    "options": None,
    "binary": None,
    "driver_path": None,
    "temp_root": None,
    "graceful": True,
    "raise_on_leak": False,
    "env": None,
    "watchdog": True,
    "remote_url": None,
    "start_timeout": 30.0,
    "virtual_display": False,
}


# -- the public names -----------------------------------------------------------------
def test_all_should_name_only_things_that_exist_once_each():
    names = embassy_cleanup.__all__

    assert len(names) == len(set(names))
    assert [n for n in names if not hasattr(embassy_cleanup, n)] == []


def test_all_should_hold_the_documented_public_api():
    assert DOCUMENTED_PUBLIC - set(embassy_cleanup.__all__) == set()


def test_all_should_be_exactly_the_public_names_of_the_package():
    public = {
        name
        for name, value in vars(embassy_cleanup).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules such as cli
        and type(value).__module__ != "__future__"  # from __future__ import annotations
    }

    assert public == set(embassy_cleanup.__all__) - {"__version__"}
    assert isinstance(embassy_cleanup.__version__, str)


def test_public_classes_and_functions_should_have_docstrings():
    undocumented = [
        name
        for name in embassy_cleanup.__all__
        if callable(getattr(embassy_cleanup, name)) and not inspect.getdoc(getattr(embassy_cleanup, name))
    ]

    assert undocumented == []


# -- the constructor ------------------------------------------------------------------
def test_constructor_should_take_the_documented_options_by_keyword_only():
    params = inspect.signature(ChromeUltraAggressiveCleanup).parameters

    assert set(params) == set(DOCUMENTED_OPTIONS)
    assert [n for n, p in params.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY] == []
    assert {n: p.default for n, p in params.items()} == DOCUMENTED_OPTIONS


def test_constructor_docstring_should_describe_every_option():
    doc = inspect.getdoc(ChromeUltraAggressiveCleanup) or ""

    assert [n for n in DOCUMENTED_OPTIONS if not re.search(rf"^\s*{n}:", doc, re.M)] == []


# -- packaging ---------------------------------------------------------------------------
def test_package_should_ship_py_typed():
    assert (PACKAGE / "py.typed").is_file()


# -- the platform layer --------------------------------------------------------------------
def _documented_platform_names() -> set[str]:
    doc = _platform.__doc__ or ""
    # Entries start at column 0 ("``name(args) -> result``"); indented text is prose.
    entries = [line for line in doc.splitlines() if line.startswith("``")]
    functions = {name for line in entries for name in re.findall(r"``(\w+)\(", line)}
    constants = set(re.findall(r"``([A-Z][A-Z_]+)``", doc))
    return functions | constants


def test_platform_should_export_every_name_its_docstring_documents():
    documented = _documented_platform_names()

    assert len(documented) > 10  # the docstring was parsed
    assert documented - set(_platform.__all__) == set()
    assert [n for n in _platform.__all__ if not hasattr(_platform, n)] == []


def test_platform_should_document_every_function_it_exports():
    exported = {n for n in _platform.__all__ if inspect.isfunction(getattr(_platform, n))}

    assert exported - _documented_platform_names() == set()


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


#: The platform-independent module every backend shares (types, the identity rule).
SHARED_PLATFORM_MODULE = "_types.py"


def _names_imported_from_types() -> set[str]:
    """What ``_platform/__init__.py`` re-exports from the shared module, not from a backend."""
    tree = ast.parse((PACKAGE / "_platform" / "__init__.py").read_text(encoding="utf-8"))
    return {
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "_types"
        for a in node.names
    }


def test_every_platform_backend_should_provide_the_whole_interface():
    # Read, not imported: a backend for another OS may not import here.
    shared = _names_imported_from_types()
    assert shared <= _top_level_names(PACKAGE / "_platform" / SHARED_PLATFORM_MODULE)
    wanted = set(_platform.__all__) - shared - {"PLATFORM"}
    backends = sorted(
        p
        for p in (PACKAGE / "_platform").glob("_*.py")
        if p.name not in ("__init__.py", SHARED_PLATFORM_MODULE)
    )
    assert {p.name for p in backends} >= {"_posix.py", "_linux.py", "_windows.py"}

    missing = {p.name: sorted(wanted - _top_level_names(p)) for p in backends}

    assert {name: names for name, names in missing.items() if names} == {}


def test_only_the_platform_package_should_look_at_the_platform():
    allowed = PACKAGE / "_platform" / "__init__.py"
    pattern = re.compile(r"\bsys\.platform\b|\bos\.name\b")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == allowed:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{lineno}: {line.strip()}")

    assert offenders == []
    assert pattern.search(allowed.read_text(encoding="utf-8"))  # the check itself can see them
