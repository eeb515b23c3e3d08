"""Accuracy under shifted images (edgeprune.metrics.robustness) on the shared trained MobileNetV2:
the shifts are deterministic, severity 0 is the clean figure, strong noise costs a trained model
accuracy, and the CLI's `evaluate --shifts`."""

from __future__ import annotations

import json

import pytest
import torch


def test_shifts_are_deterministic_and_leave_the_random_state_alone(digits32):
    from edgeprune.metrics.robustness import SHIFTS

    images = digits32.test.images[:300]  # more than one chunk of SHIFT_CHUNK
    state = torch.get_rng_state()
    for shift in SHIFTS.values():
        assert torch.equal(shift.apply(images, 0), images)  # severity 0: the clean images
        strong = shift.apply(images, 3, seed=0)
        assert strong.dtype == torch.uint8 and strong.shape == images.shape
        assert torch.equal(strong, shift.apply(images, 3, seed=0)), shift.name
        assert not torch.equal(strong, images), f"{shift.name} at severity 3 changed nothing"
        # stronger severity, further from the clean images
        mild = shift.apply(images, 1, seed=0)
        distance = lambda x: (x.float() - images.float()).abs().mean()  # noqa: E731
        assert distance(mild) < distance(strong), shift.name
    noise = SHIFTS["gaussian_noise"]
    assert not torch.equal(noise.apply(images, 2, seed=0), noise.apply(images, 2, seed=1))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched


def test_clean_severity_equals_clean_accuracy_and_strong_noise_costs_accuracy(trained_digits_checkpoint, digits32):
    import edgeprune as ep
    from edgeprune.metrics.robustness import SHIFTS

    model = ep.load_model(trained_digits_checkpoint)
    clean = ep.evaluate(model, digits32)  # the independent, unshifted path
    result = ep.evaluate_shifted(model, digits32, severities=[0, 1, 3])
    assert isinstance(result, ep.RobustnessResult)
    assert result.n == clean.n == len(digits32.test)
    assert result.clean_accuracy == clean.accuracy == pytest.approx(model.metrics["test_accuracy"])
    assert result.clean_balanced_accuracy == clean.balanced_accuracy
    assert result.shifts == list(SHIFTS)
    for name in SHIFTS:
        assert result.accuracy(name, 0) == clean.accuracy, name
    assert clean.accuracy > 0.5  # a trained model, else a drop would prove nothing
    noise_mild, noise_strong = result.accuracy("gaussian_noise", 1), result.accuracy("gaussian_noise", 3)
    # how much strong noise costs depends on how the small model happened to train on this CPU
    # (a 3-point drop on one machine, 20 on another); that it costs something does not
    assert noise_strong < clean.accuracy - 0.02, (clean.accuracy, noise_strong)
    assert noise_strong < noise_mild
    assert result.mean_relative_drop is not None and result.mean_relative_drop > 0.05
    means = result.mean_accuracy_by_shift()
    expected = [r.accuracy for r in result.rows if r.shift == "gaussian_noise" and r.severity > 0]
    assert means["gaussian_noise"] == pytest.approx(sum(expected) / 2)
    # the same seed, the same figures
    again = ep.evaluate_shifted(model, digits32, shifts="gaussian_noise", severities="3")
    assert again.accuracy("gaussian_noise", 3) == noise_strong


def test_refusals(trained_digits_checkpoint, digits32):
    import edgeprune as ep
    from edgeprune.errors import EdgepruneError
    from edgeprune.metrics.robustness import evaluate_shifted

    model = ep.load_model(trained_digits_checkpoint)
    with pytest.raises(EdgepruneError, match="unknown shift 'fog'"):
        evaluate_shifted(model, digits32, shifts=["fog"])
    with pytest.raises(EdgepruneError, match="severity"):
        evaluate_shifted(model, digits32, severities=[4])
    normalised = digits32.test.images[:8].float() / 255  # not the uint8 images the shifts need
    with pytest.raises(EdgepruneError, match="uint8"):
        evaluate_shifted(model, (normalised, digits32.test.labels[:8]))


def test_cli_evaluate_shifts_json_and_table(trained_digits_checkpoint, capsys):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(trained_digits_checkpoint), "--shift", "gaussian_noise", "--shift", "jpeg",
              "--severities", "0,3", "--threads", "1", "--json"])
    assert done.value.code in (0, None)
    payload = json.loads(capsys.readouterr().out)
    robustness = payload["robustness"]
    assert payload["threads"] == 1 and payload["device_label"].startswith("cpu-")
    assert robustness["severities"] == [0, 3]
    assert [(r["shift"], r["severity"]) for r in robustness["rows"]] == [
        ("gaussian_noise", 0), ("gaussian_noise", 3), ("jpeg", 0), ("jpeg", 3)]
    assert robustness["rows"][0]["parameter"] is None and robustness["rows"][1]["parameter"] == 0.2
    assert robustness["clean_accuracy"] == payload["accuracy"] == robustness["rows"][0]["accuracy"]
    assert set(robustness["mean_accuracy_by_shift"]) == {"gaussian_noise", "jpeg"}
    assert 0 < robustness["mean_relative_drop"] < 1

    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(trained_digits_checkpoint), "--shifts", "--shift", "contrast", "--threads", "1"])
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert "contrast" in out and "severity 3" in out and "1 thread(s)" in out and "cpu-" in out


@pytest.mark.parametrize("args, message", [
    (["--shifts", "--shift", "fog"], "unknown shift 'fog'"),
    (["--severities", "5"], "severity must be an integer from 0"),
])
def test_cli_bad_shift_is_an_error_exit_2(trained_digits_checkpoint, capsys, args, message):
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(trained_digits_checkpoint), *args])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("line, message", [
    ('robustness = "yes"', "measure.robustness: robustness must be true, false or"),
    ('robustness_shifts = ["fog"]', "measure.robustness_shifts: unknown shift 'fog'"),
    ("robustness_severities = [1, 7]", "measure.robustness_severities: severity must be"),
])
def test_study_config_checks_the_robustness_keys(line, message):
    from pathlib import Path

    from edgeprune.errors import EdgepruneError
    from edgeprune.study import parse_config

    text = (Path(__file__).resolve().parents[1] / "configs" / "digits-quick.toml").read_text()
    with pytest.raises(EdgepruneError, match=message) as caught:
        parse_config(text.replace("[measure]", f"[measure]\n{line}"), path="quick.toml")
    assert "line " in str(caught.value)


def test_study_keys_change_only_with_non_default_robustness_settings():
    from pathlib import Path

    from edgeprune.study import parse_config
    from edgeprune.study.plan import plan_study

    text = (Path(__file__).resolve().parents[1] / "configs" / "digits-quick.toml").read_text()
    keys = lambda extra: [e.key for e in plan_study(  # noqa: E731
        parse_config(text.replace("[measure]", f"[measure]\n{extra}")), "fingerprint")]
    default = keys("")
    assert keys('robustness = "auto"\nrobustness_severities = [3, 2, 1]') == default  # studies planned before keep their keys
    assert keys("robustness = false") != default and keys('robustness_shifts = "jpeg"') != default
