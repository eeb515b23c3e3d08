"""A study's experiments, resolved: one baseline per fold, then every [[experiments]] / [grid]
entry per fold, each keyed by a hash of its full resolved config (data options, the data's
fingerprint, the baseline it starts from, the pruning job, the fine-tune recipe, the measurement
settings). The key is what `--resume` trusts: an experiment whose key is in the database ran with
exactly this config on exactly this data, so it is not run again; change anything and it runs.

Folds: `folds = N` is stratified k-fold cross-validation (`DataOptions.folds` / `fold`): the
data is dealt once, by the split seed, into N disjoint stratified parts; fold f tests on part f
and trains (validation carved out by val_fraction) on the other N-1, so every image is tested in
exactly one fold. Every experiment runs on every fold, from that fold's own baseline, and the
results table reports mean and standard deviation over folds. A source with its own test set
(CIFAR-10, an ImageFolder train/test tree) refuses folds > 1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from edgeprune.study.config import ExperimentConfig, ExperimentSpec, StudyConfig

PLAN_VERSION = 1  # bump when the meaning of a resolved config changes: every key changes with it


@dataclass(frozen=True)
class Experiment:
    key: str
    name: str  # "baseline" or the experiment's name
    kind: str  # "baseline" | "prune"
    fold: int
    config: dict[str, Any]  # the full resolved config (JSON-ready); its hash is `key`
    baseline_key: str | None = None

    @property
    def folder(self) -> str:
        """The experiment's folder in RUN_DIR (checkpoint/ and model.onnx inside)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
        return f"experiments/{safe}-f{self.fold}-{self.key[:10]}"

    @functools.cached_property
    def settings(self) -> ExperimentConfig:
        """`config` typed, parsed once per Experiment."""
        return ExperimentConfig.from_dict(self.config, self.name)

    @property
    def label(self) -> str:
        return self.name if self.settings.folds == 1 else f"{self.name} (fold {self.fold})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        return cls(**values)


def config_key(resolved: dict[str, Any]) -> str:
    text = json.dumps({"plan_version": PLAN_VERSION, **resolved}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fold_data(config: StudyConfig, fold: int):
    """The DataOptions of one fold: part `fold` of the config's k-fold split (folds = 1: the
    config's own hold-out split)."""
    return config.data.replace(folds=config.folds, fold=fold) if config.folds > 1 else config.data


def _data_key(options, fingerprint: str) -> dict[str, Any]:
    """The data options as keyed. folds / fold count only for k-fold, so a one-split study keeps
    the keys it had before k-fold existed (--resume re-runs nothing)."""
    values = dataclasses.asdict(options)
    if values["folds"] == 1:
        del values["folds"], values["fold"]
    if values.get("extra_train") is None:  # likewise: studies without extra training images keep their keys
        values.pop("extra_train", None)
    return {**values, "fingerprint": fingerprint}


def plan_study(config: StudyConfig, fingerprint: str) -> list[Experiment]:
    """Baselines first (one per fold), then each experiment per fold, in config order."""
    from edgeprune.train import TrainRecipe

    measure = measure_key(config.measure)
    baselines: list[Experiment] = []
    experiments: list[Experiment] = []
    archs = config.baseline.archs
    several = len(archs) > 1
    for fold in range(config.folds):
        data = _data_key(fold_data(config, fold), fingerprint)
        baseline_recipe = TrainRecipe(**config.baseline.recipe).to_dict()
        for arch in archs:
            spec_values = {k: v for k, v in dataclasses.asdict(config.baseline).items() if k != "archs"}
            base = {
                "kind": "baseline", "folds": config.folds, "fold": fold, "data": data, "arch": arch,
                "baseline": {**spec_values, "arch": arch, "recipe": baseline_recipe},
                "measure": measure,
            }
            name = f"baseline-{arch}" if several else "baseline"
            baseline = Experiment(config_key(base), name, "baseline", fold, base)
            baselines.append(baseline)
            for spec in config.experiments:
                # The resolution lever: the cut's own input size (its data at that size, the same
                # split and fingerprint); the baseline's data key where it keeps the size.
                cut_data = data if spec.image_size in (None, data["image_size"]) else {
                    **data, "image_size": spec.image_size}
                resolved = {
                    "kind": "prune", "folds": config.folds, "fold": fold, "data": cut_data, "arch": arch,
                    "baseline_key": baseline.key, "prune": _prune_dict(spec),
                    "finetune": TrainRecipe(epochs=spec.finetune_epochs, **config.finetune).to_dict(),
                    "measure": measure,
                }
                experiments.append(Experiment(config_key(resolved), f"{spec.name}-{arch}" if several else spec.name,
                                              "prune", fold, resolved, baseline_key=baseline.key))
    return baselines + experiments


def measure_key(measure) -> dict[str, Any]:
    """The measurement settings as keyed. The robustness settings count only where they differ
    from their defaults, so a study planned before robustness was measured keeps its keys on
    --resume (its finished models then show no robustness figures; nothing is re-run)."""
    from edgeprune.study.config import MeasureSpec

    values = dataclasses.asdict(measure)
    defaults = dataclasses.asdict(MeasureSpec())
    for name in ("robustness", "robustness_shifts", "robustness_severities", "ok_classes", "recall_targets"):
        if values[name] == defaults[name]:
            del values[name]
    return values


def _prune_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """The experiment's pruning job as the config objects resolve it (defaults filled in, e.g.
    round_to="auto" becomes this machine's multiple: a different multiple is a different job)."""
    from edgeprune.study.config import _method_config

    pruning, schedule = _method_config(spec)
    values = dataclasses.asdict(spec)
    values.pop("name")  # renaming an experiment does not change what it computes
    # Levers added later count only where set, so earlier studies keep their keys (--resume).
    # image_size lives in the experiment's data key.
    values.pop("image_size")
    if not values["final_epochs"]:
        del values["final_epochs"]
    values["config"] = pruning.to_dict()
    values["schedule_resolved"] = schedule.to_dict()
    return values
