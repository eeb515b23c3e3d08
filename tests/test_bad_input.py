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
