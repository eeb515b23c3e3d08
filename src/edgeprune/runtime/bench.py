"""Bench ONNX artifacts on ONNX Runtime and OpenVINO, and compare two devices' results.

A bench result is one flat row per (artifact, runtime) with the columns in `COLUMNS`, so a CSV
written on a Raspberry Pi and one written on a server line up in `compare`. Nothing here imports
torch: `edgeprune bench model.onnx` measures the model on the edge device itself.

Every row of one bench call is timed in the same round-robin (`measure.time_round_robin`): all
artifacts on all runtimes interleaved, on the same pinned cores, so no row is favoured by its
place in the run. A row is built in two steps: `onnx_pending` (load, accuracy, memory, sizes)
for each (artifact, runtime), then `finish_rows` times them all together.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file, check_output_file
from edgeprune.validation import check_option
from edgeprune.runtime.measure import (
    cpu_device_label,
    cpu_isa,
    file_size,
    find_rapl_zones,
    gzip_size,
    peak_memory_onnx,
    time_round_robin,
    timing_preset,
)

COLUMNS = [
    "artifact",  # file or folder name: the key `compare` matches rows on
    "format",  # checkpoint | onnx | onnx-int8 | sparse
    "runtime",  # torch-eager | onnxruntime | openvino
    "device",
    "isa",  # the CPU's speed-relevant extensions, e.g. avx2+avx512f+avx512_vnni (measure.cpu_isa)
    "software",  # the runtime's version: ort1.32.0, openvino2026.4.1, torch2.x
    "threads",
    "accuracy",
    "n_images",
    # At the artifact's operating point (export --operating-point), on the same images: the
    # defects rejected and the good parts rejected (None without an operating point).
    "defect_recall",
    "false_reject_rate",
    "ok_threshold",
    "file_bytes",
    "gzip_bytes",
    "b1_median_ms",  # latencies are per image: batch time / batch size
    "b1_p90_ms",
    "b64_median_ms",
    "b64_p90_ms",
    "throughput_ips",  # images per second at batch 64 (from the median)
    "peak_memory_bytes",  # see measure.PEAK_MEMORY_NOTE (fresh process, batch 1)
    "macs",  # per image
    "gmacs_b1",  # achieved GMAC/s at batch 1 (macs / median latency)
    "gmacs_b64",
    "energy_mj_per_image",
    "path",
    "notes",
]
BATCH_LARGE = 64


@dataclass
class BenchRow:
    """One bench result (an artifact on a runtime), typed; `to_dict()` gives the CSV row and
    `rows_frame(rows)` a pandas DataFrame. Columns as in COLUMNS."""

    artifact: str
    format: str
    runtime: str
    device: str
    isa: str | None = None
    software: str | None = None
    threads: int | None = None
    accuracy: float | None = None
    n_images: int | None = None
    defect_recall: float | None = None
    false_reject_rate: float | None = None
    ok_threshold: float | None = None
    file_bytes: int | None = None
    gzip_bytes: int | None = None
    b1_median_ms: float | None = None
    b1_p90_ms: float | None = None
    b64_median_ms: float | None = None
    b64_p90_ms: float | None = None
    throughput_ips: float | None = None
    peak_memory_bytes: int | None = None
    macs: int | None = None
    gmacs_b1: float | None = None
    gmacs_b64: float | None = None
    energy_mj_per_image: float | None = None
    path: str | None = None
    notes: str | None = None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> BenchRow:
        return cls(**{k: row.get(k) for k in COLUMNS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_frame(rows: Sequence[BenchRow | dict[str, Any]]):
    """A pandas DataFrame of bench rows (pandas comes with the full install, not the runtime)."""
    import pandas as pd

    return pd.DataFrame([r.to_dict() if isinstance(r, BenchRow) else r for r in rows], columns=COLUMNS)


def achieved_gmacs(macs: int | None, ms_per_image: float | None) -> float | None:
    """The physical reference: multiply-accumulates done per second, in billions."""
    if not macs or not ms_per_image:
        return None
    return macs / (ms_per_image / 1000.0) / 1e9


def time_candidates(
    candidates: Mapping[str, tuple[Callable[[np.ndarray], Any], int]],
    *,
    threads: int | None = 1,
    budget_s: float = 2.0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Latency of each `run` (name -> (run, input size)) at batch 1 and 64 on fixed random
    inputs, all candidates in one round-robin per batch size (`time_round_robin`, pinned to
    `threads` cores), plus energy over each candidate's batch-64 calls. `budget_s`: seconds per
    candidate and batch size."""
    rng = np.random.default_rng(seed)
    sizes = sorted({size for _, size in candidates.values()})
    x1 = {s: rng.standard_normal((1, 3, s, s), dtype=np.float32) for s in sizes}
    x64 = {s: rng.standard_normal((BATCH_LARGE, 3, s, s), dtype=np.float32) for s in sizes}
    t1 = time_round_robin({n: (lambda r=r, s=s: r(x1[s])) for n, (r, s) in candidates.items()},
                          timing_preset("bench-b1").with_budget(budget_s), cpus=threads)
    t64 = time_round_robin({n: (lambda r=r, s=s: r(x64[s])) for n, (r, s) in candidates.items()},
                           timing_preset("bench-b64").with_budget(budget_s), per_call_items=BATCH_LARGE,
                           cpus=threads, energy=True)
    energy_note = find_rapl_zones()[1]
    out = {}
    for name in candidates:
        a, b = t1[name], t64[name]
        out[name] = {
            "b1_median_ms": a.median_ms,
            "b1_p90_ms": a.p90_ms,
            "b64_median_ms": b.median_ms,
            "b64_p90_ms": b.p90_ms,
            "throughput_ips": 1000.0 / b.median_ms,
            "energy_mj_per_image": (
                b.energy_j * 1000.0 / (b.runs * BATCH_LARGE) if b.energy_j is not None else None
            ),
            "runs": {"b1": a.runs, "b64": b.runs},
            "cpus": list(a.cpus) if a.cpus is not None else None,
            "energy_note": energy_note,
        }
    return out


