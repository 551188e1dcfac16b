"""The package's layers, enforced by reading its source (issue 12).

* no import cycle between the package's modules, counting imports inside
  functions too (only ``if TYPE_CHECKING:`` imports are left out: they never
  run);
* no private name (``_x``) imported from another module; the backends inside
  ``_platform/`` may share private helpers among themselves;
* no reach into another module's objects' private attributes
  (``session._state``, ``tracker._exclude``): an attribute that a module sets
  on ``self`` is read through ``self`` or by that module only;
* the tests do the same for the attributes that were their habit
  (``_state``, ``_core``, ``_lock``).
"""

from __future__ import annotations

import ast
import pathlib

import embassy_cleanup

PKG_DIR = pathlib.Path(embassy_cleanup.__file__).parent
PKG = "embassy_cleanup"
TESTS_DIR = pathlib.Path(__file__).parent


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG_DIR.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names."""
    if node.level == 0:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, runtime_only: bool = True) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for the package's own imports."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    nodes = _runtime_nodes(tree) if runtime_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PKG]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != PKG:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # ``from . import _platform``: the module itself
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, alias.name, node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    return {m: {t for t, _n, _l in imports_of(m) if t != m and t in MODULES} for m in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_package_has_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_a_private_name_from_another():
    platform = f"{PKG}._platform"
    bad = []
    for module in MODULES:
        for target, name, line in imports_of(module, runtime_only=False):
            if name is None or not _private(name) or target == module:
                continue
            if module.startswith(platform) and target.startswith(platform):
                continue  # the backends share helpers among themselves
            bad.append(f"{module}:{line} imports {name} from {target}")
    assert bad == []


def _self_attributes() -> dict[str, set[str]]:
    """Private attribute name -> the modules that set it on ``self``."""
    owners: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                else []
            )
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    if _private(t.attr):
                        owners.setdefault(t.attr, set()).add(module)
    return owners


def _foreign_reaches(path: pathlib.Path, module: str | None, owners: dict[str, set[str]]) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not _private(node.attr) or node.attr not in owners:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if module is not None and module in owners[node.attr]:
            continue  # the module that owns that attribute
        out.append(f"{path.name}:{node.lineno} reads .{node.attr} of another module's object")
    return out


def test_no_module_reaches_into_another_modules_private_attributes():
    owners = _self_attributes()
    bad = [hit for module, path in MODULES.items() for hit in _foreign_reaches(path, module, owners)]
    assert bad == []


def test_the_tests_use_accessors_not_internals():
    owners: dict[str, set[str]] = {"_state": set(), "_core": set(), "_lock": set(), "_lifecycle": set()}
    bad = [
        hit
        for path in sorted(TESTS_DIR.rglob("*.py"))
        if path.name != "test_layers.py"
        for hit in _foreign_reaches(path, None, owners)
    ]
    assert bad == []


def test_the_reach_finder_finds_a_reach(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(session):\n    return session._lifecycle\n")
    assert _foreign_reaches(probe, None, {"_lifecycle": {"x"}}) == [
        "probe.py:2 reads ._lifecycle of another module's object"
    ]
