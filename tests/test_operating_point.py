"""The operating point: a threshold on P(OK) chosen on validation images for a defect-recall
target, stored in the artifact, applied by bench and the station."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.runtime import Classifier, softmax
from edgeprune.runtime.operating_point import (
    OperatingPoint, curves, decision_figures, ok_probability, parse_target,
    threshold_for_recall,
)

OK = ("0",)  # digits: "0" plays the good part, every other digit a defect


def test_the_threshold_is_the_lowest_that_reaches_the_recall():
    rng = np.random.default_rng(0)
    p_ok = rng.random(500)
    is_defect = rng.random(500) < 0.3
    for recall in (0.5, 0.9, 0.98, 1.0):
        t = threshold_for_recall(p_ok, is_defect, recall)
        reached = decision_figures(p_ok, is_defect, t)
        assert reached.defect_recall >= recall
        # the defect score the threshold had to pass: one step lower misses the target
        kth = np.sort(p_ok[is_defect])[int(np.ceil(recall * is_defect.sum())) - 1]
        assert decision_figures(p_ok, is_defect, kth).defect_recall < recall
        assert kth < t  # halfway to the next score, not at the boundary image


def test_figures_count_images():
    figures = decision_figures(np.array([0.1, 0.9, 0.2, 0.8]), np.array([True, True, False, False]), 0.5)
    assert (figures.defects, figures.defects_caught, figures.oks, figures.false_rejects) == (2, 1, 2, 1)
    assert figures.defect_recall == 0.5 and figures.false_reject_rate == 0.5


@pytest.mark.parametrize("text", ["recall=0.9", "defect_recall=1.5", "defect_recall=0", "ok_threshold=-0.1",
                                  "defect_recall=abc", "defect_recall=nan"])
def test_bad_targets_are_refused(text):
    with pytest.raises(EdgepruneError, match="operating point"):
        parse_target(text)


def test_ok_probability_sums_the_ok_classes():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert ok_probability(probs, ["a", "b", "c"], ["a", "b"]) == pytest.approx([0.8, 0.2])
    with pytest.raises(EdgepruneError, match="cover every class"):
        ok_probability(probs, ["a", "b", "c"], ["a", "b", "c"])


def test_curves_are_those_of_scikit_learn():
    p_ok = np.array([0.9, 0.8, 0.3, 0.1])
    c = curves(p_ok, np.array([False, False, True, True]))
    assert c["roc_auc"] == 1.0 and c["tpr"][-1] == 1.0


@pytest.fixture(scope="module")
def exported(trained_digits_checkpoint, digits32, tmp_path_factory):
    from edgeprune.workflows import export_checkpoint

    out = tmp_path_factory.mktemp("op") / "digits.onnx"
    result = export_checkpoint(trained_digits_checkpoint, out, "onnx", data=digits32, max_verify_images=100,
                               operating_point="defect_recall=0.95", ok_classes=OK)
    return out, result


def _scores(clf, split):
    p_ok = ok_probability(softmax(clf.predict_uint8(split.images.numpy())), clf.class_names, OK)
    return p_ok, split.labels.numpy() != clf.class_names.index("0")


@pytest.mark.slow
def test_export_stores_the_point_chosen_on_validation_and_reports_test(exported, digits32):
    path, result = exported
    clf = Classifier(path)
    point = clf.metadata.operating_point
    assert isinstance(point, OperatingPoint) and point.ok_classes == OK and point.target == "defect_recall=0.95"
    val = decision_figures(*_scores(clf, digits32.val), point.ok_threshold)
    assert val.defect_recall >= 0.95 and point.val_defect_recall == val.defect_recall
    assert point.ok_threshold == pytest.approx(threshold_for_recall(*_scores(clf, digits32.val), 0.95))
    test = decision_figures(*_scores(clf, digits32.test), point.ok_threshold)
    assert result.info["operating_point"]["test"] == test.to_dict()
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["operating_point"]["ok_threshold"] == point.ok_threshold


@pytest.mark.slow
def test_the_python_api_chooses_the_same_point(exported, trained_digits_checkpoint, digits32, tmp_path):
    import edgeprune as ep

    path, _ = exported
    out = tmp_path / "api.onnx"
    ep.export_model(ep.load_model(trained_digits_checkpoint), out, data=digits32,
                    operating_point="defect_recall=0.95", ok_classes=list(OK))
    assert Classifier(out).metadata.operating_point == Classifier(path).metadata.operating_point


def test_bench_applies_the_artifacts_point(exported, digits32):
    from edgeprune.runtime.bench import figures_at_operating_point, onnx_pending

    path, result = exported
    pending = onnx_pending(path, images=digits32.test.images.numpy(), labels=digits32.test.labels.numpy(),
                           memory=False)
    test = result.info["operating_point"]["test"]
    assert pending.row["defect_recall"] == test["defect_recall"]
    assert pending.row["false_reject_rate"] == test["false_reject_rate"]
    clf = Classifier(path)
    plain = clf.metadata
    plain.raw.pop("edgeprune.operating_point")
    assert figures_at_operating_point(plain, clf.predict_uint8(digits32.test.images[:4].numpy()),
                                      digits32.test.labels[:4].numpy()) is None


def test_the_station_decides_by_the_threshold(exported, digits32):
    from edgeprune.station.decision import Decider, LoadedModel

    path, _ = exported
    model = LoadedModel(path)
    decider = Decider(model, OK, review_below=0.0)
    threshold = model.classifier.metadata.operating_point.ok_threshold
    p_ok, _ = _scores(model.classifier, digits32.test)
    images = digits32.test.images.numpy()
    for i in range(40):
        verdict = decider.decide(images[i])
        assert verdict.decision == ("DEFECT" if p_ok[i] < threshold else "OK")
        assert (verdict.predicted_class == "0") == (verdict.decision == "OK")
    with pytest.raises(EdgepruneError, match="operating point"):
        Decider(model, ("1",), review_below=0.0)


@pytest.mark.parametrize("extra, message", [
    (["--operating-point", "defect_recall=0.98"], "--ok-class"),
    (["--operating-point", "defect_recall=2", "--ok-class", "0"], "defect_recall must be in"),
    (["--ok-class", "0"], "--ok-class goes with --operating-point"),
    (["--operating-point", "defect_recall=0.9", "--ok-class", "0", "--format", "sparse"], "sparse"),
])
def test_export_refuses_bad_operating_point_options(trained_digits_checkpoint, tmp_path, capsys, extra, message):
    from edgeprune.cli import main

    args = ["export", trained_digits_checkpoint, "--data", "digits", "--out", tmp_path / "m.onnx", *extra]
    if "--format" not in extra:
        args += ["--format", "onnx"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and message in err, err
    assert not list(tmp_path.iterdir())  # nothing written
