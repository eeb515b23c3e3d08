"""edgeprune: prune image classifiers for edge CPUs and prove the gains with honest measurements.

The Python API (see README "Python API"): `load_data`, `train_model`, `prune_model`, `evaluate`,
`evaluate_shifted`, `measure`, `export_model`, `bench`, `load_model`, over `Model` objects and
dataclass configs (`DataOptions`, `TrainRecipe`, the pruning configs, `Schedule`). Names are
resolved lazily, so `import edgeprune.runtime` on an edge device never imports torch."""

from __future__ import annotations

import importlib

from edgeprune.errors import EdgepruneError

__version__ = "0.1.0"

_LAZY = {
    "edgeprune.api": ["bench", "evaluate", "evaluate_shifted", "export_model", "load_data", "load_model", "measure",
                      "prune_model", "train_model"],
    "edgeprune.data": ["DataBundle", "DataOptions"],
    "edgeprune.models": ["Model"],
    "edgeprune.train": ["TrainRecipe"],
    "edgeprune.pruning": ["L1Channel", "L1Unstructured", "L2Channel", "RandomChannel",
                          "RandomUnstructured", "Schedule", "TaylorChannel", "ChannelPruning",
                          "UnstructuredPruning", "register_importance"],
    "edgeprune.metrics": ["EvalResult", "RobustnessResult"],
    "edgeprune.workflows": ["ExportResult", "Measurement"],
    "edgeprune.runtime": ["Classifier"],
    "edgeprune.runtime.bench": ["BenchRow", "rows_frame"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["EdgepruneError", "__version__", *sorted(_WHERE)]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
