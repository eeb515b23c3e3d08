"""The subpackages of edgeprune import only downward (docs/ARCHITECTURE.md), so there is no cycle.

Static: every import in the source text counts, lazy ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeprune"

# Lower rank = lower layer. A module may import its own subpackage and any lower rank; two
# subpackages of the same rank never import each other.
LAYERS: dict[str, float] = {
    "errors": 0,
    "validation": 0.5,  # errors-level: numeric ranges, torch-free
    "outputs": 0.5,  # errors-level: output checks and atomic writes, torch-free
    "runtime": 1,
    "hardware": 2,
    "data": 3,
    "models": 3.5,  # a model records the data split it was trained on (models.check_data_for_model)
    "metrics": 4,
    "train": 5,
    "pruning": 5,
    "export": 5,
    "workflows": 6,
    "api": 7,
    "study": 7,
    "station": 7,
    "fleet": 7.5,  # above station: it reads the stations' batch format (station.upload)
    "cli": 8,
}
TOP_LEVEL = {"__init__", "__main__"}  # the package entry points may import anything (lazily)


def _layer(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imported_layers(path: Path) -> set[str]:
    found = set()
    package = path.relative_to(SRC.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level])
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "edgeprune" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def test_every_subpackage_has_a_layer():
    names = {_layer(p) for p in SRC.rglob("*.py")} - TOP_LEVEL
    assert names <= set(LAYERS), f"add {sorted(names - set(LAYERS))} to LAYERS and docs/ARCHITECTURE.md"


def test_imports_point_down_only():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        own = _layer(path)
        if own in TOP_LEVEL:
            continue
        for target in _imported_layers(path):
            if target != own and LAYERS[target] >= LAYERS[own]:
                wrong.append(f"{path.relative_to(SRC)} ({own}) imports edgeprune.{target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_edges() -> dict[str, set[str]]:
    """module -> the edgeprune modules it imports (lazy imports too). A package's __init__ is
    left out as a source, since its re-exports are not a module's own dependency; an import of a
    package's name resolves to the module that defines it where one exists."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        package = path.relative_to(SRC.parent).with_suffix("").parts
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            candidates: list[str] = []
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(list(package[: len(package) - node.level]) + ([base] if base else []))
                candidates = [f"{base}.{a.name}" for a in node.names] + [base]
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name and modules[candidate].name != "__init__.py":
                    targets.add(candidate)
        edges[name] = targets
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_lazy_loop():
    # The finder itself must see a loop that only a lazy import closes.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    """No two modules import each other, directly or around a loop, inside a package too
    (lazy imports count: they hide a loop, they do not remove it)."""
    edges = _module_edges()
    assert "edgeprune.runtime.sessions" in edges["edgeprune.runtime.backends"]
    cycles = _cycles(edges)
    assert not cycles, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)
