"""Per-layer tables: shapes before/after, channels kept, weight sparsity; and a text rendering."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeprune.pruning.scope import prunable_layers


def layer_snapshot(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Shapes of every Conv2d/Linear weight, to compare against after pruning."""
    return {
        name: {
            "type": type(m).__name__,
            "shape": list(m.weight.shape),
            "params": m.weight.numel(),
            "out": m.weight.shape[0],
        }
        for name, m in prunable_layers(model).items()
    }


def layer_table(
    model: nn.Module,
    before: dict[str, dict[str, Any]],
    *,
    counted: set[str] | None = None,
    capped: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per Conv2d/Linear layer: shape and output channels before/after, weights and exact
    zeros after, sparsity, and whether the layer was in the pruning's scope / held at the cap."""
    rows = []
    for name, m in prunable_layers(model).items():
        w = m.weight.detach()
        zeros = w.numel() - int(torch.count_nonzero(w))
        b = before.get(name, {})
        rows.append(
            {
                "layer": name,
                "type": type(m).__name__,
                "shape_before": b.get("shape"),
                "shape_after": list(w.shape),
                "out_before": b.get("out"),
                "out_after": int(w.shape[0]),
                "params_before": b.get("params"),
                "params_after": w.numel(),
                "zeros": zeros,
                "sparsity": zeros / w.numel() if w.numel() else 0.0,
                "in_scope": counted is None or name in counted,
                "capped": bool(capped and name in capped),
            }
        )
    return rows


def empty_layers(rows: list[dict[str, Any]]) -> list[str]:
    return [r["layer"] for r in rows if r["params_after"] == 0 or r["sparsity"] >= 1.0]


def format_layer_table(rows: list[dict[str, Any]], *, only_changed: bool = False) -> str:
    """Plain-text table (the CLI renders its own rich table from the same rows)."""
    lines = [f"{'layer':<34} {'shape before':>20} {'shape after':>20} {'sparsity':>9}"]
    for r in rows:
        if only_changed and r["shape_before"] == r["shape_after"] and r["zeros"] == 0:
            continue
        flag = " (cap)" if r["capped"] else ""
        lines.append(
            f"{r['layer']:<34} {'x'.join(map(str, r['shape_before'] or [])):>20} "
            f"{'x'.join(map(str, r['shape_after'])):>20} {r['sparsity']:>8.1%}{flag}"
        )
    return "\n".join(lines)
