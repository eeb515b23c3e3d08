"""The recommendation rule on a hand-made results table: the right row, its runners-up, and a
plain "none qualifies" when no model meets the rule."""

from __future__ import annotations

import pandas as pd
import pytest

from edgeprune.errors import EdgepruneError


def _table() -> pd.DataFrame:
    rows = [  # name, method, accuracy, balanced, recall of "crack", ORT b1 ms, b64 ms, ONNX bytes
        ("baseline", "baseline", 0.900, 0.85, 0.80, 1.00, 0.50, 9_000_000),
        ("l1-50", "l1", 0.895, 0.84, 0.78, 1.00, 0.50, 9_000_000),
        ("taylor-50", "taylor-channel", 0.893, 0.80, 0.60, 0.55, 0.30, 4_500_000),
        ("taylor-70", "taylor-channel", 0.880, 0.83, 0.79, 0.40, 0.20, 2_700_000),
        ("random-90", "random", 0.300, 0.25, 0.10, 1.00, 0.50, 9_000_000),
        ("l2-90", "l2-channel", 0.850, 0.82, 0.75, 0.20, 0.10, 900_000),
    ]
    return pd.DataFrame([{"name": n, "method": m, "accuracy": a, "balanced_accuracy": b, "recall:crack": r,
                          "onnxruntime_b1_ms": l1, "onnxruntime_b64_ms": l64, "onnx_bytes": size}
                         for n, m, a, b, r, l1, l64, size in rows])


def test_fastest_within_the_drop():
    from edgeprune.study import RecommendRule, recommend

    choice = recommend(_table(), RecommendRule(max_drop=1.0))
    assert choice.chosen["name"] == "taylor-50"  # taylor-70 is 2 points down, l2-90 5
    assert [r["name"] for r in choice.runners_up] == ["baseline", "l1-50"]  # same speed: smaller first
    assert choice.qualifying == 3 and "Recommended: taylor-50" in choice.text
    assert recommend(_table(), RecommendRule(max_drop=2.0)).chosen["name"] == "taylor-70"
    assert recommend(_table(), RecommendRule(max_drop=5.0)).chosen["name"] == "l2-90"


def test_metric_budgets_and_preference():
    from edgeprune.study import RecommendRule, recommend

    # balanced accuracy: taylor-50 loses 5 points there, taylor-70 only 2
    assert recommend(_table(), RecommendRule(max_drop=2.0, metric="balanced_accuracy")).chosen["name"] == "taylor-70"
    # the recall of one class: taylor-50 misses cracks
    crack = recommend(_table(), RecommendRule(max_drop=1.5, metric="recall:crack"))
    assert crack.chosen["name"] == "taylor-70"
    # latency at batch 64 and file size budgets
    assert recommend(_table(), RecommendRule(max_drop=2.0, max_latency_ms=0.25, batch=64)).chosen["name"] == "taylor-70"
    small = recommend(_table(), RecommendRule(max_drop=1.0, max_size_mb=5.0, prefer="smallest"))
    assert small.chosen["name"] == "taylor-50" and small.qualifying == 1 and small.runners_up == []
    # the baseline itself wins when no pruned model is faster within the rule
    assert recommend(_table(), RecommendRule(max_drop=0.0)).chosen["name"] == "baseline"


def test_none_qualifies():
    from edgeprune.study import RecommendRule, recommend

    choice = recommend(_table(), RecommendRule(max_drop=1.0, max_latency_ms=0.3))
    assert choice.chosen is None and choice.runners_up == [] and choice.qualifying == 0
    assert choice.text.startswith("None qualifies")
    assert "0.3 ms" in choice.text  # says which budget failed


def test_bad_rules():
    from edgeprune.study import RecommendRule, recommend

    with pytest.raises(EdgepruneError, match="classes: crack"):
        recommend(_table(), RecommendRule(metric="recall:blowhole"))
    with pytest.raises(EdgepruneError, match="no baseline"):
        recommend(_table().iloc[1:], RecommendRule())
    with pytest.raises(EdgepruneError, match="prefer"):
        RecommendRule(prefer="cheapest")


def test_api_names_stay_functions_after_their_modules_load():
    import importlib

    for module in ("report", "results", "recommend", "runner"):
        importlib.import_module(f"edgeprune.study.{module}")
    import edgeprune.study as study

    assert callable(study.results) and callable(study.recommend)
