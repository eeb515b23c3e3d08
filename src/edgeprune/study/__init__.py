"""Studies: one TOML config, a resumable sweep (local or Ray), a results table, a report that
recommends a model.

    import edgeprune.study as study
    config = study.load_config("configs/digits-quick.toml")     # validated, nothing run
    study.run_study(config, "runs/digits")                       # --resume: run_study(..., resume=True)
    table = study.results("runs/digits")                         # pandas DataFrame, one row per model
    study.write_report("runs/digits")                            # report.html, report.md, PNGs
    print(study.recommend(table, study.RecommendRule(max_drop=1.0, max_latency_ms=2.0)).text)

Modules: config (TOML -> dataclasses), plan (experiments keyed by a hash of their resolved
config), store (SQLite in RUN_DIR), execute (one experiment on the workflows), runner (local and
Ray executors), retime (every model timed again in one round-robin), results, report, recommend,
candidate (the recommendation run, chosen and exported to INT8: what a fleet retrain registers).
Names resolve lazily (pandas, matplotlib and Ray load only when used)."""

from __future__ import annotations

import importlib

# `results` and `recommend` are both modules and the functions users call. Importing a submodule
# the first time sets the package attribute of its name to the module, so these two (light:
# no torch, pandas only when called) are imported here, once, and the names bound to the functions.
from edgeprune.study.recommend import Recommendation, recommend  # noqa: E402
from edgeprune.study.results import results  # noqa: E402

_WHERE = {
    "StudyConfig": "config", "RecommendRule": "config", "load_config": "config", "parse_config": "config",
    "Experiment": "plan", "plan_study": "plan",
    "StudyStore": "store",
    "run_study": "runner", "StudyRun": "runner",
    "write_report": "report",
    "retime_study": "retime",
    "study_candidate": "candidate", "Candidate": "candidate",
}
__all__ = sorted([*_WHERE, "Recommendation", "recommend", "results"])


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgeprune.study.{module}"), name)
    globals()[name] = value
    return value
