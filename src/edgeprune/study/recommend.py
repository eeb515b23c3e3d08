"""Choose the model to deploy from a results table, by a rule: at most `max_drop` points below
the baseline in the rule's metric (accuracy, balanced accuracy or one class's recall), within
the optional latency budget (ONNX Runtime, ms per image at the rule's batch size, as measured on
the study's device) and file-size budget (the ONNX file); then the fastest (or the smallest).
The baseline itself is a candidate: when no pruned model beats it under the rule, it is the
answer. Re-applying another rule reads the table only; nothing runs again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.study.config import RecommendRule

RUNNERS_UP = 3


@dataclass
class Recommendation:
    rule: RecommendRule
    baseline_metric: float
    chosen: dict[str, Any] | None
    runners_up: list[dict[str, Any]] = field(default_factory=list)
    qualifying: int = 0
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.__dict__, "baseline_metric": self.baseline_metric, "chosen": self.chosen,
                "runners_up": self.runners_up, "qualifying": self.qualifying, "text": self.text}


def metric_column(rule: RecommendRule) -> str:
    # "accuracy", "balanced_accuracy", "recall:<class>" or "false_reject@recall=R", as in results()
    return rule.metric


def lower_is_better(rule: RecommendRule) -> bool:
    """A false-reject rate is better low; every other metric high."""
    return rule.metric.startswith("false_reject@")


def recommend(table, rule: RecommendRule | None = None) -> Recommendation:
    """The rule applied to a results DataFrame (`edgeprune.study.results`)."""
    import math

    rule = rule or RecommendRule()
    column = metric_column(rule)
    if column not in table:
        if lower_is_better(rule):
            measured = [c for c in table.columns if c.startswith("false_reject@")]
            raise EdgepruneError(f"metric {rule.metric!r} is not in the results: set [measure] ok_classes and "
                                 f"recall_targets in the study config (measured: {', '.join(measured) or 'none'})")
        classes = [c.split(":", 1)[1] for c in table.columns if c.startswith("recall:")]
        raise EdgepruneError(f"metric {rule.metric!r} is not in the results; classes: {', '.join(classes)}")
    baselines = table[table["method"] == "baseline"]
    if baselines.empty:
        raise EdgepruneError("the results hold no baseline row: the accuracy drop has no reference")
    # Several architectures: the best baseline is the reference (a weaker network's pruned model
    # should not qualify by being close to its own weak baseline).
    sign = -1.0 if lower_is_better(rule) else 1.0
    base = sign * float((sign * baselines[column]).max())
    latency = f"onnxruntime_b{rule.batch}_ms"
    if rule.max_latency_ms is not None and latency not in table:
        raise EdgepruneError(f"no ONNX Runtime latency at batch {rule.batch} in the results")
    rows = []
    for _, row in table.iterrows():
        values = row.to_dict()
        drop = sign * (base - float(values[column])) * 100.0
        reasons = []
        if drop > rule.max_drop + 1e-9:
            reasons.append(f"{drop:.2f} points worse than the baseline")
        lat = values.get(latency)
        if rule.max_latency_ms is not None and (lat is None or math.isnan(lat) or lat > rule.max_latency_ms):
            reasons.append(f"{lat:.3f} ms > {rule.max_latency_ms:g} ms")
        if rule.max_size_mb is not None and values["onnx_bytes"] > rule.max_size_mb * 1e6:
            reasons.append(f"{values['onnx_bytes'] / 1e6:.2f} MB > {rule.max_size_mb:g} MB")
        rows.append({"name": values["name"], "metric": float(values[column]), "drop_points": drop,
                     "latency_ms": lat, "onnx_bytes": int(values["onnx_bytes"]),
                     "accuracy": float(values["accuracy"]), "qualifies": not reasons,
                     "why_not": "; ".join(reasons)})
    qualifying = [r for r in rows if r["qualifies"]]
    if rule.prefer == "fastest":
        qualifying.sort(key=lambda r: (r["latency_ms"], r["onnx_bytes"]))
    else:
        qualifying.sort(key=lambda r: (r["onnx_bytes"], r["latency_ms"]))
    chosen = qualifying[0] if qualifying else None
    result = Recommendation(rule, base, chosen, qualifying[1:1 + RUNNERS_UP], len(qualifying))
    result.text = _text(result, rows, latency)
    return result


def describe_rule(rule: RecommendRule) -> str:
    parts = [f"{rule.metric.replace('_', ' ')} at most {rule.max_drop:g} points worse than the baseline"]
    if rule.max_latency_ms is not None:
        parts.append(f"ONNX Runtime latency at batch {rule.batch} at most {rule.max_latency_ms:g} ms per image")
    if rule.max_size_mb is not None:
        parts.append(f"ONNX file at most {rule.max_size_mb:g} MB")
    return ", ".join(parts) + f"; the {rule.prefer} model wins"


def _versus(drop_points: float) -> str:
    if abs(drop_points) < 0.005:
        return "the same as"
    return f"{abs(drop_points):.2f} points {'worse than' if drop_points > 0 else 'better than'}"


def _text(rec: Recommendation, rows: list[dict], latency: str) -> str:
    rule = describe_rule(rec.rule)
    if rec.chosen is None:
        closest = min(rows, key=lambda r: r["drop_points"])
        return (f"None qualifies under the rule ({rule}). Closest: {closest['name']} "
                f"({closest['why_not']}).")
    c = rec.chosen
    text = (f"Recommended: {c['name']} — {rec.rule.metric.replace('_', ' ')} {c['metric']:.2%} "
            f"({_versus(c['drop_points'])} the baseline's {rec.baseline_metric:.2%}), "
            f"{c['latency_ms']:.3f} ms per image at batch {rec.rule.batch} (ONNX Runtime), ONNX file "
            f"{c['onnx_bytes'] / 1e6:.2f} MB. {rec.qualifying} of {len(rows)} model(s) meet the rule ({rule}).")
    if rec.runners_up:
        text += " Runners-up: " + ", ".join(
            f"{r['name']} ({r['latency_ms']:.3f} ms, {r['onnx_bytes'] / 1e6:.2f} MB, {r['metric']:.2%})"
            for r in rec.runners_up) + "."
    return text
