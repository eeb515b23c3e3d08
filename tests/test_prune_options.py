"""PruneJob.from_options: the defaults and conflicts of `edgeprune prune`'s options, in one place
for the CLI and Python callers."""

from __future__ import annotations

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.pruning import L1Channel, L1Unstructured, Schedule, TaylorChannel
from edgeprune.train import TrainRecipe
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



# ----------------------------------------------------------------------------- one rule set
# The Python API and a study build their jobs through from_options: for the same options, the
# same PruneJob as `edgeprune prune` (checked without pruning: the workflow is replaced by a
# probe that keeps the job it was given).

class _Captured(Exception):
    pass


def _probe(monkeypatch, owner, name):
    seen = []

    def probe(_model, job, *_args, **_kwargs):
        seen.append(job)
        raise _Captured

    monkeypatch.setattr(owner, name, probe)
    return seen


@pytest.mark.parametrize("method, options", [
    ("taylor-channel", dict(target=0.4, round_to=8, schedule="geometric")),  # steps default to 3
    ("l1-channel", dict(latency_budget_ms=3.0, latency_min_keep=0.4, schedule="linear", steps=2, seed=2)),
    ("random", dict(target=0.7, seed=5, max_drop=1.5, final_epochs=2, distill=True)),
    ("l1", dict(schedule="agp", finetune=TrainRecipe(epochs=2, lr=0.01), recalib_batches=5)),
])
def test_the_api_builds_the_commands_job_from_a_method_name(monkeypatch, method, options):
    import edgeprune.api as api

    seen = _probe(monkeypatch, api, "_prune_workflow")
    with pytest.raises(_Captured):
        api.prune_model(None, method, None, device="cpu", **options)
    rest = dict(options)
    assert seen == [PruneJob.from_options(method, rest.pop("target", None), **rest)]


def test_the_api_builds_the_commands_job_from_a_config_object(monkeypatch):
    import edgeprune.api as api

    seen = _probe(monkeypatch, api, "_prune_workflow")
    cases = [
        (TaylorChannel(target=0.4, target_kind="params", round_to=8), dict(schedule=Schedule("geometric", 3)),
         ("taylor-channel", 0.4), dict(round_to=8, schedule="geometric", steps=3)),
        (L1Channel(latency_budget_ms=3.0, latency_min_keep=0.4), dict(seed=2),
         ("l1-channel",), dict(latency_budget_ms=3.0, latency_min_keep=0.4, seed=2)),
        (L1Unstructured(sparsity=0.8, scope="blocks"), dict(schedule="geometric", max_drop=2.0),
         ("l1", 0.8), dict(scope="blocks", schedule="geometric", max_drop=2.0)),
    ]
    for config, api_options, args, options in cases:
        with pytest.raises(_Captured):
            api.prune_model(None, config, None, device="cpu", **api_options)
        assert seen.pop() == PruneJob.from_options(*args, **options), config
        # the fine-tune default is the command's too (its seed is the job's)
        assert api.prune_job(config, seed=4).finetune == PruneJob.from_options(*args, **{**options, "seed": 4}).finetune


def test_the_api_refuses_options_beside_a_config_object():
    import edgeprune.api as api

    with pytest.raises(EdgepruneError, match="carries its own target"):
        api.prune_job(L1Unstructured(sparsity=0.5), target=0.9)


STUDY = """
[data]
spec = "digits"
[finetune]
lr = 0.02
optimizer = "sgd"
[[experiments]]
name = "taylor-latency"
method = "taylor-channel"
target = 0.3
target_kind = "latency"
schedule = "geometric"
steps = 2
finetune_epochs = 2
final_epochs = 1
distill = true
options = { latency_min_keep = 0.4, round_to = 8 }
[[experiments]]
name = "random-seeded"
method = "random"
target = 0.6
seed = 3
max_drop = 2.0
"""

STUDY_AS_FLAGS = {  # the same experiments as `edgeprune prune` options
    "taylor-latency": (("taylor-channel", 0.3), dict(
        target_kind="latency", latency_min_keep=0.4, round_to=8, schedule="geometric", steps=2,
        finetune=TrainRecipe(epochs=2, lr=0.02, optimizer="sgd"), final_epochs=1, distill=True)),
    "random-seeded": (("random", 0.6), dict(
        seed=3, max_drop=2.0, finetune=TrainRecipe(epochs=1, lr=0.02, optimizer="sgd"))),
}


def test_a_study_builds_the_commands_job(monkeypatch, tmp_path):
    import edgeprune.workflows as workflows
    from edgeprune.study import execute, parse_config
    from edgeprune.study.plan import plan_study

    seen = _probe(monkeypatch, workflows, "prune_checkpoint")
    planned = [e for e in plan_study(parse_config(STUDY), "fingerprint") if e.kind == "prune"]
    assert sorted(e.name for e in planned) == sorted(STUDY_AS_FLAGS)
    for experiment in planned:
        with pytest.raises(_Captured):  # what execute() runs for a pruning experiment
            execute._prune(experiment.settings, None, tmp_path / "baseline", tmp_path / "out", print, False, "cpu")
        args, options = STUDY_AS_FLAGS[experiment.name]
        job = seen.pop()
        assert job == PruneJob.from_options(*args, **options), experiment.name
        assert job.config.to_dict() == experiment.config["prune"]["config"]  # the job the key was made of
    assert PruneJob.from_options("random", 0.6, seed=3).config.seed == 3  # the draw's seed, as on the command line


def test_a_study_refuses_a_second_seed(tmp_path):
    from edgeprune.study import parse_config

    text = STUDY.replace("max_drop = 2.0", "max_drop = 2.0\noptions = { seed = 4 }")
    with pytest.raises(EdgepruneError, match="options.seed"):
        parse_config(text)