def time_batches(run: Callable[[np.ndarray], Any], input_size: int, *, budget_s: float = 2.0,
                 seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """`time_candidates` for one candidate."""
    return time_candidates({"run": (run, input_size)}, threads=threads, budget_s=budget_s, seed=seed)["run"]


def accuracy_of(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def figures_at_operating_point(meta, logits: np.ndarray, labels: np.ndarray):
    """DecisionFigures of an artifact's own operating point on labelled images (None without one)."""
    from edgeprune.runtime.classifier import softmax
    from edgeprune.runtime.operating_point import decision_figures, ok_probability

    point = meta.operating_point
    if point is None:
        return None
    ok_index = [meta.class_names.index(c) for c in point.ok_classes]
    p_ok = ok_probability(softmax(logits), meta.class_names, point.ok_classes)
    return decision_figures(p_ok, ~np.isin(labels, ok_index), point.ok_threshold)


@dataclass
class Pending:
    """A bench row measured except for its latency: `finish_rows` times every pending row of a
    bench call in one round-robin and fills in the timing columns."""

    row: dict[str, Any]  # every column but the timing ones
    run: Callable[[np.ndarray], Any]  # float32 NCHW batch -> logits
    input_size: int
    notes: list[str] = field(default_factory=list)


TIMING_COLUMNS = ("b1_median_ms", "b1_p90_ms", "b64_median_ms", "b64_p90_ms", "throughput_ips",
                  "energy_mj_per_image")


def onnx_pending(
    path: str | Path,
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    device: str | None = None,
    artifact_name: str | None = None,
    memory: bool = True,
) -> Pending:
    """An ONNX artifact loaded on `runtime`, its accuracy measured on that runtime (images/labels:
    decoded uint8 (N, 3, S, S) test images; None: not measured), peak memory and sizes."""
    from edgeprune.runtime.classifier import Classifier

    p = Path(path)
    notes: list[str] = []
    clf = Classifier(p, runtime=runtime, threads=threads)
    size = clf.input_size
    meta = clf.metadata
    peak = None
    if memory:
        mem = peak_memory_onnx(p, input_size=size, threads=threads, runtime=clf.runtime)
        peak = mem.bytes
        if peak is None:
            notes.append(mem.note)
    accuracy = None
    at_point = None
    if images is not None and labels is not None and len(labels):
        logits = clf.predict_uint8(images)
        accuracy = accuracy_of(logits, labels)
        at_point = figures_at_operating_point(meta, logits, labels)
    if meta.macs is None:
        notes.append("no MAC count in the metadata: GMAC/s not computed")
    row = {
        "artifact": artifact_name or p.name,
        "format": meta.format,
        "runtime": clf.runtime,
        "device": device or cpu_device_label(),
        "isa": cpu_isa(),
        "software": clf.backend.software,
        "threads": threads,
        "accuracy": accuracy,
        "n_images": int(len(labels)) if accuracy is not None else None,
        "defect_recall": at_point.defect_recall if at_point else None,
        "false_reject_rate": at_point.false_reject_rate if at_point else None,
        "ok_threshold": meta.operating_point.ok_threshold if at_point else None,
        "file_bytes": file_size(p),
        "gzip_bytes": gzip_size(p),
        "peak_memory_bytes": peak,
        "macs": meta.macs,
        "path": str(p),
    }
    return Pending(row, clf.predict, size, notes)


def finish_rows(pending: Sequence[Pending], *, threads: int = 1, budget_s: float = 2.0) -> list[dict[str, Any]]:
    """Time every pending row in one round-robin (`time_candidates`) and return the rows, in
    COLUMNS order (extra keys after)."""
    timings = time_candidates({str(i): (p.run, p.input_size) for i, p in enumerate(pending)},
                              threads=threads, budget_s=budget_s)
    rows = []
    for i, p in enumerate(pending):
        timing = timings[str(i)]
        notes = list(p.notes)
        if timing["energy_mj_per_image"] is None and timing["energy_note"]:
            notes.append(timing["energy_note"])
        values = {**p.row, **{k: timing[k] for k in TIMING_COLUMNS}}
        values["gmacs_b1"] = achieved_gmacs(values.get("macs"), timing["b1_median_ms"])
        values["gmacs_b64"] = achieved_gmacs(values.get("macs"), timing["b64_median_ms"])
        values["notes"] = "; ".join(n for n in notes if n)
        rows.append({**{c: values.get(c) for c in COLUMNS},
                     **{k: v for k, v in values.items() if k not in COLUMNS}})
    return rows


def bench_onnx(
    path: str | Path,
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    device: str | None = None,
    software: str | None = None,
    budget_s: float = 2.0,
    artifact_name: str | None = None,
    memory: bool = True,
) -> dict[str, Any]:
    """One bench row for an ONNX artifact run by `runtime` with `threads` threads (timed alone:
    to compare rows, bench them in one call, `bench_onnx_files`)."""
    check_option("threads", threads)
    check_option("budget_s", budget_s)  # a NaN budget would time for ever
    pending = onnx_pending(path, runtime=runtime, threads=threads, images=images, labels=labels,
                           device=device, artifact_name=artifact_name, memory=memory)
    if software:
        pending.row["software"] = software
    return finish_rows([pending], threads=threads, budget_s=budget_s)[0]


def bench_onnx_files(artifacts, *, data=None, threads=1, budget_s=2.0, device=None,
                     max_per_class=None, memory=True, runtimes=None) -> list[dict]:
    """Bench .onnx files on each of `runtimes` ("onnxruntime,openvino", a list, or None: every
    installed backend), all rows timed in one round-robin; test images from an image tree when
    `data` is given, accuracy measured on each runtime."""
    from edgeprune.runtime.backends import parse_runtimes
    from edgeprune.runtime.data import load_test_images
    from edgeprune.runtime.metadata import read_metadata

    check_option("threads", threads)
    check_option("budget_s", budget_s)
    check_option("max_per_class", max_per_class, optional=True)
    names = parse_runtimes(runtimes)
    for artifact in artifacts:
        if Path(artifact).suffix != ".onnx":
            raise EdgepruneError(
                f"{artifact}: the runtime benches .onnx files only; checkpoints and sparse files "
                "need the full edgeprune install (`edgeprune bench`)"
            )
    pending = []
    cache: dict = {}
    for artifact in artifacts:
        images = labels = None
        if data:
            meta = read_metadata(artifact)
            key = (meta.input_size, tuple(meta.class_names))
            if key not in cache:
                cache[key] = load_test_images(data, class_names=meta.class_names,
                                              image_size=meta.input_size, max_per_class=max_per_class)
            images, labels = cache[key].images, cache[key].labels
        for runtime in names:
            pending.append(onnx_pending(artifact, runtime=runtime, threads=threads, images=images,
                                        labels=labels, device=device, memory=memory))
    return finish_rows(pending, threads=threads, budget_s=budget_s)


# ----------------------------------------------------------------------------- CSV / JSON

def write_csv(rows: Sequence[dict[str, Any]], path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Write (or replace) a results CSV, whole or not at all; never over one of `inputs` (the
    artifacts benched) nor inside a checkpoint folder."""
    p = check_output_file(path, inputs=inputs, overwrite=True, what="CSV file")
    extra = [k for row in rows for k in row if k not in COLUMNS]
    columns = COLUMNS + sorted(set(extra), key=extra.index)
    with atomic_file(p, overwrite=True, what="CSV file") as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return p


def write_json(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    p = check_output_file(path, overwrite=True, what="JSON file")
    with atomic_file(p, overwrite=True, what="JSON file") as tmp:
        tmp.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    return p


def _parse(value: str) -> Any:
    if value == "":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


KEY_COLUMNS = ("artifact", "format", "runtime", "device")  # what `compare` matches and labels rows by
TEXT_COLUMNS = {"artifact", "format", "runtime", "device", "isa", "software", "path", "notes"}
NUMERIC_COLUMNS = [c for c in COLUMNS if c not in TEXT_COLUMNS]


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by `edgeprune bench --csv`. Anything else (another tool's CSV, an
    empty or binary file, a row with a word where a latency belongs) is refused with the file,
    the line and the column named, rather than failing later inside a division or a format."""
    p = Path(path)
    if p.is_dir():
        raise EdgepruneError(f"{p} is a folder, not a bench CSV")
    if not p.is_file():
        raise EdgepruneError(f"bench CSV not found: {p}")
    hint = "write one with `edgeprune bench ARTIFACTS --csv FILE`"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise EdgepruneError(f"cannot read bench CSV {p}: {exc.strerror or exc}") from None
    if b"\0" in raw:
        raise EdgepruneError(f"{p} is a binary file, not a bench CSV; {hint}")
    try:
        text = raw.decode("utf-8-sig")  # -sig: a CSV saved by Excel starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise EdgepruneError(f"{p} is not UTF-8 text (byte {exc.start}), not a bench CSV; {hint}") from None
    if not text.strip():
        raise EdgepruneError(f"{p} is empty; {hint}")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        missing = [c for c in KEY_COLUMNS if c not in header]
        if missing:
            raise EdgepruneError(
                f"{p} is not an edgeprune bench CSV: no {', '.join(missing)} column(s) (its header "
                f"is {', '.join(header)[:120]!r}); {hint}"
            )
        if not any(metric in header for metric, _ in COMPARE_METRICS):
            raise EdgepruneError(
                f"{p} is not an edgeprune bench CSV: none of the measured columns "
                f"({', '.join(m for m, _ in COMPARE_METRICS)}); {hint}"
            )
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise EdgepruneError(f"{p}: column(s) {', '.join(duplicated)} appear more than once in the header")
        rows = []
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, e.g. at the end of a hand-edited file
            if len(cells) != len(header):
                raise EdgepruneError(
                    f"{p}, line {line}: {len(cells)} cells for {len(header)} columns; the file is "
                    "truncated or was edited by hand"
                )
            # Names stay text (an artifact called 1.onnx is not a number); the rest is parsed.
            row = {column: (cell or None) if column in TEXT_COLUMNS else _parse(cell)
                   for column, cell in zip(header, cells)}
            if row["artifact"] is None:
                raise EdgepruneError(f"{p}, line {line}: the artifact cell is empty")
            for column in NUMERIC_COLUMNS:
                value = row.get(column)
                if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
                    raise EdgepruneError(
                        f"{p}, line {line}: column {column} holds {value!r}, not a number (leave the "
                        "cell empty when a value was not measured)"
                    )
            rows.append(row)
    except csv.Error as exc:
        raise EdgepruneError(f"{p} is not a readable CSV (line {reader.line_num}: {exc})") from None
    if not rows:
        raise EdgepruneError(f"{p} holds a header but no bench rows; {hint}")
    return rows


# ----------------------------------------------------------------------------- compare

COMPARE_METRICS = [
    ("b1_median_ms", "b1 ms"),
    ("b64_median_ms", "b64 ms"),
    ("throughput_ips", "img/s"),
    ("gmacs_b1", "GMAC/s b1"),
    ("peak_memory_bytes", "peak mem"),
    ("accuracy", "accuracy"),
]


def compare(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Match rows of two bench runs on (artifact, format, runtime); B / A ratios per metric."""
    def key(row: dict[str, Any]) -> tuple:
        return (str(row.get("artifact")), str(row.get("format")), str(row.get("runtime")))

    device_a = " + ".join(sorted({str(r.get("device")) for r in rows_a}))
    device_b = " + ".join(sorted({str(r.get("device")) for r in rows_b}))
    index_b = {key(r): r for r in rows_b}
    matched, only_a = [], []
    for row in rows_a:
        other = index_b.pop(key(row), None)
        if other is None:
            only_a.append(key(row))
            continue
        entry: dict[str, Any] = {"artifact": row["artifact"], "format": row.get("format"),
                                 "runtime": row.get("runtime")}
        for metric, _ in COMPARE_METRICS:
            a, b = row.get(metric), other.get(metric)
            entry[f"{metric}_a"] = a
            entry[f"{metric}_b"] = b
            entry[f"{metric}_ratio"] = (
                b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None
            )
        matched.append(entry)
    if not matched:
        raise EdgepruneError(
            "the two bench CSVs share no (artifact, format, runtime) rows: bench the same "
            "artifact files on both devices"
        )
    return {"device_a": device_a, "device_b": device_b, "rows": matched,
            "only_a": only_a, "only_b": list(index_b)}


# ----------------------------------------------------------------------------- text output

def fmt(column: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if column.endswith("_bytes"):
        return human_bytes(value)
    if column in ("accuracy", "defect_recall", "false_reject_rate", "ok_threshold"):
        return f"{value:.4f}"
    if column.endswith("_ms"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if column == "macs":
        return f"{value / 1e6:.1f}M"
    if column.startswith("gmacs") or column == "energy_mj_per_image":
        return f"{value:.2f}"
    if column == "throughput_ips":
        return f"{value:.0f}"
    if column.endswith("_ratio"):
        return f"{value:.2f}x"
    return str(value)


def human_bytes(n: float) -> str:
    """Decimal units, as everywhere in edgeprune: 1 kB = 1000 B, 1 MB = 10^6 B."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


TABLE_COLUMNS = [
    ("artifact", "artifact"), ("format", "format"), ("runtime", "runtime"),
    ("accuracy", "acc"), ("file_bytes", "file"), ("gzip_bytes", "gzip"),
    ("b1_median_ms", "b1 med ms"), ("b1_p90_ms", "b1 p90"),
    ("b64_median_ms", "b64 med ms"), ("b64_p90_ms", "b64 p90"),
    ("throughput_ips", "img/s"), ("peak_memory_bytes", "peak mem"), ("macs", "MACs"),
    ("gmacs_b1", "GMAC/s b1"), ("gmacs_b64", "GMAC/s b64"), ("energy_mj_per_image", "mJ/img"),
]


def text_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def table_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """TABLE_COLUMNS, with the operating-point columns after the accuracy where a row has them."""
    if not any(row.get("defect_recall") is not None for row in rows):
        return TABLE_COLUMNS
    at = [c for c, _ in TABLE_COLUMNS].index("accuracy") + 1
    return TABLE_COLUMNS[:at] + OPERATING_POINT_COLUMNS + TABLE_COLUMNS[at:]


OPERATING_POINT_COLUMNS = [("defect_recall", "defect rec"), ("false_reject_rate", "false rej")]


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text bench table (the rich table of the full CLI shows the same columns)."""
    columns = table_columns(rows)
    body = [[fmt(col, row.get(col)) for col, _ in columns] for row in rows]
    devices = sorted({f"{r.get('device')} ({r.get('isa') or 'isa unknown'}, {r.get('threads')} thread(s))" for r in rows})
    software = sorted({str(r.get("software")) for r in rows})
    return ("device: " + "; ".join(devices) + "\nsoftware: " + ", ".join(software) + "\n"
            + text_table([h for _, h in columns], body))


def compare_table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["artifact", "format", "runtime"]
    for _, label in COMPARE_METRICS:
        headers += [f"{label} A", f"{label} B", "B/A"]
    body = []
    for row in result["rows"]:
        cells = [str(row["artifact"]), str(row["format"]), str(row["runtime"])]
        for metric, _ in COMPARE_METRICS:
            cells += [fmt(metric, row[f"{metric}_a"]), fmt(metric, row[f"{metric}_b"]),
                      fmt("x_ratio", row[f"{metric}_ratio"])]
        body.append(cells)
    return headers, body


def format_compare(result: dict[str, Any]) -> str:
    headers, body = compare_table_rows(result)
    text = f"A: {result['device_a']}\nB: {result['device_b']}\n" + text_table(headers, body)
    for side in ("only_a", "only_b"):
        if result[side]:
            text += f"\nonly in {side[-1].upper()}: " + ", ".join("/".join(k) for k in result[side])
    return text
