"""Does pruning pay at the line? magnetic-tile at the camera's resolution, k-fold, at an operating point.

    python benchmarks/deploy_kfold.py train   [--folds 5] [--fold 0] [--runs NAME,...]
    python benchmarks/deploy_kfold.py export  [--fold F]    INT8 (QDQ, ONNX Runtime) and FP32 ONNX files
    python benchmarks/deploy_kfold.py predict [--fold F]    P(OK) of every artifact on val and test
    python benchmarks/deploy_kfold.py time                  fold 0's artifacts in one round-robin
    python benchmarks/deploy_kfold.py report                the tables, the pick, the paired k-fold verdict
    python benchmarks/deploy_kfold.py all                   each of the above in turn

Every stage skips what is already under benchmarks/work/deploy224-kfold/ (git-ignored): run it
again after any interruption and it goes on where it stood. Run it in the background with `nice`:
it is hours of CPU on 2 cores, and the timing stage wants an idle machine.

The data: all 1,344 magnetic tiles, stratified `--folds` (5) folds; fold f tests on its fifth,
trains on the rest minus a stratified 15 % validation part. Every figure is judged on validation
and reported on test.

The levers, each a real edgeprune option (what `prune` / `train` / a study config take), measured
on fold 0 in one ablation from the same dense teacher:

    dense          MobileNetV2, ImageNet V1 weights, 6 epochs at 224 px (the teacher and reference)
    t75            Taylor channel pruning to 25 % of the parameters, geometric x2, one distilled
                   epoch a step, then 5 distilled epochs (PruneJob.final_epochs, --final-epochs)
    t75-ft10       the same with 10 final epochs (the longer fine-tune; its per-epoch curve)
    t75-bal        class-balanced sampling in the fine-tune (--balance sampler)
    t75-line       the `line` augmentation preset, dense and fine-tune alike (--augment line)
    t75-160        the same cut fine-tuned and run at 160 px (--image-size 160 on prune)
    dense-160      the dense model fine-tuned 2 epochs at 160 px: resolution alone
    t85-160        a deeper cut (15 % of the parameters) at 160 px

The pick (`report`): on fold 0's *validation* split, every INT8 artifact gets the threshold for
98 % defect recall; among those that time >= 5x faster than dense FP32 (ONNX Runtime, 1 thread,
batch 1, one round-robin) and are >= 8x smaller, the lowest validation false-reject rate wins
(then the fastest). Dense and the pick then run on every fold, and the verdict compares them
paired, image by image, over all 1,344 test images of the k folds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, WORK, imagenet_hub_cache, run_main, shared_root  # noqa: E402

RUN_DIR = WORK / "deploy224-kfold"
OK_CLASS = "free"
RECALL_TARGET = 0.98
TARGET_SPEEDUP = 5.0
TARGET_SHRINK = 8.0

DENSE_RECIPE = dict(epochs=6, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1, batch_size=32)
FINETUNE_RECIPE = dict(epochs=1, optimizer="sgd", lr=0.01, weight_decay=4e-5, label_smoothing=0.1, batch_size=32)


@dataclass(frozen=True)
class Run:
    kind: str  # dense | prune | resize (the dense model fine-tuned at another size)
    image_size: int = 224
    teacher: str = "dense"  # the run it starts from (prune, resize)
    target: float = 0.75  # parameters removed (prune)
    final_epochs: int = 5
    augment: str = "none"
    balance: str = "none"
    ablation: bool = True  # fold 0 only, unless it is the pick


RUNS: dict[str, Run] = {
    "dense": Run("dense", ablation=False),
    "t75": Run("prune"),
    "t75-160": Run("prune", image_size=160),
    "dense-160": Run("resize", image_size=160, final_epochs=2),
    "t75-bal": Run("prune", balance="sampler"),
    "dense-line": Run("dense", augment="line"),
    "t75-line": Run("prune", teacher="dense-line", augment="line"),
    "t75-ft10": Run("prune", final_epochs=10),
    "t85-160": Run("prune", image_size=160, target=0.85),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def default_data() -> Path:
    return shared_root() / "datasets" / "magnetic-tile"


_DATA: dict = {}


def load(args, fold: int, image_size: int):
    from edgeprune.data import load_data

    key = (fold, image_size)
    if key not in _DATA:
        _DATA.clear()  # one bundle at a time: 1,344 tiles at 224 px are 200 MB
        _DATA[key] = load_data(str(args.data), image_size=image_size, val_fraction=0.15, seed=0,
                               normalization="imagenet", folds=args.folds, fold=fold, log=log)
    return _DATA[key]


def fold_dir(fold: int) -> Path:
    return RUN_DIR / f"fold{fold}"


def train_one(args, name: str, spec: Run, fold: int, out: Path) -> dict:
    from edgeprune.hardware import resolve_device
    from edgeprune.train import TrainRecipe

    data = load(args, fold, spec.image_size)
    started = time.perf_counter()
    device = resolve_device(args.device)
    if spec.kind == "dense":
        from edgeprune.workflows import train_baseline

        os.environ["TORCH_HOME"] = str(imagenet_hub_cache(WORK / "torch-home"))
        recipe = TrainRecipe(**DENSE_RECIPE, augment=spec.augment, balance=spec.balance)
        _, meta, result = train_baseline(data, arch="mobilenet_v2", recipe=recipe, weights="imagenet",
                                         device=device, out=out, log=log)
        return {"test_accuracy": result.accuracy, "seconds": time.perf_counter() - started,
                "history": meta.training.get("history")}
    teacher_dir = fold_dir(fold) / spec.teacher
    if not (teacher_dir / "result.json").is_file():
        raise RuntimeError(f"{name} needs {spec.teacher} of fold {fold} first")
    from edgeprune.pruning import Schedule, TaylorChannel
    from edgeprune.workflows.prune import PruneJob, prune_checkpoint

    recipe = TrainRecipe(**FINETUNE_RECIPE, augment=spec.augment, balance=spec.balance)
    if spec.kind == "resize":  # no cut: the resolution lever alone (a 0-step "prune" is no option)
        from edgeprune.metrics import evaluate
        from edgeprune.models import Model
        from edgeprune.train import fit

        model = Model.load(teacher_dir, device)
        teacher = Model.load(teacher_dir, device).module.eval()
        meta = dataclasses.replace(model.meta, input_size=spec.image_size)
        history = fit(model.module, data, dataclasses.replace(recipe, epochs=spec.final_epochs), device=device,
                      log=log, teacher=teacher, description=f"{name} fine-tune")
        result = evaluate(model.module, data.test, mean=meta.mean, std=meta.std, class_names=meta.class_names)
        meta = dataclasses.replace(meta, metrics={**meta.metrics, "test_accuracy": result.accuracy},
                                   pruning={"method": "none", "input_size_from": model.meta.input_size,
                                            "final_finetune": {"epochs": spec.final_epochs, "history": history}})
        Model(model.module.cpu(), meta).save(out)
        return {"test_accuracy": result.accuracy, "seconds": time.perf_counter() - started, "history": history}
    job = PruneJob(config=TaylorChannel(target=spec.target, target_kind="params"),
                   schedule=Schedule("geometric", 2), finetune=recipe, distill=True,
                   final_epochs=spec.final_epochs)
    outcome = prune_checkpoint(teacher_dir, data, job, out=out, device=device, log=log)
    rec = outcome.record
    return {"test_accuracy": rec["test_accuracy"], "seconds": rec["seconds"],
            "params_reduction": rec.get("params_reduction"), "macs_reduction": rec.get("macs_reduction"),
            "history": (rec.get("final_finetune") or {}).get("history")}


def planned(args) -> list[tuple[int, str]]:
    """(fold, run) in training order: fold 0's ablation first, then dense and the pick per fold."""
    only = [n for n in (args.runs or "").split(",") if n]
    unknown = [n for n in only if n not in RUNS]
    if unknown:
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(f"unknown run(s) {', '.join(unknown)}: {', '.join(RUNS)}")
    pick = read_pick()
    folds = [args.fold] if args.fold is not None else list(range(args.folds))
    out = []
    for fold in folds:
        for name, spec in RUNS.items():
            wanted = (fold == 0 or not spec.ablation or name == pick) if not only else name in only
            if wanted:
                out.append((fold, name))
    return out


