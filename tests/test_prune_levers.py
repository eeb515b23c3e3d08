"""Levers of a deep cut: a final fine-tune after the schedule, and the resolution lever."""

from __future__ import annotations

import pytest

from edgeprune.data import load_data
from edgeprune.models import Model
from edgeprune.pruning import Schedule, TaylorChannel
from edgeprune.train import TrainRecipe
from edgeprune.workflows import train_baseline
from edgeprune.workflows.prune import PruneJob, prune_checkpoint


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    data = load_data("digits", image_size=32, val_fraction=0.1, seed=0, max_per_class=40)
    out = tmp_path_factory.mktemp("levers") / "dense"
    train_baseline(data, arch="mobilenet_v2", recipe=TrainRecipe(epochs=2, batch_size=16), out=out,
                   progress=False)
    return out


def test_final_epochs_fine_tune_after_the_schedule_and_record_their_curve(dense, tmp_path):
    data = load_data("digits", image_size=32, val_fraction=0.1, seed=0, max_per_class=40)
    job = PruneJob(config=TaylorChannel(target=0.5), schedule=Schedule("oneshot", 1),
                   finetune=TrainRecipe(epochs=1, batch_size=16), distill=True, final_epochs=2)
    outcome = prune_checkpoint(dense, job, data, out=tmp_path / "cut", progress=False)
    final = outcome.record.final_finetune
    assert final.epochs == 2 and [r["epoch"] for r in final.history] == [1, 2]
    assert sum(r["kept"] for r in final.history) == 1
    assert Model.load(tmp_path / "cut").meta.pruning["final_finetune"]["epochs"] == 2


def test_a_cut_fine_tuned_at_another_resolution_takes_that_input(dense, tmp_path):
    data = load_data("digits", image_size=24, val_fraction=0.1, seed=0, max_per_class=40)
    job = PruneJob(config=TaylorChannel(target=0.5), schedule=Schedule("oneshot", 1),
                   finetune=TrainRecipe(epochs=1, batch_size=16))
    outcome = prune_checkpoint(dense, job, data, out=tmp_path / "small", progress=False)
    model = Model.load(tmp_path / "small")
    assert model.meta.input_size == 24 and outcome.record.input_size_from == 32
    assert 0.0 <= outcome.record.test_accuracy <= 1.0


def test_the_cli_takes_every_lever(dense, tmp_path, capsys):
    import json

    from edgeprune.cli import main

    out = tmp_path / "cli-cut"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(dense), "--data", "digits", "--method", "l2-channel", "--target", "0.3",
              "--image-size", "24", "--final-epochs", "1", "--augment", "line", "--balance", "sampler",
              "--distill", "--finetune-epochs", "1", "--batch-size", "16", "--threads", "1", "--out", str(out),
              "--json"])
    assert (exit_info.value.code or 0) == 0
    record = json.loads(capsys.readouterr().out)
    model = Model.load(out)
    assert model.meta.input_size == 24
    finetune = model.meta.pruning["finetune"]
    assert (finetune["augment"], finetune["balance"], finetune["distill"]) == ("line", "sampler", True)
    assert model.meta.pruning["final_finetune"]["epochs"] == 1
    assert record["test_accuracy"] == model.meta.metrics["test_accuracy"]


def test_the_cli_refuses_an_unknown_lever_value(dense, tmp_path, capsys):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(dense), "--data", "digits", "--method", "l2-channel", "--augment", "sunny",
              "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "augment preset 'sunny'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
