"""Workflows: the jobs that tie the layers below together (data, models, metrics, training,
pruning, export) — train a baseline, prune a model or checkpoint, export and verify it, measure,
bench, the demo. Each layer below depends only downward; only workflows (and the API, the study,
the station and the CLI above them) combine them.

Names resolve lazily: the CLI imports `edgeprune.workflows.demo` for its defaults on a device
that has no torch, where `edgeprune bench model.onnx` must still start."""

from __future__ import annotations

import importlib

_WHERE = {
    "bench_artifacts": "bench",
    "FORMATS": "export", "ExportResult": "export", "export_checkpoint": "export", "export_model": "export",
    "RUNTIMES": "measure", "Measurement": "measure", "measure": "measure", "software_versions": "measure",
    "PruneJob": "prune", "PruneOutcome": "prune", "PruneRecord": "prune", "prune_checkpoint": "prune", "prune_model": "prune",
    "train_baseline": "train",
    "run_demo": "demo",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgeprune.workflows.{module}"), name)
    globals()[name] = value
    return value
