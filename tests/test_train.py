"""Training, evaluation and the train/evaluate commands, on the bundled digits data."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.data import load_data
from edgeprune.errors import EdgepruneError
from edgeprune.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint
from edgeprune.metrics import evaluate
from edgeprune.train import TrainRecipe, auto_batch_size, fit
from edgeprune.workflows import train_baseline


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", image_size=32, val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "baseline"
    recipe = TrainRecipe(epochs=4, seed=0)  # the defaults: SGD, cosine, batch size by data size
    model, meta, result = train_baseline(
        digits, arch="mobilenet_v2", recipe=recipe, out=out, progress=False
    )
    return out, model, meta, result


@pytest.mark.slow
def test_mobilenet_v2_learns_digits_well_above_chance(trained):
    _, _, meta, result = trained
    assert result.accuracy > 0.5, result.accuracy  # chance is 0.1
    assert meta.metrics["test_accuracy"] == pytest.approx(result.accuracy)
    history = meta.training["history"]
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] is not None
    kept = meta.training["kept_epoch"]
    assert [r["kept"] for r in history] == [r["epoch"] == kept for r in history]
    assert meta.metrics["val_accuracy"] == max(r["val_accuracy"] for r in history)
    assert meta.metrics["chance_level_warning"] is None


def test_evaluation_report_is_consistent(trained, digits):
    _, model, _, result = trained
    confusion = torch.tensor(result.confusion_matrix)
    assert confusion.shape == (10, 10)
    assert confusion.sum().item() == result.n == len(digits.test.labels)
    assert result.accuracy == pytest.approx(confusion.diag().sum().item() / result.n)
    recalls = [r for r in result.per_class_recall.values()]
    assert result.balanced_accuracy == pytest.approx(sum(recalls) / len(recalls))


def test_saved_checkpoint_reproduces_the_test_accuracy(trained, digits):
    out, _, meta, result = trained
    model, loaded_meta = load_checkpoint(out)
    again = evaluate(model, digits.test, mean=loaded_meta.mean, std=loaded_meta.std,
                     class_names=loaded_meta.class_names)
    assert again.accuracy == pytest.approx(result.accuracy)
    # The resolved recipe is stored, the automatic batch size included.
    assert loaded_meta.training["optimizer"] == "sgd" and loaded_meta.training["lr"] == 0.01
    assert loaded_meta.training["batch_size"] == 32 and loaded_meta.training["schedule"] == "cosine"


def test_after_step_callback_runs_after_every_optimizer_step(digits):
    model = create_model("mobilenet_v2", 10)
    calls = []
    fit(model, digits, TrainRecipe(epochs=1, batch_size=256), progress=False,
        after_step=lambda: calls.append(1))
    assert len(calls) == len(digits.train.labels) // 256


def test_sgd_cosine_decays_to_zero(digits):
    model = create_model("mobilenet_v2", 10)
    history = fit(model, digits, TrainRecipe(epochs=1, optimizer="sgd", batch_size=256), progress=False)
    assert history[0]["lr_end"] == pytest.approx(0.0, abs=1e-9)


def test_default_batch_size_gives_small_data_enough_steps():
    assert auto_batch_size(45_000) == 128  # CIFAR-10's training split: unchanged
    assert auto_batch_size(1_293) == 32  # digits: 40 steps an epoch instead of 10
    assert auto_batch_size(100) == 16  # never below 16
    assert TrainRecipe(epochs=1).resolved().batch_size is None  # not known before the data
    assert TrainRecipe(epochs=1, batch_size=64).resolved(1_293).batch_size == 64  # asked: kept


def _small(digits, per_class: int = 30):
    """A few images per class (train and val), for fast checks of the loop's mechanics."""
    import dataclasses

    def first(split, n):
        picked = [i for c in range(10) for i in (split.labels == c).nonzero().flatten()[:n].tolist()]
        return split.subset(picked)

    return dataclasses.replace(digits, train=first(digits.train, per_class), val=first(digits.val, 5))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_identical_weights_and_accuracy(digits):
    from edgeprune.hardware import seed_everything

    runs = []
    for _ in range(2):
        seed_everything(5)
        model = create_model("mobilenet_v2", 10)
        history = fit(model, _small(digits), TrainRecipe(epochs=2, seed=5), progress=False)
        runs.append((_state(model), [r["val_accuracy"] for r in history], history[-1]["loss"]))
    (first, val1, loss1), (second, val2, loss2) = runs
    assert val1 == val2 and loss1 == loss2
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_train_baseline_seeds_the_initialisation_too(digits):
    small = _small(digits, 10)
    torch.manual_seed(123)  # whatever the global state before: the recipe's seed decides
    a, _, _ = train_baseline(small, arch="mobilenet_v2", recipe=TrainRecipe(epochs=1, seed=2), progress=False)
    torch.manual_seed(456)
    b, _, _ = train_baseline(small, arch="mobilenet_v2", recipe=TrainRecipe(epochs=1, seed=2), progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_fit_keeps_the_best_validation_epoch_with_masks_and_pruned_shapes(digits, monkeypatch):
    """The weights that come back are those of the best validation epoch, as they were in
    training: masked zeros stay zero and a physically slimmed model keeps its slim shapes."""
    import importlib

    from edgeprune.pruning import L2Channel, prune_iteratively

    # The module, not the function of the same name that edgeprune.metrics re-exports.
    evaluation = importlib.import_module("edgeprune.metrics.evaluate")

    model = create_model("mobilenet_v2", 10)
    dense_params = sum(p.numel() for p in model.parameters())
    model = prune_iteratively(model, L2Channel(target=0.5), "oneshot",
                              example_inputs=torch.zeros(1, 3, 32, 32)).model
    slim_shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) < 0.7 * dense_params
    weight = model.features[1].conv[0][0].weight  # a depthwise conv: zero its first half
    mask = torch.ones_like(weight)
    mask[: len(mask) // 2] = 0
    weight.data.mul_(mask)

    scripted = iter([0.5, 0.9, 0.7])  # epoch 2 is the best; the last one is not
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: dataclasses_replace(real(*a, **k), next(scripted)))
    snapshots, logged = {}, []
    history = fit(model, _small(digits), TrainRecipe(epochs=3, seed=0), progress=False,
                  after_step=lambda: weight.data.mul_(mask), log=logged.append,
                  on_epoch_end=lambda epoch, _r: snapshots.update({epoch + 1: _state(model)}))
    assert [r["kept"] for r in history] == [False, True, False]
    from edgeprune.train import kept_epoch

    assert kept_epoch(history) == 2
    assert any("kept epoch 2/3" in line for line in logged)
    now = model.state_dict()
    assert {k: v.shape for k, v in now.items()} == slim_shapes
    assert all(torch.equal(now[k], snapshots[2][k]) for k in now)
    assert not all(torch.equal(now[k], snapshots[3][k]) for k in now)
    assert model.features[1].conv[0][0].weight[: len(mask) // 2].abs().sum().item() == 0.0


def dataclasses_replace(result, accuracy):
    import dataclasses

    return dataclasses.replace(result, accuracy=accuracy)


def test_without_a_validation_split_the_last_epoch_is_kept(digits):
    import dataclasses

    small = _small(digits, 10)
    no_val = dataclasses.replace(small, val=small.val.subset([]))
    history = fit(create_model("mobilenet_v2", 10), no_val, TrainRecipe(epochs=2), progress=False)
    assert [r["kept"] for r in history] == [False, True] and history[-1]["val_accuracy"] is None


def test_chance_level_warning():
    from edgeprune.metrics.chance import chance_level_warning

    message = chance_level_warning(0.10, 10)
    assert "chance level" in message
    for hint in ("--epochs", "--lr", "--weights imagenet", "data check"):
        assert hint in message
    assert chance_level_warning(0.115, 10) is not None  # within 2 points of 10%
    assert chance_level_warning(0.05, 10) is not None  # below chance is no better
    assert chance_level_warning(0.125, 10) is None
    assert chance_level_warning(0.51, 2) is not None and chance_level_warning(0.53, 2) is None
    assert chance_level_warning(None, 10) is None


@pytest.mark.parametrize(
    "options,match",
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"lr": -1.0}, "learning rate"),
        ({"batch_size": 0}, "batch size"),
        ({"label_smoothing": 1.5}, "label smoothing"),
    ],
)
def test_bad_recipes_are_clear_errors(options, match):
    with pytest.raises(EdgepruneError, match=match):  # refused when the recipe is built
        TrainRecipe(epochs=1, **options)


