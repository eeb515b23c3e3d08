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
    "models": 3,
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
