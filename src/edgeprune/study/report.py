"""The study report: matplotlib PNGs, `report.md` beside them and a self-contained `report.html`
(every PNG embedded as a data URI, so the one file can be mailed), in RUN_DIR/report/.

Plots (each drawn only when the study has what it shows):
 1-3 accuracy, latency (ONNX Runtime, batch 1 and 64) and nonzero parameters vs the fraction of
     the baseline's parameters removed, one line per method x schedule;
 4   accuracy vs batch-1 latency with the Pareto front marked;
 5   the first convolution's filters, baseline and each pruned model: |weight| per input
     channel as RGB, so a pruned weight is black; a removed filter leaves its place empty
     (a channel-pruned model's filters are placed where the baseline filter closest to each
     sits, by an optimal one-to-one assignment, since fine-tuning changes them);
 6   the fraction pruned per layer;
 7   validation accuracy after each step of iterative runs;
 8   accuracy vs fine-tune epochs, where the grid varies them;
 9   robustness: accuracy of each model under each image shift (brightness, darkness, contrast,
     Gaussian noise, blur, JPEG) over severity 0 (clean) to 3, one panel per shift, where the
     study measured it ([measure] robustness; edgeprune.metrics.robustness);
 10  k-fold spread, where folds > 1.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.study.store import StudyStore

REPORT_DIR = "report"
Log = Callable[[str], None]


@dataclass
class WrittenReport:
    folder: Path
    html: Path
    markdown: Path
    images: list[Path] = field(default_factory=list)
    recommendation: Any = None


def _series_label(row) -> str:
    return "baseline" if row["method"] == "baseline" else f"{row['method']} {row['schedule']}"


def _removed(table):
    """Fraction of its own baseline's parameters removed (zeros and removed channels alike): one
    sparsity axis for unstructured and structured models."""
    base = table[table["method"] == "baseline"].set_index("arch")["params"]
    return 1.0 - table["nonzero_params"] / table["arch"].map(base)


def _lines(ax, table, column: str) -> None:
    """One line per (architecture,) method and schedule, each starting at its baseline."""
    several = table["arch"].nunique() > 1
    for arch, per_arch in table.groupby("arch", sort=False):
        base = per_arch[per_arch["method"] == "baseline"]
        start = [float(base[column].iloc[0])] if not base.empty else []
        pruned = per_arch[per_arch["method"] != "baseline"]
        for (method, schedule), group in pruned.groupby(["method", "schedule"], sort=False):
            group = group.sort_values("removed")
            xs = [0.0] * len(start) + group["removed"].tolist()
            ax.plot(xs, start + group[column].tolist(), "-o",
                    label=f"{arch} {method} {schedule}" if several else f"{method} {schedule}")
        if start:
            ax.plot([0.0], start, "k*", markersize=12, label=f"baseline {arch}" if several else "baseline")


def _pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The models no other model beats on both latency (lower) and accuracy (higher)."""
    front, best = [], -1.0
    for lat, acc, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc, name))
            best = acc
    return front


def _save(fig, folder: Path, name: str, images: list[Path]) -> None:
    path = folder / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    images.append(path)


