"""Workflows: the jobs that tie the layers below together (data, models, metrics, training,
pruning, export) — train a baseline, prune a checkpoint, export and verify it, measure, bench,
the demo. Each layer below depends only downward; only workflows (and the study, the station and
the CLI above them) combine them."""

from edgeprune.workflows.bench import bench_artifacts
from edgeprune.workflows.export import FORMATS, ExportResult, export_checkpoint
from edgeprune.workflows.measure import RUNTIMES, Measurement, measure, software_versions
from edgeprune.workflows.prune import PruneJob, PruneOutcome, prune_checkpoint, prune_model
from edgeprune.workflows.train import train_baseline

__all__ = [
    "FORMATS",
    "Measurement",
    "ExportResult",
    "PruneJob",
    "PruneOutcome",
    "RUNTIMES",
    "bench_artifacts",
    "export_checkpoint",
    "measure",
    "prune_checkpoint",
    "prune_model",
    "software_versions",
    "train_baseline",
]
