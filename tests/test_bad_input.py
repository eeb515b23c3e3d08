"""Bad input of every kind ends in a clear `error:` (exit 2) or a named note, never a traceback,
a hang, code run from a file, or wrong pixels; and nothing that existed before is changed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.errors import EdgepruneError

V1_NAME = "mobilenet_v2-b0353104.pth"  # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(cache))
    return cache


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`edgeprune ARGS` in-process: (exit code, stdout, stderr with rich's wrapping undone)."""
    from edgeprune.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    code = exit_info.value.code or 0
    return code, captured.out, " ".join(captured.err.split())


def assert_clear_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def folder_state(*folders: Path) -> dict[str, str]:
    """Every file's sha256 and every link's target, links never followed: a before/after record."""
    state = {}
    for folder in folders:
        for directory, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(directory, name)
                if os.path.islink(path):
                    state[path] = "link:" + os.readlink(path)
                elif name in files:
                    state[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                else:
                    state[path] = "dir"
    return state


class TookTooLong(Exception):
    """Not TimeoutError: that is an OSError, which os.walk swallows while it loops."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging (the old listing walked directory-link loops for ever)."""

    def expired(signum, frame):
        raise TookTooLong(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def write_image(path: Path, seed: int, size: int = 12) -> None:
    """Random RGB noise: distinct seeds give distinct pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_tree(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    seed = 0
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            write_image(root / folder / f"{i:03d}{suffix}", seed)
    return root


# --- 1. code in a pickle ------------------------------------------------------------------------


class Payload:
    """Unpickling this creates `marker`: what a planted weights file could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about the bare pickle
def test_weights_files_never_run_pickled_code(tmp_path, monkeypatch, capsys, shared_weights):
    from edgeprune.models import create_model, zoo

    # The payload is real: an ordinary unpickling runs it.
    torch.save({"w": torch.zeros(1), "x": Payload(tmp_path / "proof")}, tmp_path / "proof.pth")
    torch.load(tmp_path / "proof.pth", weights_only=False)
    assert (tmp_path / "proof").exists()

    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    torch.save({"features.0.0.weight": Payload(marker)}, hub / V1_NAME)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    before = folder_state(tmp_path / "torch-home")
    train = ["train", "--data", "digits", "--weights", "imagenet", "--epochs", "1", "--max-per-class", "3",
             "--threads", "1", "--out", tmp_path / "run"]
    code, _, err = run_cli(train, capsys)
    assert_clear_error(code, err, V1_NAME, "sha256", "fresh copy")
    assert not marker.exists() and not (tmp_path / "run").exists()
    assert folder_state(tmp_path / "torch-home") == before  # nothing downloaded, moved or removed

    # A name torchvision does not use: no hash to check, and weights_only still refuses it.
    shutil.copy(hub / V1_NAME, tmp_path / "evil.pth")
    code, _, err = run_cli(train[:4] + [tmp_path / "evil.pth"] + train[5:], capsys)
    assert_clear_error(code, err, "evil.pth", "could run code")
    assert not marker.exists()
    pickled = tmp_path / "raw.pkl.pth"  # a bare pickle, not even torch.save's zip
    pickled.write_bytes(pickle.dumps({"a": Payload(marker)}))
    with pytest.raises(EdgepruneError, match="raw.pkl.pth.*could run code"):
        create_model("mobilenet_v2", 10, str(pickled))
    assert not marker.exists()

    # A truncated download under the torchvision name: the hash says so, with what to do.
    real = (shared_weights / V1_NAME).read_bytes()
    (hub / V1_NAME).write_bytes(real[: len(real) // 3])
    code, _, err = run_cli(train, capsys)
    assert_clear_error(code, err, V1_NAME, "damaged", "download.pytorch.org")
    # A well-formed file with the wrong tensors (its hash made to match, as a planted file could not).
    torch.save({"features.0.0.weight": torch.zeros(3)}, hub / V1_NAME)
    digest = hashlib.sha256((hub / V1_NAME).read_bytes()).hexdigest()
    with monkeypatch.context() as patch:
        patch.setattr(zoo, "torchvision_weight_files", lambda: {V1_NAME: (digest[:8], "URL")})
        with pytest.raises(EdgepruneError, match=r"does not fit torchvision's MobileNetV2 \(\d+ missing"):
            create_model("mobilenet_v2", 10, "imagenet")

    # The real file still loads, through the same loader.
    shutil.copy(shared_weights / V1_NAME, hub / V1_NAME)
    model = create_model("mobilenet_v2", 10, "imagenet")
    reference = torch.load(shared_weights / V1_NAME, map_location="cpu", weights_only=True)
    assert torch.equal(model.features[0][0].weight, reference["features.0.0.weight"])
    assert set(folder_state(tmp_path / "torch-home")) == set(before)  # nothing added to the hub


# --- 2. 16-bit images ---------------------------------------------------------------------------


def test_sixteen_bit_images_decode_to_the_same_gradient_in_training_and_runtime(tmp_path, capsys):
    from edgeprune.data.decode import decode_files
    from edgeprune.runtime.preprocess import decode_image

    root = make_tree(tmp_path / "tree", {"a": 4, "b": 4})
    ramp = np.linspace(0, 65535, 16).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (16, 1))).save(root / "a" / "ramp16.png")  # 16-bit PNG
    Image.fromarray(np.tile(ramp[:, None], (1, 16))).save(root / "b" / "ramp16.tif")
    twelve = np.tile(np.linspace(0, 4095, 16).round().astype(np.uint16), (16, 1))
    Image.fromarray(twelve).save(root / "b" / "ramp12.tif", tiffinfo={281: 4095})  # MaxSampleValue
    files = [root / "a" / "ramp16.png", root / "b" / "ramp16.tif", root / "b" / "ramp12.tif"]
    assert [Image.open(f).mode for f in files] == ["I;16"] * 3
    before = folder_state(root)

    decoded = decode_files([str(f) for f in files], 16)
    expected = np.rint(np.linspace(0, 255, 16)).astype(np.uint8)  # value * 255 / max
    for i, f in enumerate(files):
        runtime = decode_image(f, 16)
        assert np.array_equal(decoded.images[i], runtime)  # training and device agree
        grey = runtime[0] if i != 1 else runtime[0].T
        assert (runtime[0] == runtime[1]).all() and (runtime[1] == runtime[2]).all()
        assert np.array_equal(grey[0], expected) and (grey == grey[0]).all()  # a gradient, not white
    assert np.array_equal(decode_image(np.tile(ramp, (16, 1)), 16), decoded.images[0])  # uint16 array
    with Image.open(files[2]) as opened:  # an open PIL image keeps its declared 12 bits
        assert np.array_equal(decode_image(opened, 16), decoded.images[2])

    code, out, _ = run_cli(["data", "check", "--data", root, "--image-size", "16", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["files"]["sixteen_bit"]["count"] == 3
    assert "65535" in report["files"]["sixteen_bit"]["conversion"]
    code, out, _ = run_cli(["data", "check", "--data", root, "--image-size", "16"], capsys)
    assert code == 0 and "16-bit images: 3" in " ".join(out.split())
    assert folder_state(root) == before


# --- 3. symbolic links --------------------------------------------------------------------------


def test_symbolic_links_are_not_followed_into_loops_or_other_classes(tmp_path, capsys):
    from edgeprune.data import load_data

    root = make_tree(tmp_path / "tree", {"a": 5, "b": 5})
    write_image(tmp_path / "store" / "outside.png", 99)
    os.symlink(".", root / "a" / "loop")  # loop 1: a folder linking to itself
    os.symlink("..", root / "b" / "up")  # loop 2: to the tree root, which holds both classes
    os.symlink("..", root / "a" / "up")  # with loop 2: paths multiply at every level, a hang
    os.symlink("../b", root / "a" / "more_b")  # another class's folder: would mislabel
    os.symlink("../b/000.png", root / "a" / "stolen.png")  # a file of another class
    os.symlink("000.png", root / "a" / "again.png")  # a file listed already
    os.symlink(tmp_path / "store" / "outside.png", root / "a" / "outside.png")  # kept: a data store
    before = folder_state(root)

    with time_limit(10):
        bundle = load_data(str(root), image_size=8, val_fraction=0, test_fraction=0.2)
    link_notes = [n for n in bundle.notes if "link" in n]
    assert len(link_notes) == 3 and any("a/loop" in n for n in link_notes)
    paths = bundle.train.paths + bundle.test.paths
    labels = torch.cat([bundle.train.labels, bundle.test.labels])
    assert len(paths) == 11 and torch.bincount(labels).tolist() == [6, 5]
    assert len(set(map(os.path.realpath, paths))) == 11  # each real file once
    assert all(("/a/" in p) == (label == 0) for p, label in zip(paths, labels.tolist()))

    with time_limit(10):
        code, out, _ = run_cli(["data", "check", "--data", root, "--image-size", "8", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert sum(report["totals"].values()) == 11
    shown = " ".join(report["skipped_links"])
    for link in ("a/loop", "a/up", "b/up", "a/more_b", "a/stolen.png", "a/again.png"):
        assert link in shown
    assert "outside.png" not in shown and set(report["skipped_links"]) <= set(report["notes"])
    code, out, _ = run_cli(["data", "check", "--data", root, "--image-size", "8"], capsys)
    assert code == 0 and "a/more_b" in " ".join(out.split())

    # A class folder that is a link to another class folder: refused, with the link named.
    os.symlink("b", root / "c")
    code, _, err = run_cli(["data", "check", "--data", root, "--image-size", "8"], capsys)
    assert_clear_error(code, err, "class folder", "tree/c", "two classes")
    os.unlink(root / "c")
    assert folder_state(root) == before


# --- 4. the data cache notices changed contents --------------------------------------------------


def test_cache_misses_a_file_rewritten_with_the_same_size_and_mtime(tmp_path):
    from edgeprune.data import load_data
    from edgeprune.data.cache import cache_key

    root = make_tree(tmp_path / "tree", {"a": 4, "b": 4}, suffix=".bmp")  # BMP: size fixed by pixels
    changed = root / "b" / "002.bmp"
    stat = changed.stat()
    paths = sorted(str(p) for p in root.rglob("*.bmp"))
    key = cache_key(paths, 8)
    logs: list[list[str]] = [[], [], []]
    first = load_data(str(root), image_size=8, val_fraction=0, test_fraction=0.25, log=logs[0].append)
    assert any("saved" in line for line in logs[0])

    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes
    load_data(str(root), image_size=8, val_fraction=0, test_fraction=0.25, log=logs[1].append)
    assert any("using" in line for line in logs[1]) and not any("saved" in line for line in logs[1])

    write_image(changed, seed=1234)  # new pixels, same size, then the old mtime put back
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed.stat().st_size == stat.st_size and changed.stat().st_mtime_ns == stat.st_mtime_ns
    assert cache_key(paths, 8) != key
    second = load_data(str(root), image_size=8, val_fraction=0, test_fraction=0.25, log=logs[2].append)
    assert any("saved" in line for line in logs[2])
    index = lambda bundle: (bundle.train.paths + bundle.test.paths).index(str(changed))  # noqa: E731
    images = lambda bundle: torch.cat([bundle.train.images, bundle.test.images])  # noqa: E731
    fresh = np.asarray(Image.open(changed).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    assert torch.equal(images(second)[index(second)], torch.from_numpy(fresh.transpose(2, 0, 1).copy()))
    assert not torch.equal(images(first)[index(first)], images(second)[index(second)])


# --- 5. bench --compare with CSVs that are not bench results ------------------------------------


def test_bench_compare_names_the_file_and_the_problem(tmp_path, capsys):
    from edgeprune.runtime.bench import COLUMNS, write_csv

    row = {c: None for c in COLUMNS}
    row.update(artifact="model.onnx", format="onnx", runtime="onnxruntime", device="pi", threads=1,
               b1_median_ms=4.0, b64_median_ms=2.0, throughput_ips=500.0)
    good = write_csv([row], tmp_path / "good.csv")
    write_csv([dict(row, device="server", b1_median_ms=1.0)], tmp_path / "server.csv")
    code, out, _ = run_cli(["bench", "--compare", good, tmp_path / "server.csv", "--json"], capsys)
    assert code == 0 and json.loads(out)["rows"][0]["b1_median_ms_ratio"] == 0.25

    header = good.read_text().splitlines()[0]
    values = good.read_text().splitlines()[1]
    cases = {
        "missing.csv": (header.replace("artifact,", "") + "\n" + values.split(",", 1)[1] + "\n",
                        "no artifact column"),
        "foreign.csv": ("name,accuracy,top5\nresnet,0.7,0.9\n", "not an edgeprune bench CSV"),
        "empty.csv": ("", "is empty"),
        "header-only.csv": (header + "\n", "no bench rows"),
        "words.csv": (header + "\n" + values.replace(",4.0,", ",fast,", 1) + "\n",
                      "line 2: column b1_median_ms holds 'fast', not a number"),
        "ragged.csv": (header + "\n" + values + ",extra\n", "line 2"),
        "binary.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary file"),
        "latin1.csv": ("artifact;format\nmod\xe8le;onnx\n".encode("latin-1"), "not UTF-8"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = folder_state(tmp_path)
    for name, (_, problem) in cases.items():
        code, _, err = run_cli(["bench", "--compare", good, tmp_path / name], capsys)
        assert_clear_error(code, err, name, problem)
    code, _, err = run_cli(["bench", "--compare", tmp_path / "missing-file.csv", good], capsys)
    assert_clear_error(code, err, "missing-file.csv", "not found")
    assert folder_state(tmp_path) == before


# --- 6. a malformed model.json ------------------------------------------------------------------


def test_malformed_manifest_names_the_field(tmp_path, capsys):
    from edgeprune.models import CheckpointMeta, create_model, save_checkpoint

    torch.manual_seed(0)
    meta = CheckpointMeta("mobilenet_v2", [str(d) for d in range(10)], 8, [0.5] * 3, [0.25] * 3)
    good = save_checkpoint(create_model("mobilenet_v2", 10, width_mult=0.25), meta, tmp_path / "good")
    manifest = json.loads((good / "model.json").read_text())

    def edit(change):
        copy = json.loads(json.dumps(manifest))
        change(copy)
        return copy

    def set_layer(name, key, value):
        return lambda m: m["layers"][name].__setitem__(key, value)

    cases = [
        (edit(lambda m: m.__setitem__("input_size", 0)), "'input_size' must be a positive integer"),
        (edit(lambda m: m.__setitem__("input_size", "32")), "'input_size'"),
        (edit(lambda m: m.__setitem__("class_names", "0123456789")), "'class_names' must be a list"),
        (edit(lambda m: m.__setitem__("class_names", list(range(10)))), "'class_names'"),
        (edit(lambda m: m.pop("mean")), "missing field(s) 'mean'"),
        (edit(lambda m: m.__setitem__("std", [0.25, 0, 0.25])), "'std' must hold positive numbers"),
        (edit(lambda m: m.__setitem__("architecture", 42)), "'architecture' must be one of"),
        (edit(lambda m: m.__setitem__("architecture", ["resnet18"])), "'architecture' must be one of"),
        (edit(lambda m: m.__setitem__("width_mult", "wide")), "'width_mult'"),
        (edit(lambda m: m.__setitem__("num_classes", 3)), "'num_classes'"),
        (edit(lambda m: m.__setitem__("training", [])), "'training' must be a JSON object"),
        (edit(lambda m: m.__setitem__("format_version", "1")), "'format_version'"),
        (edit(set_layer("features.0.0", "out_channels", "8")), "'layers.features.0.0.out_channels'"),
        (edit(set_layer("features.0.1", "num_features", -8)), "'layers.features.0.1.num_features'"),
        (edit(lambda m: m["layers"]["features.0.1"].pop("num_features")), "'layers.features.0.1.num_features' is missing"),
        (edit(set_layer("features.0.0", "type", "Conv3d")), "'layers.features.0.0.type'"),
        (edit(set_layer("features.0.0", "type", {"Conv2d": 1})), "'layers.features.0.0.type'"),
        (edit(set_layer("classifier.1", "out_features", 10**9)), "'layers.classifier.1'"),
        (edit(lambda m: m.__setitem__("layers", "all")), "'layers' must be a JSON object"),
        (edit(lambda m: m.pop("shapes")), "missing field 'shapes'"),
        (edit(lambda m: m["shapes"].__setitem__("classifier.1.bias", [-10])), "'shapes.classifier.1.bias'"),
        ([manifest], "a JSON object is expected"),
    ]
    for i, (bad, field) in enumerate(cases):
        ckpt = tmp_path / f"bad{i}"
        shutil.copytree(good, ckpt)
        (ckpt / "model.json").write_text(json.dumps(bad))
        before = folder_state(ckpt)
        code, _, err = run_cli(["evaluate", ckpt, "--data", "digits", "--threads", "1"], capsys)
        assert_clear_error(code, err, f"bad{i}", field)
        assert folder_state(ckpt) == before
    (tmp_path / "binary").mkdir()
    shutil.copy(good / "model.safetensors", tmp_path / "binary")
    (tmp_path / "binary" / "model.json").write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = run_cli(["evaluate", tmp_path / "binary", "--data", "digits"], capsys)
    assert_clear_error(code, err, "model.json", "not valid JSON")


# --- helpers for the second half: small checkpoints, subprocess writers ---------------------------


def tiny_checkpoint(folder: Path, seed: int = 0, variant: str = "a") -> Path:
    """A MobileNetV2 x0.25 for digits at 8x8 (random weights; `variant` recorded in the manifest)."""
    from edgeprune.models import CheckpointMeta, create_model, save_checkpoint

    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 10, width_mult=0.25)
    meta = CheckpointMeta("mobilenet_v2", [str(d) for d in range(10)], 8, [0.5] * 3, [0.25] * 3,
                          width_mult=0.25, extra={"variant": variant})
    return save_checkpoint(model.eval(), meta, folder)


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


QUICK_TRAIN = ["--data", "digits", "--epochs", "1", "--max-per-class", "3", "--image-size", "8",
               "--width-mult", "0.25", "--threads", "1"]


@contextlib.contextmanager
def no_work_allowed(monkeypatch):
    """Fail the test if a command starts its work (loads data) before refusing its options."""
    import edgeprune.data

    def refuse(*args, **kwargs):
        raise AssertionError("the command loaded data before checking its options and outputs")

    with monkeypatch.context() as patch:
        patch.setattr(edgeprune.data, "load_data", refuse)
        yield


def python_child(code: str, *args) -> list[str]:
    """argv for a Python child running `code` with this process's interpreter (see child_env)."""
    return [sys.executable, "-c", code, *map(str, args)]


def child_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


# --- 7. outputs: nothing that exists is replaced, the input never written into -------------------


def test_outputs_are_checked_before_the_work_and_never_replace_what_exists(tmp_path, monkeypatch, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    notes = tmp_path / "notes"  # an unrelated folder holding files of a checkpoint's names
    notes.mkdir()
    (notes / "model.json").write_text('{"my": "notes"}')
    (notes / "model.safetensors").write_bytes(b"not weights")
    (notes / "todo.txt").write_text("keep me")
    (tmp_path / "old.onnx").write_bytes(b"an earlier artifact")
    (tmp_path / "plain.txt").write_text("a file")
    other = tiny_checkpoint(tmp_path / "other")
    demo = tmp_path / "demo"
    tiny_checkpoint(demo / "baseline")
    if os.geteuid() == 0:  # root writes through a chmod; /sys refuses even root
        read_only = Path("/sys/edgeprune-test-out")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        read_only = tmp_path / "ro" / "run"

    cases = [
        (["train", *QUICK_TRAIN, "--out", ckpt], "already exists and holds a checkpoint", "--overwrite"),
        (["train", *QUICK_TRAIN, "--out", notes], "already exists", "--overwrite"),
        (["train", *QUICK_TRAIN, "--out", notes, "--overwrite"], "not part of a checkpoint", "todo.txt"),
        (["train", *QUICK_TRAIN, "--out", tmp_path / "plain.txt", "--overwrite"], "is a file, not a folder"),
        (["train", *QUICK_TRAIN, "--out", tmp_path / "plain.txt" / "run"], "plain.txt is a file"),
        (["train", *QUICK_TRAIN, "--out", read_only], "not writable"),
        (["prune", ckpt, "--data", "digits", "--out", ckpt, "--overwrite"], "is the input"),
        (["prune", ckpt, "--data", "digits", "--out", tmp_path, "--overwrite"], "contains the input"),
        (["prune", ckpt, "--data", "digits", "--out", ckpt / "sub"], "is inside the input"),
        (["export", ckpt, "--out", ckpt / "model.safetensors", "--overwrite"], "inside the input"),
        (["export", ckpt, "--out", ckpt / "model.json", "--overwrite"], "inside the input"),
        (["export", other, "--out", ckpt / "x.onnx"], "inside the checkpoint folder"),
        (["export", ckpt, "--out", tmp_path / "old.onnx"], "already exists", "--overwrite"),
        (["export", ckpt, "--out", notes, "--overwrite"], "is a folder, not a file"),
        (["export", ckpt, "--format", "sparse", "--out", read_only], "not writable"),
        (["demo", "--out", demo, "--epochs", "1"], "baseline already exists", "--overwrite"),
    ]
    before = folder_state(tmp_path)
    with no_work_allowed(monkeypatch):
        for args, *needles in cases:
            code, _, err = run_cli(args, capsys)
            assert_clear_error(code, err, *needles)
    assert folder_state(tmp_path) == before
    assert not os.path.lexists(read_only)

    # With --overwrite an existing checkpoint is replaced, whole.
    old_digest = weights_digest(ckpt)
    code, _, err = run_cli(["train", *QUICK_TRAIN, "--out", ckpt, "--overwrite"], capsys)
    assert code == 0, err
    from edgeprune.models import load_checkpoint

    _, meta = load_checkpoint(ckpt)
    assert weights_digest(ckpt) != old_digest and meta.training["epochs"] == 1
    assert sorted(os.listdir(ckpt)) == ["model.json", "model.safetensors"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # nothing left beside it


# --- 8. atomic writes: a killed writer leaves the old result or the new one, never a mix ---------

CHECKPOINT_WRITER = """
import hashlib, json, os, random, signal, sys, time
import torch
torch.set_num_threads(1)
import edgeprune.outputs
from edgeprune.models import CheckpointMeta, create_model, save_checkpoint
target, trials, rng = sys.argv[1], int(sys.argv[2]), random.Random(int(sys.argv[3]))
variants = []
for seed, name in ((1, "b"), (0, "a")):
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 10, width_mult=0.25).eval()
    meta = CheckpointMeta("mobilenet_v2", [str(d) for d in range(10)], 8, [0.5] * 3, [0.25] * 3,
                          width_mult=0.25, extra={"variant": name})
    variants.append((model, meta))

def kill_after(calls, real):
    # The hook: SIGKILL this writer right after its n-th rename of any kind.
    def renamed(*args, **kwargs):
        result = real(*args, **kwargs)
        calls[0] -= 1
        if calls[0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return renamed

found = []
for trial in range(trials):
    hook, delay = trial % 2 == 1, rng.uniform(0.0, 0.15)
    calls = [rng.randint(1, 3)]
    pid = os.fork()  # a fresh writer each trial, without paying for torch's import again
    if pid == 0:
        try:
            if hook:
                os.rename, os.replace = kill_after(calls, os.rename), kill_after(calls, os.replace)
                edgeprune.outputs._renameat2 = kill_after(calls, edgeprune.outputs._renameat2)
            i = trial
            while True:
                save_checkpoint(*variants[i % 2], target, overwrite=True)
                i += 1
        finally:
            os._exit(1)
    if not hook:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)  # anywhere in a save
    os.waitpid(pid, 0)
    with open(os.path.join(target, "model.json")) as f:
        variant = json.load(f)["extra"]["variant"]
    with open(os.path.join(target, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    found.append({"trial": trial, "variant": variant, "digest": digest,
                  "entries": sorted(os.listdir(target))})
print(json.dumps(found))
"""


def test_a_checkpoint_writer_killed_at_random_points_leaves_a_whole_checkpoint(tmp_path, capsys):
    target = tiny_checkpoint(tmp_path / "ckpt", seed=0, variant="a")
    digests = {"a": weights_digest(target), "b": weights_digest(tiny_checkpoint(tmp_path / "b", 1, "b"))}
    # 30 writers, SIGKILLed at random times (even trials) or right after a random one of their
    # renames (odd trials, a hook): what is left is always one save whole.
    done = subprocess.run(python_child(CHECKPOINT_WRITER, target, 30, 1234), capture_output=True,
                          text=True, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert len(found) == 30
    for state in found:
        assert state["entries"] == ["model.json", "model.safetensors"], state
        assert state["digest"] == digests[state["variant"]], f"weights under another save's manifest: {state}"
    assert {s["variant"] for s in found} == {"a", "b"}  # both old and new were seen
    # What a kill leaves besides is only the writers' own uniquely named temporary entries.
    assert all(p in ("ckpt", "b") or p.startswith(".ckpt.tmp-") for p in os.listdir(tmp_path))
    code, out, err = run_cli(["evaluate", target, "--data", "digits", "--threads", "1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n"] > 0


EXPORT_WRITER = """
import importlib, sys, time, torch
torch.set_num_threads(1)
verify = importlib.import_module("edgeprune.export.verify")  # the module, not the function
from edgeprune.workflows.export import export_checkpoint
checkpoint, out, pause = sys.argv[1], sys.argv[2], sys.argv[3] == "pause"
real = verify.verify_onnx
def announced(*args, **kwargs):
    print("verifying", flush=True)  # the parent kills here, mid-verification
    if pause:
        time.sleep(120)
    return real(*args, **kwargs)
verify.verify_onnx = announced
print("ready", flush=True)
export_checkpoint(checkpoint, out, "onnx", overwrite=True)
print("done", flush=True)
"""


@pytest.mark.slow
def test_an_export_killed_while_it_verifies_leaves_the_previous_artifact_and_report(tmp_path):
    import random

    from edgeprune.runtime.classifier import Classifier
    from edgeprune.runtime import metadata as md
    from edgeprune.workflows.export import export_checkpoint, sidecar_path

    old_ckpt = tiny_checkpoint(tmp_path / "old", seed=0)
    new_ckpt = tiny_checkpoint(tmp_path / "new", seed=1)
    out = tmp_path / "model.onnx"
    export_checkpoint(old_ckpt, out, "onnx")
    old = {"artifact": out.read_bytes(), "report": sidecar_path(out).read_bytes()}

    def kill(*, at_line: str | None, delay: float = 0.0) -> None:
        mode = "pause" if at_line == "verifying" else "go"
        child = subprocess.Popen(python_child(EXPORT_WRITER, new_ckpt, out, mode),
                                 stdout=subprocess.PIPE, env=child_env(), text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            if at_line:
                assert child.stdout.readline().strip() == at_line
            time.sleep(delay)
        finally:
            child.kill()
            child.wait(timeout=30)
            child.stdout.close()

    # Killed mid-verification: the previous verified artifact and its report, byte for byte.
    kill(at_line="verifying")
    assert out.read_bytes() == old["artifact"] and sidecar_path(out).read_bytes() == old["report"]
    # Killed at a random point of a whole export: each file is the old one or the new one, whole.
    kill(at_line=None, delay=random.Random(7).uniform(0.5, 4.0))
    new_source = weights_digest(new_ckpt)
    if out.read_bytes() != old["artifact"]:
        assert md.read_metadata(out).raw[md.SOURCE_CHECKPOINT_SHA256] == new_source
    if sidecar_path(out).read_bytes() != old["report"]:
        side = json.loads(sidecar_path(out).read_text())
        assert side["passed"] and side["source_checkpoint_sha256"] == new_source
    clf = Classifier(out, threads=1)  # loads, and answers finitely
    assert np.isfinite(clf.predict(np.zeros((1, 3, 8, 8), np.float32))).all()
    assert {p for p in os.listdir(tmp_path) if not p.startswith(".model.onnx.tmp-")} == {
        "old", "new", "model.onnx", "model.onnx.json"}


def test_two_trainings_to_the_same_out_one_wins_whole_the_other_fails_cleanly(tmp_path):
    from edgeprune.models import load_checkpoint

    out = tmp_path / "run"
    commands = [python_child("from edgeprune.cli import main; main()", "train", *QUICK_TRAIN,
                             "--seed", str(seed), "--out", out) for seed in (1, 2)]
    children = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                                 text=True) for c in commands]
    results = [(lambda out_err, c=c: (c.returncode, *out_err))(c.communicate(timeout=600)) for c in children]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = [seed for seed, (code, _, _) in zip((1, 2), results) if code == 0][0]
    loser_err = " ".join([err for code, _, err in results if code == 2][0].split())
    assert "error:" in loser_err and "Traceback" not in loser_err
    assert "--overwrite" in loser_err
    _, meta = load_checkpoint(out)
    assert meta.split["seed"] == winner  # the winner's manifest, with the weights it was saved with
    assert sorted(os.listdir(out)) == ["model.json", "model.safetensors"]
    assert os.listdir(tmp_path) == ["run"]  # the loser left nothing behind


# --- 9. no silent garbage: non-finite weights and outputs ---------------------------------------


def tiny_onnx(path: Path, *, classes: int = 2, size: int = 8, bias: float = 0.0, **metadata) -> Path:
    """A hand-built classifier graph (global average pool, then a linear layer) with edgeprune
    metadata: `metadata` replaces the defaults (decoded values; None drops a key)."""
    import onnx
    from onnx import TensorProto, helper

    from edgeprune.runtime import metadata as md

    weight = np.arange(classes * 3, dtype=np.float32).reshape(classes, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor("weight", TensorProto.FLOAT, weight.shape, weight.flatten()),
         helper.make_tensor("bias", TensorProto.FLOAT, [classes], [bias] * classes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    values = {md.PRODUCER: "edgeprune", md.FORMAT: "onnx", md.CLASS_NAMES: [f"c{i}" for i in range(classes)],
              md.INPUT_SIZE: size, md.MEAN: [0.5] * 3, md.STD: [0.25] * 3, md.LAYOUT: "NCHW"}
    values.update(metadata)
    props = md.encode({k: v for k, v in values.items() if v is not None})
    props.update({k: v for k, v in metadata.items() if isinstance(v, str) and k in md.JSON_KEYS})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_non_finite_weights_and_outputs_are_never_saved_loaded_or_verified(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file, save_file
    from torch import nn

    from edgeprune.api import export_model
    from edgeprune.export.sparse import write_sparse_arrays
    from edgeprune.export.verify import verify_onnx
    from edgeprune.models import Model, load_checkpoint
    from edgeprune.models.checkpoint import build_manifest

    # Training whose last optimizer step turns weights into NaN (the loss before it was finite):
    # stopped with the tensor named, nothing saved.
    real_step = torch.optim.SGD.step

    def diverging(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", diverging)
        code, _, err = run_cli(["train", *QUICK_TRAIN, "--out", tmp_path / "run"], capsys)
    assert_clear_error(code, err, "training diverged", "features.0.0.weight", "nothing was saved")
    assert not (tmp_path / "run").exists()

    # A checkpoint whose weights hold NaN (a diverged run saved by an older edgeprune, or damage).
    good = tiny_checkpoint(tmp_path / "good")
    bad = tmp_path / "nan-ckpt"
    shutil.copytree(good, bad)
    state = load_file(str(bad / "model.safetensors"))
    state["features.1.conv.0.1.running_var"][3] = float("nan")
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "edgeprune-checkpoint"})
    model, meta = load_checkpoint(good)
    with torch.no_grad():
        model.features[1].conv[0][1].running_var[3] = float("nan")
    write_sparse_arrays(tmp_path / "nan.epsparse", {k: v.numpy() for k, v in model.state_dict().items()},
                        build_manifest(model, meta))
    before = folder_state(tmp_path)
    for args in (["evaluate", bad, "--data", "digits", "--threads", "1"],
                 ["export", bad, "--format", "onnx", "--out", tmp_path / "x.onnx"],
                 ["bench", tmp_path / "nan.epsparse", "--budget", "0.05", "--no-memory"]):
        code, _, err = run_cli(args, capsys)
        assert_clear_error(code, err, "features.1.conv.0.1.running_var", "NaN")
    with pytest.raises(EdgepruneError, match="refusing to export.*features.1.conv.0.1.running_var"):
        export_model(Model(model, meta), tmp_path / "api.onnx")
    assert folder_state(tmp_path) == before

    # The verifier: NaN from either side is an error, never "100% agreement, max diff nan".
    artifact = tiny_onnx(tmp_path / "tiny.onnx")
    reference = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        reference[2].weight.copy_(torch.arange(6.0).reshape(2, 3) / 10)
        reference[2].bias.zero_()
    assert verify_onnx(artifact, reference, None, min_agreement=0.999).passed  # the control
    with torch.no_grad():
        reference[2].bias.fill_(float("nan"))
    with pytest.raises(EdgepruneError, match="the PyTorch model outputs NaN or infinite logits"):
        verify_onnx(artifact, reference, None, min_agreement=0.999)
    with pytest.raises(EdgepruneError, match="output NaN or infinite logits"):
        verify_onnx(tiny_onnx(tmp_path / "nan.onnx", bias=float("nan")), reference, None)


# --- 10. every numeric option is validated before any work ------------------------------------


def test_numeric_options_out_of_range_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from edgeprune.data import DataOptions
    from edgeprune.hardware import set_threads
    from edgeprune.models import create_model
    from edgeprune.pruning import L2Channel, Schedule
    from edgeprune.train import TrainRecipe
    from edgeprune.workflows.prune import PruneJob

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    prune = ["prune", ckpt, "--data", "digits", "--out", out]
    cases = [
        (["train", *QUICK_TRAIN, "--lr", "nan", "--out", out], "learning rate (--lr)", "nan"),
        (["train", *QUICK_TRAIN, "--lr", "inf", "--out", out], "learning rate (--lr)", "inf"),
        (["train", *QUICK_TRAIN, "--weight-decay", "-0.1", "--out", out], "weight decay"),
        (["train", *QUICK_TRAIN, "--label-smoothing", "1", "--out", out], "label smoothing"),
        (["train", *QUICK_TRAIN[:-4], "--threads", "1", "--width-mult", "0", "--out", out], "width multiplier"),
        (["train", *QUICK_TRAIN[:-4], "--threads", "1", "--width-mult", "nan", "--out", out], "width multiplier"),
        ([*prune, "--target", "nan"], "strictly between 0 and 1", "nan"),
        ([*prune, "--max-drop", "inf"], "max drop", "inf"),
        ([*prune, "--max-layer-sparsity", "nan"], "max_layer_sparsity"),
        ([*prune, "--lr", "-1"], "learning rate"),
        (["export", ckpt, "--format", "onnx-int8", "--data", "digits", "--max-drop", "inf",
          "--out", tmp_path / "q.onnx"], "max drop", "inf"),
        (["export", ckpt, "--opset", "12", "--out", tmp_path / "q.onnx"], "opset"),
        (["bench", ckpt, "--budget", "nan"], "time budget"),
        (["bench", ckpt, "--budget", "0"], "time budget"),
        (["demo", "--out", tmp_path / "demo", "--seed", "-1"], "seed"),
    ]
    before = folder_state(tmp_path)
    with no_work_allowed(monkeypatch):
        for args, *needles in cases:
            code, _, err = run_cli(args, capsys)
            assert_clear_error(code, err, *needles)
    # Batch norm cannot train on batches of one image: refused before the first step.
    code, _, err = run_cli(["train", *QUICK_TRAIN, "--batch-size", "1", "--out", out], capsys)
    assert_clear_error(code, err, "batch size 1", "batch-norm")
    assert folder_state(tmp_path) == before

    # The Python API gets the same checks from the same table.
    config, schedule, recipe = L2Channel(target=0.5), Schedule("oneshot", 1), TrainRecipe(epochs=1)
    api_cases = [
        (lambda: TrainRecipe(epochs=1, seed=-1), r"seed .* got -1"),
        (lambda: TrainRecipe(epochs=1, lr=float("nan")), r"learning rate .* got nan"),
        (lambda: TrainRecipe(epochs=2.5), r"epochs .* must be an integer"),
        (lambda: TrainRecipe(epochs=1, batch_size=True), r"batch size .* got True"),
        (lambda: DataOptions(seed=-1), r"--seed must be in \[0, "),
        (lambda: create_model("mobilenet_v2", 10, width_mult=-1.0), "width multiplier"),
        (lambda: set_threads(0), r"threads .* got 0"),
        (lambda: L2Channel(target=0.5, round_to=0), "round_to"),
        (lambda: L2Channel(target=float("inf")), "target"),
        (lambda: PruneJob(config, schedule, recipe, max_drop=float("inf")), "max drop"),
        (lambda: PruneJob(config, schedule, recipe, seed=-3), "seed"),
        (lambda: Schedule("linear", 2.5), "steps"),
    ]
    for make, message in api_cases:
        with pytest.raises(EdgepruneError, match=message):
            make()


# --- 11. the runtime checks an artifact's metadata against its graph ----------------------------


def run_runtime(args: list, capsys) -> tuple[int, str, str]:
    """`python -m edgeprune.runtime ARGS` in-process (the torch-free CLI)."""
    from edgeprune.runtime.__main__ import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, " ".join(captured.err.split())


def test_runtime_refuses_metadata_that_does_not_fit_the_graph(tmp_path, capsys):
    from edgeprune.runtime import metadata as md
    from edgeprune.runtime.classifier import Classifier

    image = tmp_path / "img.png"
    write_image(image, seed=5, size=8)
    good = tiny_onnx(tmp_path / "good.onnx")
    predictions = Classifier(good).classify_images([image])  # the control
    assert predictions[0].label in ("c0", "c1") and 0.5 <= predictions[0].confidence <= 1

    cases = {
        "string-names": ({md.CLASS_NAMES: "01"}, "must be a JSON list of non-empty strings"),
        "number-names": ({md.CLASS_NAMES: [0, 1]}, md.CLASS_NAMES),
        "empty-name": ({md.CLASS_NAMES: ["a", " "]}, "non-empty strings"),
        "one-class": ({md.CLASS_NAMES: ["a"]}, "at least 2 distinct classes"),
        "more-names": ({md.CLASS_NAMES: ["a", "b", "c"]}, "names 3 classes, but the graph outputs 2"),
        "other-size": ({md.INPUT_SIZE: 16}, "says 16"),
        "size-word": ({md.INPUT_SIZE: "eight"}, md.INPUT_SIZE),
        "short-mean": ({md.MEAN: [0.5, 0.5]}, "list of 3 numbers"),
        "nan-mean": ({md.MEAN: [0.5, float("nan"), 0.5]}, "finite number"),
        "zero-std": ({md.STD: [0.25, 0.0, 0.25]}, "positive"),
        "inf-std": ({md.STD: [0.25, float("inf"), 0.25]}, "finite number"),
        "no-names": ({md.CLASS_NAMES: None}, "lacks edgeprune metadata"),
    }
    for name, (change, _) in cases.items():
        tiny_onnx(tmp_path / f"{name}.onnx", **change)
    tiny_onnx(tmp_path / "nan-logits.onnx", bias=float("nan"))
    before = folder_state(tmp_path)
    for name, (_, problem) in cases.items():
        code, _, err = run_runtime(["classify", tmp_path / f"{name}.onnx", image], capsys)
        assert_clear_error(code, err, f"{name}.onnx", problem)
    code, _, err = run_runtime(["classify", tmp_path / "nan-logits.onnx", image], capsys)
    assert_clear_error(code, err, "nan-logits.onnx", "NaN or infinite logits", "no prediction")
    code, _, err = run_cli(["bench", tmp_path / "more-names.onnx", "--budget", "0.05", "--no-memory"], capsys)
    assert_clear_error(code, err, "names 3 classes")
    assert folder_state(tmp_path) == before
