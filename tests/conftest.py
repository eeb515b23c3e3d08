"""Shared fixtures. The real data sets live outside the project (never copied in): the directory
named by $EDGEPRUNE_SHARED, or ../shared next to the project root. A missing folder fails the
tests that need it, loudly: in CI that is a broken set-up, not something to skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tests run on 2 cores next to other work: keep torch to one thread unless a test says otherwise.
torch.set_num_threads(1)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build):
    """What `build(folder)` writes into `folder`, and returns (JSON-able), made once per test run.

    Under pytest-xdist each worker is its own process with its own session fixtures: the first
    worker to ask builds into the run's shared temporary folder under a file lock, the others
    wait and reuse it. Built by the code under test in every run (not cached across runs), so a
    change to the code that makes a model is always tested."""
    import json

    from filelock import FileLock  # installed with torch, which requires it

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / f"built-{name}", shared / f"built-{name}.json"
    with FileLock(str(shared / f"built-{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return json.loads(done.read_text())


def shared_root() -> Path:
    env = os.environ.get("EDGEPRUNE_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    root = shared_root() / "datasets"
    if not root.is_dir():
        pytest.fail(
            f"shared datasets not found at {root}: set EDGEPRUNE_SHARED to the folder holding "
            "datasets/ (cifar10-jpeg, magnetic-tile) and weights/"
        )
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    root = shared_root() / "weights"
    if not root.is_dir():
        pytest.fail(f"shared weights not found at {root}: set EDGEPRUNE_SHARED")
    return root


@pytest.fixture(scope="session")
def cifar_jpeg(shared_datasets: Path) -> Path:
    return shared_datasets / "cifar10-jpeg"


@pytest.fixture(scope="session")
def magnetic_tile(shared_datasets: Path) -> Path:
    return shared_datasets / "magnetic-tile"


# The shared trained model: an untrained MobileNetV2 at 32x32 outputs logits of ~1e-9, so any
# comparison of its outputs (ONNX vs PyTorch, saved vs loaded) passes whatever the code does.
TRAINED_RECIPE = {"epochs": 3, "seed": 0}  # the default recipe (SGD, batch by data size): ~85% test accuracy
TRAINED_MIN_ACCURACY = 0.5  # chance is 0.1


@pytest.fixture(scope="session")
def digits32():
    """scikit-learn's digits at 32x32 with the default split (the shared trained model's data)."""
    from edgeprune.data import load_data

    return load_data("digits", image_size=32)


@pytest.fixture(scope="session")
def trained_digits_checkpoint(digits32, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2 trained briefly on digits at 32x32 (~25 s on one core), saved once per session.

    Read-only for the tests: copy it before changing it."""
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows import train_baseline

    def build(folder: Path) -> str:
        out = folder / "mnv2-digits"
        torch.manual_seed(0)
        _, _, result = train_baseline(digits32, arch="mobilenet_v2", recipe=TrainRecipe(**TRAINED_RECIPE),
                                      out=out, progress=False)
        assert result.accuracy >= TRAINED_MIN_ACCURACY, (
            f"the shared MobileNetV2 reached only {result.accuracy:.1%} test accuracy: tests that "
            "compare its outputs would prove little"
        )
        return str(out)

    return Path(built_once(tmp_path_factory, "trained-digits", build))


@pytest.fixture(scope="session")
def trained_digits_onnx(trained_digits_checkpoint: Path, digits32, tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint, FP32 ONNX file) of the shared trained MobileNetV2, the export verified on
    digits' test images. (An untrained MobileNetV2 at 32x32 outputs logits of ~1e-9: every image
    a tie, so comparisons would prove nothing.)"""
    from edgeprune.workflows import export_checkpoint

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = export_checkpoint(trained_digits_checkpoint, out, "onnx",
                               data=digits32, max_verify_images=100)
    return trained_digits_checkpoint, result.path


# ----------------------------------------------------------------------------- the station's tests
# A small model trained on the real magnetic-tile data, as two classes (free = OK, every defect
# folder = defect), from the shared ImageNet MobileNetV2 at 48x48: ~30 s on one core, ~75% balanced
# test accuracy (chance 50%). The station tests replay images of its own test split.
TILE_SIZE, TILE_PER_CLASS, TILE_MIN_BALANCED_ACCURACY = 48, 300, 0.65


@pytest.fixture(scope="session")
def tile_tree(magnetic_tile: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """magnetic-tile as free/ and defect/ (links to the shared files, never copies); one tree for
    every worker, so that the tile model's test paths are the same files everywhere."""

    def build(tree: Path) -> str:
        for cls in sorted(p.name for p in magnetic_tile.iterdir() if p.is_dir()):
            dest = tree / ("free" if cls == "free" else "defect")
            dest.mkdir(exist_ok=True)
            for file in sorted((magnetic_tile / cls).iterdir()):
                (dest / f"{cls}_{file.name}").symlink_to(file)
        assert len(list((tree / "defect").iterdir())) > 100, f"magnetic-tile at {magnetic_tile} is incomplete"
        return str(tree)

    return Path(built_once(tmp_path_factory, "tile-tree", build))