def test_cli_train_then_evaluate_json(tmp_path, capsys):
    from edgeprune.cli import main

    out = tmp_path / "cli-ckpt"
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", "digits", "--epochs", "1", "--max-per-class", "40",
              "--batch-size", "64", "--out", str(out), "--threads", "1", "--device", "cpu"])
    assert done.value.code == 0
    printed = capsys.readouterr()
    out_text, err_text = (" ".join(text.split()) for text in printed)  # rich wraps long lines
    _, meta = load_checkpoint(out)
    assert meta.training["kept_epoch"] == 1 and "weights of epoch 1/1" in out_text
    # Printed exactly when the stored test accuracy is at chance level.
    assert ("chance level" in err_text) == (meta.metrics["chance_level_warning"] is not None)
    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(out), "--data", "digits", "--max-per-class", "40", "--json",
              "--threads", "1"])
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"accuracy", "balanced_accuracy", "per_class_recall", "confusion_matrix"}
    assert len(report["confusion_matrix"]) == 10


def test_cli_evaluate_with_mismatched_classes_is_a_clear_error(tmp_path, capsys):
    from edgeprune.cli import main

    meta = CheckpointMeta("mobilenet_v2", [f"part{i}" for i in range(10)], 32, [0.5] * 3, [0.25] * 3)
    save_checkpoint(create_model("mobilenet_v2", 10), meta, tmp_path / "other")
    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(tmp_path / "other"), "--data", "digits", "--max-per-class", "20"])
    assert done.value.code == 2
    assert "classes differ" in capsys.readouterr().err


