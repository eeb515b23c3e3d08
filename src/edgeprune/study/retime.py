"""`edgeprune study retime RUN_DIR`: time every stored model's ONNX file again, all of them in
one round-robin, and replace the stored latencies.

A study times each model the moment its experiment finishes: hours apart, under whatever else
the machine was doing then (a test suite, another job), so its latency column mixes machine
states. Retiming puts every model of the study in one round-robin on an otherwise idle machine
(edgeprune's bench timing policy: same threads, warm-up, pinned to the same cores), so the
latency columns compare like with like. Accuracy, sizes and peak memory stay as measured; each
row records how and when its latencies were taken (`latency_timing`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from edgeprune.errors import EdgepruneError
from edgeprune.study.store import StudyStore

Log = Callable[[str], None]


def retime_study(run_dir: str | Path, *, threads: int | None = None, budget_s: float | None = None,
                 runtimes: str | None = None, log: Log | None = None) -> dict[str, Any]:
    """Re-time every finished experiment's ONNX file in one round-robin per batch size and store
    the new latencies. threads / budget_s / runtimes: None keeps the study's [measure] values.
    Returns {"rows": n, "threads", "budget_s", "device", "load_average_1_5_15"}."""
    from edgeprune.study.execute import ONNX_FILE, stored_timing
    from edgeprune.workflows.bench import bench_artifacts

    run_dir = Path(run_dir)
    with StudyStore(run_dir) as store:
        rows = store.rows()
        if not rows:
            raise EdgepruneError(f"{run_dir} holds no finished experiment to time")
        measure = rows[0]["config"].get("measure") or {}
        threads = measure.get("threads", 1) if threads is None else threads
        budget_s = measure.get("budget_s", 1.0) if budget_s is None else budget_s
        if runtimes is None and measure.get("runtimes"):
            runtimes = ",".join(measure["runtimes"])
        paths = [run_dir / row["folder"] / ONNX_FILE for row in rows]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise EdgepruneError(f"{len(missing)} ONNX file(s) of this study are missing, e.g. {missing[0]}: "
                                 "the study folder is incomplete (copied in part?)")
        if log:
            log(f"retiming {len(rows)} model(s) in one round-robin, {threads} thread(s), "
                f"{budget_s:g} s a row and batch size")
        bench = bench_artifacts(paths, threads=threads, budget_s=budget_s, runtimes=runtimes,
                                memory=False, log=log)
        load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        timing = {"mode": f"one round-robin over the {len(rows)} models of the study (study retime)",
                  "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": threads, "budget_s": budget_s,
                  "load_average_1_5_15": load}
        by_path = {}
        for row in bench:
            by_path.setdefault(row["path"], []).append(row)
        updated = []
        for row, path in zip(rows, paths):
            result = dict(row["result"])
            latency = {k: dict(v) for k, v in (result.get("latency") or {}).items()}
            for b in by_path.get(str(path), []):
                latency[b["runtime"]] = {**latency.get(b["runtime"], {}), **stored_timing(b)}
            result.update(latency=latency, latency_timing=timing, threads=threads,
                          device=bench[0]["device"])
            updated.append((row["key"], result))
        store.replace_results(updated)
    return {"rows": len(rows), "threads": threads, "budget_s": budget_s, "device": bench[0]["device"],
            "load_average_1_5_15": load}