def write_report(run_dir: str | Path, *, overwrite: bool = False, log: Log | None = None) -> WrittenReport:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeprune.outputs import publish_files, staging_folder
    from edgeprune.study.config import RecommendRule
    from edgeprune.study.recommend import describe_rule, recommend
    from edgeprune.study.results import results

    say = log or (lambda _m: None)
    run_dir = Path(run_dir)
    target = run_dir / REPORT_DIR
    if (target / "report.html").exists() and not overwrite:
        raise EdgepruneError(f"{target / 'report.html'} exists: add --overwrite to replace the report")
    table = results(run_dir)
    per_fold = results(run_dir, per_fold=True)
    if table.empty or not (table["method"] == "baseline").any():
        raise EdgepruneError(f"{run_dir} holds no finished baseline yet: nothing to report")
    with StudyStore(run_dir) as store:
        rows = store.rows()
        name = store.value("name", run_dir.name)
        rule = RecommendRule(**(store.value("recommend") or {}))
    table = table.assign(removed=_removed(table))
    device = table["device"].dropna().iloc[0] if table["device"].notna().any() else "?"
    threads = int(table["threads"].dropna().iloc[0]) if table["threads"].notna().any() else None
    on = f"{device}, {threads} thread(s)"
    images: list[Path] = []
    captions: dict[str, str] = {}
    target.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(target / "x") as tmp:
        # 1-3: the earlier study's three plots
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        _lines(ax, table, "accuracy")
        ax.set(xlabel="fraction of the baseline's parameters removed", ylabel="test accuracy",
               title="Accuracy vs sparsity")
        ax.legend(fontsize=8)
        _save(fig, tmp, "accuracy_vs_sparsity.png", images)
        captions["accuracy_vs_sparsity.png"] = "Test accuracy vs the fraction of parameters removed."
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, batch in zip(axes, (1, 64)):
            _lines(ax, table, f"onnxruntime_b{batch}_ms")
            ax.set(xlabel="fraction of parameters removed", ylabel="ms per image",
                   title=f"ONNX Runtime latency, batch {batch}")
        axes[0].legend(fontsize=8)
        _save(fig, tmp, "latency_vs_sparsity.png", images)
        captions["latency_vs_sparsity.png"] = f"Latency of the FP32 ONNX file (median), on {on}."
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        _lines(ax, table, "nonzero_params")
        ax.set(xlabel="fraction of parameters removed", ylabel="nonzero parameters",
               title="Nonzero parameters vs sparsity")
        ax.legend(fontsize=8)
        _save(fig, tmp, "params_vs_sparsity.png", images)
        captions["params_vs_sparsity.png"] = "Nonzero parameters counted on each saved model."
        # 4: accuracy vs latency, Pareto front
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        points = [(r["onnxruntime_b1_ms"], r["accuracy"], r["name"]) for _, r in table.iterrows()]
        for lat, acc, label in points:
            ax.plot(lat, acc, "o", color="tab:blue")
            ax.annotate(label, (lat, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = _pareto(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], "r--", label="Pareto front")
        ax.set(xlabel="ONNX Runtime ms per image, batch 1", ylabel="test accuracy",
               title="Accuracy vs latency")
        ax.legend(fontsize=8)
        _save(fig, tmp, "accuracy_vs_latency.png", images)
        captions["accuracy_vs_latency.png"] = (f"Pareto front: {', '.join(p[2] for p in front)} (on {on}).")
        # 5: first convolution's filters
        path = _filters_plot(plt, run_dir, table, rows, tmp, images)
        if path:
            captions[path] = ("First convolution's filters, |weight| of each input channel as RGB: "
                              "pruned weights are black, removed filters leave an empty place.")
        # 6: fraction pruned per layer
        pruned_rows = [r for r in rows if r["kind"] == "prune" and r["fold"] == 0 and r["result"].get("layers")]
        if pruned_rows:
            fig, ax = plt.subplots(figsize=(9, 4.2))
            for r in pruned_rows:
                layers = r["result"]["layers"]
                fractions = [1 - (layer["params_after"] - layer["zeros"]) / layer["params_before"]
                             for layer in layers]
                ax.plot(range(len(fractions)), fractions, ".-", label=r["name"])
            ax.set(xlabel="layer (Conv2d / Linear, in order)", ylabel="fraction of weights pruned",
                   title="Pruned per layer", ylim=(-0.02, 1.02))
            ax.legend(fontsize=7)
            _save(fig, tmp, "pruned_per_layer.png", images)
            captions["pruned_per_layer.png"] = "Fraction of each layer's weights zeroed or removed."
        # 7: iterative runs, accuracy after each step
        iterative = [r for r in pruned_rows if len(r["result"].get("steps") or []) > 1]
        if iterative:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for r in iterative:
                steps = r["result"]["steps"]
                ax.plot([s["step"] for s in steps], [s["val_accuracy"] for s in steps], "o-",
                        label=f"{r['name']} (fine-tuned)")
                ax.plot([s["step"] for s in steps], [s["accuracy_after_prune"] for s in steps], "x:",
                        label=f"{r['name']} (before fine-tuning)")
            ax.set(xlabel="step", ylabel="validation accuracy", title="Iterative pruning, step by step")
            ax.legend(fontsize=7)
            _save(fig, tmp, "accuracy_per_step.png", images)
            captions["accuracy_per_step.png"] = "Validation accuracy after each pruning step."
        # 8: accuracy vs fine-tune epochs where the grid varies them
        pruned = table[table["method"] != "baseline"]
        varied = [(key, g) for key, g in pruned.groupby(["method", "schedule", "target"], sort=False)
                  if g["finetune_epochs"].nunique() > 1]
        if varied:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for (method, schedule, target_value), g in varied:
                g = g.sort_values("finetune_epochs")
                ax.plot(g["finetune_epochs"], g["accuracy"], "o-", label=f"{method} {schedule} {target_value:g}")
            ax.set(xlabel="fine-tune epochs per step", ylabel="test accuracy", title="Accuracy vs fine-tuning")
            ax.legend(fontsize=7)
            _save(fig, tmp, "accuracy_vs_finetune.png", images)
            captions["accuracy_vs_finetune.png"] = "Test accuracy by fine-tuning budget."
        # 9: robustness, accuracy under each shift over severity
        robustness_note = _robustness_plot(plt, table, rows, tmp, images, captions, on)
        _roc_plot(plt, table, rows, tmp, images, captions)
        # 10: k-fold spread
        if table["folds"].max() > 1:
            fig, ax = plt.subplots(figsize=(8, 4.2))
            names = table["name"].tolist()
            ax.boxplot([per_fold[per_fold["name"] == n]["accuracy"].tolist() for n in names])
            ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=7)
            ax.set(ylabel="test accuracy", title=f"Spread over {int(table['folds'].max())} folds")
            _save(fig, tmp, "fold_spread.png", images)
            captions["fold_spread.png"] = "Test accuracy of each fold."
        plt.close("all")

        choice = recommend(table.drop(columns="removed"), rule)
        md_text = _markdown(name, table, choice, describe_rule(rule), images, captions, on, robustness_note)
        (tmp / "report.md").write_text(md_text, encoding="utf-8")
        (tmp / "report.html").write_text(_html(name, table, choice, images, captions, on, robustness_note),
                                         encoding="utf-8")
        pairs = [(tmp / p.name, target / p.name) for p in images]
        pairs += [(tmp / "report.md", target / "report.md"), (tmp / "report.html", target / "report.html")]
        target.mkdir(exist_ok=True)
        publish_files(pairs, overwrite=True, what="report file")  # report.html checked above
    say(f"report: {len(images)} plots in {target}")
    return WrittenReport(target, target / "report.html", target / "report.md",
                         [target / p.name for p in images], choice)