def read_pick() -> str | None:
    path = RUN_DIR / "pick.json"
    return json.loads(path.read_text())["pick"] if path.is_file() else None


def stage_train(args) -> None:
    from edgeprune.hardware import device_label

    for fold, name in planned(args):
        out = fold_dir(fold) / name
        done = out / "result.json"
        if done.is_file():
            continue
        if out.exists():  # an interrupted run: start it again
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"fold {fold} {name}: training on {device_label(args.device)}")
        record = train_one(args, name, RUNS[name], fold, out)
        record.update(run=name, fold=fold, spec=dataclasses.asdict(RUNS[name]),
                      device=device_label(args.device))
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        tmp.replace(done)
        log(f"fold {fold} {name}: test accuracy {record['test_accuracy']:.4f}, {record['seconds']:.0f} s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("train", "export", "predict", "time", "report", "all"))
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold", type=int, default=None, help="only this fold (default: every fold)")
    p.add_argument("--runs", default=None, help="only these runs, comma-separated (default: the plan)")
    p.add_argument("--device", default="cpu", help="training device (cuda where a GPU is lent)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--budget", type=float, default=4.0, help="timing seconds per artifact")
    p.add_argument("--results-dir", type=Path, default=RESULTS / "deploy224-kfold")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from edgeprune.hardware import set_threads

    set_threads(args.threads)
    stages = ("train", "export", "predict", "time", "report") if args.stage == "all" else (args.stage,)
    for stage in stages:
        globals()[f"stage_{stage}"](args)
    return 0


if __name__ == "__main__":
    run_main(main)