@pytest.fixture(scope="session")
def tile_model(tile_tree: Path, shared_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """(FP32 ONNX file, test-split image paths by class) of the two-class tile model."""

    def build(folder: Path) -> dict:
        path, by_class = _train_tile_model(tile_tree, shared_weights, folder)
        return {"onnx": str(path), "by_class": {k: [str(p) for p in v] for k, v in by_class.items()}}

    built = built_once(tmp_path_factory, "tile-model", build)
    return Path(built["onnx"]), {k: [Path(p) for p in v] for k, v in built["by_class"].items()}


def _train_tile_model(tile_tree: Path, shared_weights: Path, folder: Path) -> tuple[Path, dict[str, list[Path]]]:
    import edgeprune as ep
    from edgeprune.train import TrainRecipe

    # A temporary TORCH_HOME, not torch.hub.set_dir: set_dir pins the hub folder for the rest of
    # the session, so later tests that point TORCH_HOME elsewhere would be ignored.
    torch_home = folder / "torch-home"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    (torch_home / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").symlink_to(
        shared_weights / "mobilenet_v2-b0353104.pth")
    previous_home = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        data = ep.load_data(ep.DataOptions(spec=str(tile_tree), image_size=TILE_SIZE, normalization="imagenet",
                                           max_per_class=TILE_PER_CLASS))
        torch.manual_seed(0)
        model = ep.train_model(data, TrainRecipe(epochs=3, seed=0), weights="imagenet", device="cpu")
    finally:
        if previous_home is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous_home
    balanced = model.metrics["test_balanced_accuracy"]
    assert balanced >= TILE_MIN_BALANCED_ACCURACY, (
        f"the station's tile model reached only {balanced:.1%} balanced test accuracy (chance 50%)")
    result = ep.export_model(model, folder / "tiles.onnx", data=data)
    by_class: dict[str, list[Path]] = {name: [] for name in data.class_names}
    for path, label in zip(data.test.paths, data.test.labels):
        by_class[data.class_names[int(label)]].append(Path(path))
    return result.path, by_class


# ----------------------------------------------------------------------------- the demo
# With these epochs, seeds 0/1/2 measured (test accuracy, ONNX Runtime, 1 thread, ~80 s each):
# baseline 96.1/94.4/95.8%, pruned 92.5/90.8/93.3%, INT8 93.1/91.4/93.6% (test_demo's bars).
DEMO_TEST_EPOCHS, DEMO_TEST_FINETUNE_EPOCHS = 6, 3


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`edgeprune demo` as a user runs it (the venv's command, in a folder of its own, with fewer
    epochs than the demo's default), once per test run: {"cwd": its folder, "stdout": what it
    printed}. Its figures are in cwd/runs/demo/demo.json. The demo test judges them; the README's
    station quickstart runs a station on what it left."""

    def build(folder: Path) -> dict:
        env = {**os.environ, "EDGEPRUNE_CACHE": str(folder / "cache"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "edgeprune"), "demo", "--epochs", str(DEMO_TEST_EPOCHS),
             "--finetune-epochs", str(DEMO_TEST_FINETUNE_EPOCHS), "--threads", "1", "--seed", "0"],
            cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return {"cwd": str(folder), "stdout": done.stdout}

    return built_once(tmp_path_factory, "demo", build)
