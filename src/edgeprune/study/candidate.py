"""A study's recommendation as a deployable candidate: run the study (on this machine or on Ray,
as `study run` does), apply the config's recommendation rule to its results (as `study
recommend` does), and export the chosen experiment's checkpoint to INT8 ONNX through
`export_checkpoint`, verified and gated exactly as `edgeprune export --format onnx-int8`.

    candidate = study_candidate(load_config("retrain.toml"), "runs/r7", "runs/r7/candidate.onnx",
                                extra_train="fleet-data", executor="ray", ray_address="auto")
    candidate.path, candidate.data_fingerprint, candidate.extra_train_images

`extra_train` (DataOptions.extra_train) adds a class-folder tree to every experiment's training
split only, so its images never reach the validation or test split that chooses and judges the
candidate. With folds > 1 the recommendation is made on the mean over folds and fold 0's model
is exported. The fleet's retrain (edgeprune.fleet.retrain) is built on this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeprune.errors import EdgepruneError
from edgeprune.study.config import EXECUTORS, ExperimentConfig, StudyConfig

Log = Callable[[str], None]
INT8_FORMAT = "onnx-int8"


@dataclass(frozen=True)
class Candidate:
    path: Path  # the INT8 ONNX file: verified, through the accuracy gate
    report: Path  # its export report (FILE.json)
    run_dir: Path  # the study's RUN_DIR
    experiment: str  # the recommended experiment's name
    recommendation: str  # the rule's text, as `study recommend` prints it
    data_fingerprint: str  # the training data's (the base data and the extra tree)
    extra_train_images: int  # images of the extra tree in the training split
    int8_accuracy: float | None  # on the study's test split
    fp32_accuracy: float | None


def study_candidate(config: StudyConfig, run_dir: str | Path, out: str | Path, *, extra_train: str | Path | None = None,
                    executor: str = "local", ray_address: str | None = None, max_drop: float | None = None,
                    resume: bool = False, log: Log | None = None) -> Candidate:
    """Run `config` into `run_dir` (with `extra_train` added to its data), recommend by the
    config's rule and export the recommendation to INT8 at `out`. No recommendation, or an INT8
    file that fails its gate, is an EdgepruneError (the rejected file is set aside by export)."""
    from edgeprune.study.execute import CHECKPOINT, load_fold_data
    from edgeprune.study.recommend import recommend
    from edgeprune.study.results import results
    from edgeprune.study.runner import run_study
    from edgeprune.study.store import StudyStore
    from edgeprune.workflows import export_checkpoint

    say = log or (lambda _m: None)
    if executor not in EXECUTORS:
        raise EdgepruneError(f"unknown executor {executor!r}: {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise EdgepruneError("--ray-address needs --executor ray")
    if extra_train is not None:
        config = dataclasses.replace(config, data=config.data.replace(extra_train=str(extra_train)))
    run_dir = Path(run_dir)
    run_study(config, run_dir, resume=resume, executor=executor, ray_address=ray_address, log=say)
    outcome = recommend(results(run_dir), config.recommend)
    say(outcome.text)
    if outcome.chosen is None:
        raise EdgepruneError(f"the study recommends no model: {outcome.text}")
    name = outcome.chosen["name"]
    with StudyStore(run_dir) as store:
        rows = [r for r in store.rows() if r["name"] == name]
    row = min(rows, key=lambda r: r["fold"])  # fold 0 (the only one unless folds > 1)
    data = load_fold_data(ExperimentConfig.from_dict(row["config"], name), log=say)
    measure = config.measure
    point = dict(operating_point=f"defect_recall={measure.recall_targets[0]:g}", ok_classes=measure.ok_classes) \
        if measure.ok_classes else {}
    gate = {"max_drop": max_drop} if max_drop is not None else {}
    say(f"exporting {name} (fold {row['fold']}) to INT8: {out}")
    export = export_checkpoint(run_dir / row["folder"] / CHECKPOINT, fmt=INT8_FORMAT, out=out, data=data,
                               threads=measure.threads, log=say, **gate, **point)
    report = export.verification
    return Candidate(path=export.path, report=export.report_path, run_dir=run_dir, experiment=name,
                     recommendation=outcome.text, data_fingerprint=data.split.fingerprint,
                     extra_train_images=data.split.extra_train, int8_accuracy=report.artifact_accuracy,
                     fp32_accuracy=report.reference_accuracy)