def _robustness_plot(plt, table, rows, tmp: Path, images: list[Path], captions: dict[str, str],
                     on: str) -> str | None:
    """Plot 9: one panel per shift, accuracy over severity (0 = clean) per model, the mean over
    folds. Returns a note for the report when models (or all of them) have no robustness figures."""
    from edgeprune.metrics.robustness import SHIFTS

    per_model: dict[str, dict[tuple[str, int], list[float]]] = {}
    for r in rows:
        robustness = r["result"].get("robustness")
        if not robustness:
            continue
        points = per_model.setdefault(r["name"], {})
        for row in robustness["rows"]:
            points.setdefault((row["shift"], row["severity"]), []).append(row["accuracy"])
        for shift in {row["shift"] for row in robustness["rows"]}:
            points.setdefault((shift, 0), []).append(robustness["clean_accuracy"])
    names = [n for n in table["name"] if n in per_model]  # the table's order: baseline first
    missing = [n for n in table["name"] if n not in per_model]
    if not names:
        return ("Robustness under shifted images was not measured in this study ([measure] robustness = "
                "false, or \"auto\" with more than 2000 test images, or the models were measured before "
                "edgeprune measured it).")
    shifts = list(dict.fromkeys(s for n in names for s, _ in per_model[n]))
    columns = min(3, len(shifts))
    rows_count = -(-len(shifts) // columns)
    fig, axes = plt.subplots(rows_count, columns, figsize=(4.2 * columns, 3.3 * rows_count + 0.6),
                             squeeze=False, sharey=True)
    baselines = set(table.loc[table["method"] == "baseline", "name"])
    for ax, shift in zip(axes.flat, shifts):
        for n in names:
            points = sorted((sev, sum(v) / len(v)) for (s, sev), v in per_model[n].items() if s == shift)
            style = dict(color="black", linewidth=2.2, marker="*", markersize=9) if n in baselines else \
                dict(marker="o", markersize=4)
            ax.plot([p[0] for p in points], [p[1] for p in points], label=n, **style)
        known = SHIFTS.get(shift)
        levels = known.describe_levels() if known else ""
        ax.set_title(f"{shift}\n({levels})" if levels else shift, fontsize=8)
        ax.set_xlabel("severity (0 = clean)", fontsize=8)
        ax.set_xticks(range(0, 1 + max(sev for n in names for (s, sev) in per_model[n] if s == shift)))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(shifts):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Accuracy under shifted images", fontsize=10)
    _save(fig, tmp, "robustness.png", images)
    drops = table.set_index("name")["shift_relative_drop"] if "shift_relative_drop" in table else None
    worst = ""
    if drops is not None and drops.notna().any():
        worst = f" Largest mean relative drop: {drops.idxmax()} ({drops.max():.1%})."
    captions["robustness.png"] = (
        "Test accuracy of each model with its test images shifted before normalisation (seeded, "
        f"the same images for every model), mean over folds; PyTorch on the CPU of {on}.{worst}")
    if missing:
        return f"No robustness figures for: {', '.join(missing)} (measured without them)."
    return None


def _roc_plot(plt, table, rows, tmp: Path, images: list[Path], captions: dict[str, str]) -> None:
    """Each model's ROC on its test split (defect = positive; fold 0 with k folds), where the study
    measured operating points ([measure] ok_classes), with each one's val-chosen points marked."""
    curves = {r["name"]: r["result"] for r in rows if r["result"].get("roc") and r.get("fold", 0) == 0}
    names = [n for n in table["name"] if n in curves]
    if not names:
        return
    baselines = set(table.loc[table["method"] == "baseline", "name"])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for n in names:
        roc = curves[n]["roc"]
        style = dict(color="black", linewidth=2.2) if n in baselines else dict(linewidth=1.2)
        line, = ax.plot(roc["fpr"], roc["tpr"], label=f"{n} (AUC {roc['auc']:.3f})", **style)
        for point in (curves[n].get("operating_points") or {}).values():
            if point["false_reject"] is not None and point["defect_recall"] is not None:
                ax.plot(point["false_reject"], point["defect_recall"], "o", color=line.get_color())
    ax.set(xlabel="false-reject rate (good parts rejected)", ylabel="defect recall",
           title="ROC on the test split (dots: the operating points chosen on validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, tmp, "roc.png", images)
    captions["roc.png"] = ("Defect recall against false rejects as the threshold on P(OK) moves, each "
                           "model's exported file on its test split (fold 0); the dots are the thresholds "
                           "chosen on the validation split for the recall targets, placed at what they "
                           "reach on test.")


def _first_conv(checkpoint: Path):
    import torch

    from edgeprune.models import load_checkpoint

    if not (checkpoint / "model.json").is_file():  # removed by hand since: drawn without it
        return None
    model, _ = load_checkpoint(checkpoint)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight.detach().numpy()
    return None


def _filters_plot(plt, run_dir: Path, table, rows, tmp: Path, images: list[Path]) -> str | None:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from edgeprune.study.execute import CHECKPOINT

    shown = [r for r in rows if r["fold"] == 0]
    shown.sort(key=lambda r: r["kind"] != "baseline")
    if shown:  # several architectures: the first one's models (their first convolutions compare)
        shown = [r for r in shown if r["config"].get("arch") == shown[0]["config"].get("arch")]
    weights = {r["name"]: _first_conv(run_dir / r["folder"] / CHECKPOINT) for r in shown}
    shown = [r for r in shown if weights[r["name"]] is not None]
    base = next((weights[r["name"]] for r in shown if r["kind"] == "baseline"), None)
    if base is None:
        return None
    n = base.shape[0]
    scale = float(np.percentile(np.abs(base), 99)) or 1.0
    fig, axes = plt.subplots(len(shown), 1, figsize=(min(12, 0.4 * n + 1.5), 0.75 * len(shown) + 0.6),
                             squeeze=False)
    for ax, r in zip(axes[:, 0], shown):
        w = weights[r["name"]]
        placed: list[Any] = [None] * n
        if w.shape[0] == n:
            placed = list(w)
        else:  # removed filters: put each kept one where its closest baseline filter was
            cost = ((w.reshape(len(w), 1, -1) - base.reshape(1, n, -1)) ** 2).sum(-1)
            kept, where = linear_sum_assignment(cost)
            for i, j in zip(kept, where):
                placed[j] = w[i]
        k = base.shape[-1]
        strip = np.ones((k, n * (k + 1), 3))  # white: a removed filter's empty place
        for j, f in enumerate(placed):
            if f is not None:
                rgb = np.abs(f[:3]).transpose(1, 2, 0) / scale if f.shape[0] >= 3 else np.repeat(
                    np.abs(f[:1]).transpose(1, 2, 0) / scale, 3, axis=2)
                strip[:, j * (k + 1): j * (k + 1) + k] = np.clip(rgb, 0, 1)
        ax.imshow(strip, interpolation="nearest")
        kept_count = sum(f is not None for f in placed)
        zeros = float((w == 0).mean())
        ax.set_title(f"{r['name']}: {kept_count}/{n} filters, {zeros:.0%} of weights zero", fontsize=8, loc="left")
        ax.axis("off")
    _save(fig, tmp, "first_conv_filters.png", images)
    return "first_conv_filters.png"


TABLE_COLUMNS = [("name", "model", None), ("achieved", "achieved", "{:.3f}"),
                 ("nonzero_params", "nonzero params", "{:,.0f}"), ("macs", "MACs", "{:,.0f}"),
                 ("onnx_bytes", "ONNX MB", "mb"), ("gzip_bytes", "gzip MB", "mb"),
                 ("accuracy", "test acc", "{:.2%}"), ("accuracy_std", "± (folds)", "{:.2%}"),
                 ("balanced_accuracy", "balanced acc", "{:.2%}"),
                 ("onnxruntime_b1_ms", "ORT b1 ms", "{:.3f}"), ("onnxruntime_b64_ms", "ORT b64 ms", "{:.3f}"),
                 ("openvino_b1_ms", "OV b1 ms", "{:.3f}"), ("openvino_b64_ms", "OV b64 ms", "{:.3f}"),
                 ("shift_relative_drop", "drop under shifts", "{:.1%}"), ("wall_s", "wall s", "{:.0f}")]


def _cells(table) -> tuple[list[str], list[list[str]]]:
    import math

    columns = [(c, h, f) for c, h, f in TABLE_COLUMNS if c in table and table[c].notna().any()
               and not (c == "accuracy_std" and table["folds"].max() <= 1)]
    body = []
    for _, row in table.iterrows():
        cells = []
        for column, _, form in columns:
            value = row[column]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
            elif form == "mb":
                cells.append(f"{value / 1e6:.2f}")
            elif form:
                cells.append(form.format(value))
            else:
                cells.append(str(value))
        body.append(cells)
    return [h for _, h, _ in columns], body


def _markdown(name, table, choice, rule_text, images, captions, on, robustness_note=None) -> str:
    headers, body = _cells(table)
    lines = [f"# Study {name}", "", f"Measured on {on}; latencies are ms per image of the FP32 ONNX file.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += ["", "## Recommendation", "", choice.text, ""]
    for path in images:
        lines += [f"![{path.stem}]({path.name})", "", captions.get(path.name, ""), ""]
    if robustness_note:
        lines += [robustness_note, ""]
    return "\n".join(lines)


def _html(name, table, choice, images, captions, on, robustness_note=None) -> str:
    headers, body = _cells(table)
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body)
    figures = []
    for path in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(f'<figure><img alt="{esc(path.stem)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(captions.get(path.name, ''))}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Study {esc(name)}</title>"
            f"<style>{style}</style></head><body><h1>Study {esc(name)}</h1>"
            f"<p>Measured on {esc(on)}; latencies are ms per image of the FP32 ONNX file.</p>"
            f"<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in headers)}</tr></thead>"
            f"<tbody>{rows}</tbody></table><h2>Recommendation</h2><p id='recommendation'>{esc(choice.text)}</p>"
            f"{''.join(figures)}{f'<p>{esc(robustness_note)}</p>' if robustness_note else ''}"
            "</body></html>\n")
