"""The house plan (docs/architecture.md), read from the package's own imports: no import cycles,
and no import against the layering. Imports under `if TYPE_CHECKING:` are annotations, not
dependencies, and are left out; imports inside functions count like any other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dicomd"

# Layers from the bottom up; a module may import its own layer or any layer below it.
# The first prefix that matches a module names its layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("dicomd.errors", "dicomd.lifecycle", "dicomd.layout", "dicomd.storage", "dicomd.routing",
              "dicomd.allowlist", "dicomd.dicomtags", "dicomd.crashpoints", "dicomd.header", "dicomd.mappings",
              "dicomd.config", "dicomd.spool", "dicomd.logsafe", "dicomd.ratelimit", "dicomd.progress",
              "dicomd.dburl", "dicomd.migrations", "dicomd.runlock")),
    ("stores", ("dicomd.catalog", "dicomd.auth")),
    ("stages", ("dicomd.ingest", "dicomd.prearchive", "dicomd.archive", "dicomd.anonymize", "dicomd.pixels", "dicomd.pipeline",
                "dicomd.snapshot", "dicomd.storecheck", "dicomd.views", "dicomd.processors", "dicomd.cluster")),
    ("composition", ("dicomd.stores",)),
    ("receivers", ("dicomd.scp", "dicomd.engine", "dicomd.bulk", "dicomd.dropfolder", "dicomd.workers", "dicomd.receivermain",
                   "dicomd.receiverset")),
    ("operations", ("dicomd.operations", "dicomd.snapshots", "dicomd.importjobs", "dicomd.dicomscp",
                    "dicomd.processing", "dicomd.catalogmove")),
    ("faces", ("dicomd.http", "dicomd.daemon", "dicomd.cli", "dicomd.__main__")),
)
# Within the faces, who may import whom (the daemon serves the HTTP face; the CLI starts the daemon).
FACE_RULES = {
    "dicomd.http": ("dicomd.http",),
    "dicomd.daemon": ("dicomd.http",),
    "dicomd.cli": ("dicomd.cli", "dicomd.daemon"),
}
TEST_DATA = "dicomd.testing"  # the test-data generator: no runtime module imports it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str) -> set[str]:
    """Every dicomd module the file of ``module`` imports (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("dicomd"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("dicomd"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t in imports_of(path, name) if t in modules and t != name}
        edges[name] = {t for t in targets if not name.startswith(t + ".")}  # a package's own __init__
    return edges


def layer_of(module: str) -> int:
    for index, (_name, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of docs/architecture.md: add it to LAYERS and the doc")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer() -> None:
    for module in graph():
        if not module.startswith(TEST_DATA) and module != "dicomd":
            layer_of(module)


def test_imports_follow_the_layering() -> None:
    wrong = []
    for module, targets in graph().items():
        if module.startswith(TEST_DATA) or module == "dicomd":
            continue
        for target in targets:
            if target.startswith(TEST_DATA):
                wrong.append(f"{module} imports the test-data generator {target}")
                continue
            if target == "dicomd":
                continue
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]})")
            face = next((f for f in FACE_RULES if module == f or module.startswith(f + ".")), None)
            target_face = next((f for f in FACE_RULES if target == f or target.startswith(f + ".")), None)
            if face and target_face and not any(target_face == allowed for allowed in FACE_RULES[face]):
                wrong.append(f"{module} imports {target}: {face} may import only {FACE_RULES[face]}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("text, expected", [
    ("from dicomd.catalog import Catalog\n", {"dicomd.catalog", "dicomd.catalog.Catalog"}),
    ("if TYPE_CHECKING:\n    from dicomd.stores import Stores\n", set()),
    ("def f():\n    import dicomd.http.app\n", {"dicomd.http.app"}),
])
def test_the_import_reader(tmp_path: Path, text: str, expected: set[str]) -> None:
    path = tmp_path / "probe.py"
    path.write_text(text)
    assert imports_of(path, "dicomd.probe") == expected


def test_a_cycle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