def test_cli_missing_checkpoint_is_exit_code_2(tmp_path, capsys):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(tmp_path / "missing"), "--data", "digits"])
    assert done.value.code == 2
    assert "not found" in capsys.readouterr().err


def test_cli_help_lists_the_commands(capsys):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "measure", "data", "demo", "study", "station"):
        assert command in text


def test_cli_help_lists_each_command_by_one_unbroken_summary():
    """The docstrings are wrapped at 100 columns; --help must not keep those breaks mid-sentence."""
    from edgeprune.cli import app

    def commands(typer_app):
        yield from typer_app.registered_commands
        for group in typer_app.registered_groups:
            yield from commands(group.typer_instance)

    listed = [info for info in commands(app) if info.callback is not None and info.callback.__doc__]
    assert len(listed) >= 12
    assert all(info.short_help and "\n" not in info.short_help for info in listed)


def test_distillation_loss_is_zero_soft_term_when_student_equals_teacher():
    from edgeprune.train import distillation_loss

    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    hard = torch.tensor(2.0)
    same = distillation_loss(logits, logits.clone(), hard, weight=0.5, temperature=4.0)
    assert same.item() == pytest.approx(1.0, abs=1e-6)  # only (1 - 0.5) * hard remains
    other = distillation_loss(logits, torch.randn(8, 10), hard, weight=0.5, temperature=4.0)
    assert other.item() > 1.0


@pytest.mark.slow
def test_fit_with_a_teacher_pulls_the_student_towards_it(trained, digits):
    _, teacher, _, _ = trained
    torch.manual_seed(3)
    student = create_model("mobilenet_v2", 10)
    fit(student, digits, TrainRecipe(epochs=2, batch_size=32, seed=3), progress=False,
        teacher=teacher, distill_weight=1.0, temperature=2.0)
    with torch.inference_mode():
        from edgeprune.data import BatchLoader

        x, _ = next(iter(BatchLoader(digits.test, 200, mean=digits.mean, std=digits.std)))
        agreement = (student.eval()(x).argmax(1) == teacher.eval()(x).argmax(1)).float().mean().item()
    assert agreement > 0.3  # trained on the teacher's outputs alone (no labels): far above 0.1
    with pytest.raises(EdgepruneError, match="distillation"):
        fit(student, digits, TrainRecipe(epochs=1), progress=False, teacher=teacher, distill_weight=0)
