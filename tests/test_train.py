"""Training, evaluation and the train/evaluate commands, on the bundled digits data."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.data import load_data
from edgeprune.errors import EdgepruneError
from edgeprune.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint
from edgeprune.metrics import evaluate
from edgeprune.train import TrainRecipe, fit
from edgeprune.workflows import train_baseline


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", image_size=32, val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "baseline"
    recipe = TrainRecipe(epochs=4, optimizer="adam", batch_size=32, seed=0)
    model, meta, result = train_baseline(
        digits, arch="mobilenet_v2", recipe=recipe, out=out, progress=False
    )
    return out, model, meta, result


def test_mobilenet_v2_learns_digits_well_above_chance(trained):
    _, _, meta, result = trained
    assert result.accuracy > 0.5, result.accuracy  # chance is 0.1
    assert meta.metrics["test_accuracy"] == pytest.approx(result.accuracy)
    history = meta.training["history"]
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] is not None


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
    assert loaded_meta.training["optimizer"] == "adam" and loaded_meta.training["lr"] == 1e-3


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


@pytest.mark.parametrize(
    "recipe,match",
    [
        (TrainRecipe(epochs=1, optimizer="rmsprop"), "unknown optimizer"),
        (TrainRecipe(epochs=1, lr=-1.0), "learning rate"),
        (TrainRecipe(epochs=1, batch_size=0), "batch size"),
        (TrainRecipe(epochs=1, label_smoothing=1.5), "label smoothing"),
    ],
)
def test_bad_recipes_are_clear_errors(recipe, match):
    with pytest.raises(EdgepruneError, match=match):
        recipe.resolved()


def test_cli_train_then_evaluate_json(tmp_path, capsys):
    from edgeprune.cli import main

    out = tmp_path / "cli-ckpt"
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", "digits", "--epochs", "1", "--max-per-class", "40",
              "--batch-size", "64", "--out", str(out), "--threads", "1", "--device", "cpu"])
    assert done.value.code == 0
    capsys.readouterr()
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
    for command in ("train", "evaluate", "measure", "data", "demo"):
        assert command in text


def test_distillation_loss_is_zero_soft_term_when_student_equals_teacher():
    from edgeprune.train import distillation_loss

    torch.manual_seed(0)
    logits = torch.randn(8, 10)
    hard = torch.tensor(2.0)
    same = distillation_loss(logits, logits.clone(), hard, weight=0.5, temperature=4.0)
    assert same.item() == pytest.approx(1.0, abs=1e-6)  # only (1 - 0.5) * hard remains
    other = distillation_loss(logits, torch.randn(8, 10), hard, weight=0.5, temperature=4.0)
    assert other.item() > 1.0


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
