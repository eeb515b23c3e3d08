"""PruneJob.from_options: the defaults and conflicts of `edgeprune prune`'s options, in one place
for the CLI and Python callers."""

from __future__ import annotations

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.pruning import L1Channel, Schedule, TaylorChannel
from edgeprune.workflows.prune import PruneJob


def test_defaults():
    job = PruneJob.from_options("taylor-channel", schedule="geometric")
    assert isinstance(job.config, TaylorChannel)
    assert (job.config.target, job.config.target_kind) == (0.5, "params")  # channel methods count parameters
    assert job.schedule == Schedule("geometric", 3)
    assert PruneJob.from_options("l1").config.sparsity == 0.5
    assert PruneJob.from_options("l1", schedule="oneshot").schedule == Schedule("oneshot", 1)
    assert PruneJob.from_options("random", seed=7).config.seed == 7


def test_a_latency_budget_means_the_latency_target():
    config = PruneJob.from_options("l1-channel", latency_budget_ms=3.0, latency_min_keep=0.4).config
    assert isinstance(config, L1Channel)
    assert (config.target, config.target_kind, config.latency_budget_ms, config.latency_min_keep) == (
        None, "latency", 3.0, 0.4)


@pytest.mark.parametrize("method, options, message", [
    ("l1-channel", dict(latency_budget_ms=3.0, target=0.5), "either --target or --latency-budget-ms"),
    ("l1-channel", dict(latency_budget_ms=3.0, target_kind="params"), "goes with --target-kind latency"),
    ("l1-channel", dict(latency_runtime="onnxruntime"), "go with --target-kind latency"),
    ("l1", dict(round_to=8), "do not apply to method l1"),
    ("l1", dict(latency_budget_ms=3.0), "do not apply to method l1"),
    ("l2-unstructured", {}, "unknown pruning method"),
])
def test_conflicts_are_refused(method, options, message):
    with pytest.raises(EdgepruneError, match=message):
        PruneJob.from_options(method, **options)
