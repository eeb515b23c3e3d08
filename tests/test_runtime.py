"""The torch-free runtime: imports, classifies a real JPEG and benches with torch unavailable;
`edgeprune bench` puts a checkpoint and an ONNX artifact side by side, on every installed
backend; `--compare` lines up two devices' CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.models import load_checkpoint
from edgeprune.runtime.backends import available_backends
from edgeprune.runtime.bench import COLUMNS, read_csv
from edgeprune.runtime.measure import cpu_isa
from edgeprune.runtime.preprocess import normalize

# Makes `import torch` (and torchvision) fail in the child, as on a device without them.
from helpers import run_blocked as run_without_torch  # noqa: E402


def test_runtime_imports_without_torch():
    done = run_without_torch(
        "import edgeprune.runtime, edgeprune.runtime.bench, edgeprune.runtime.data, "
        "edgeprune.runtime.__main__\n"
        "from edgeprune.runtime import Classifier\n"
        "assert sys.modules.get('torch') is None\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('torch unavailable')\n"
    )
    assert "torch unavailable" in done.stdout


def test_classifies_a_real_jpeg_without_torch(trained_digits_onnx, cifar_jpeg):
    """Same logits as PyTorch on the pixels the data pipeline decodes from the same file."""
    from edgeprune.data.decode import decode_files

    ckpt, onnx_path = trained_digits_onnx
    jpeg = sorted((cifar_jpeg / "test" / "cat").glob("*.jpg"))[0]
    done = run_without_torch(
        "import json\n"
        "from edgeprune.runtime import Classifier\n"
        "clf = Classifier(sys.argv[1], threads=1)\n"
        "label, confidence, index = clf.classify_images([sys.argv[2]])[0]\n"
        "logits = clf.predict(clf.preprocess([sys.argv[2]]))[0].tolist()\n"
        "print(json.dumps({'label': label, 'confidence': confidence, 'logits': logits}))\n",
        str(onnx_path), str(jpeg),
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    model, meta = load_checkpoint(ckpt)
    pixels = decode_files([str(jpeg)], 32).images
    with torch.inference_mode():
        expected = model(torch.from_numpy(normalize(pixels, meta.mean, meta.std)))[0]
    assert expected.std() > 0.5, "near-zero logits: agreeing with them proves nothing"
    np.testing.assert_allclose(out["logits"], expected.numpy(), atol=1e-3, rtol=1e-4)
    assert out["label"] == meta.class_names[int(np.argmax(out["logits"]))]
    assert 0.0 < out["confidence"] <= 1.0


def _image_tree(digits32, root: Path, per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """TREE/test/<class>/<n>.png from digits32 test images (already 32x32, so decoding is exact)."""
    images, labels = digits32.test.images.numpy(), digits32.test.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    for i in keep:
        folder = root / "test" / digits32.class_names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].transpose(1, 2, 0)).save(folder / f"{i}.png")
    return images[keep], labels[keep]


def test_runtime_bench_without_torch_and_compare(trained_digits_onnx, digits32, tmp_path):
    ckpt, onnx_path = trained_digits_onnx
    images, labels = _image_tree(digits32, tmp_path / "tree")
    edge_csv = tmp_path / "edge.csv"
    run_without_torch(
        "import runpy\n"
        "sys.argv = ['edgeprune.runtime'] + sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module('edgeprune.runtime', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert sys.modules.get('torch') is None\n",
        "bench", str(onnx_path), "--data", str(tmp_path / "tree"), "--csv", str(edge_csv),
        "--budget", "0.2", "--device-label", "edge-device",
    )
    rows = read_csv(edge_csv)
    assert [r["runtime"] for r in rows] == available_backends()  # default: every installed one
    assert list(rows[0]) == COLUMNS
    model, meta = load_checkpoint(ckpt)
    with torch.inference_mode():
        logits = model(torch.from_numpy(normalize(images, meta.mean, meta.std)))
    assert logits.std() > 0.5  # a trained model: ties cannot make the accuracies agree
    pred = logits.argmax(1).numpy()
    for row in rows:  # accuracy measured on each backend
        assert row["artifact"] == "model.onnx" and row["format"] == "onnx"
        assert row["device"] == "edge-device" and row["n_images"] == 30 and row["isa"] == cpu_isa()
        assert row["software"].startswith({"onnxruntime": "ort", "openvino": "openvino"}[row["runtime"]])
        assert 0 < row["b1_median_ms"] <= row["b1_p90_ms"] and 0 < row["b64_median_ms"]
        assert row["peak_memory_bytes"] > 0 and row["macs"] > 0 and row["gmacs_b1"] > 0
        assert row["accuracy"] == pytest.approx(float((pred == labels).mean()))
    row = rows[0]

    # The same artifact benched "on another device", then the two side by side.
    server_csv = tmp_path / "server.csv"
    server_row = dict(row, device="server", b1_median_ms=row["b1_median_ms"] / 4)
    from edgeprune.runtime.bench import write_csv

    write_csv([server_row], server_csv)
    done = run_without_torch(
        "from edgeprune.runtime.__main__ import run\n"
        "raise SystemExit(run(['compare', sys.argv[1], sys.argv[2]]))\n",
        str(edge_csv), str(server_csv),
    )
    assert "A: edge-device" in done.stdout and "B: server" in done.stdout
    assert "0.25x" in done.stdout  # b1 latency ratio B/A


def _cli(args: list[str]) -> int:
    import edgeprune.cli.commands_export  # noqa: F401 - registers export/bench on the app
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.mark.slow  # benches a checkpoint and its ONNX file in full (~60 s on 2 cores)
def test_bench_checkpoint_and_onnx_side_by_side(trained_digits_onnx, tmp_path, capsys):
    ckpt, onnx_path = trained_digits_onnx
    out_csv = tmp_path / "bench.csv"
    code = _cli(["bench", str(ckpt), str(onnx_path), "--data", "digits", "--threads", "1",
                 "--budget", "0.2", "--csv", str(out_csv), "--device-label", "server"])
    assert code == 0
    rows = read_csv(out_csv)
    installed = available_backends()
    assert [(r["artifact"], r["runtime"]) for r in rows] == [
        (ckpt.name, "torch-eager"), *((ckpt.name, b) for b in installed),
        *(("model.onnx", b) for b in installed)]
    accuracies = {r["accuracy"] for r in rows}
    assert len(accuracies) == 1 and None not in accuracies  # same model, same test images
    assert all(r["n_images"] == 360 and r["b64_median_ms"] > 0 and r["gmacs_b64"] > 0 for r in rows)
    assert all(r["isa"] == cpu_isa() for r in rows)
    assert all(r["peak_memory_bytes"] > 0 for r in rows)
    assert rows[0]["file_bytes"] == (ckpt / "model.safetensors").stat().st_size
    assert "bench on server" in " ".join(capsys.readouterr().out.split())

    with out_csv.open() as f:
        header = next(csv.reader(f))
    assert header[: len(COLUMNS)] == COLUMNS

    other = tmp_path / "other.csv"
    from edgeprune.runtime.bench import write_csv

    write_csv([dict(r, device="edge") for r in rows], other)
    assert _cli(["bench", "--compare", str(out_csv), str(other), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["device_a"] == "server" and shown["device_b"] == "edge"
    assert len(shown["rows"]) == len(rows) and all(r["b1_median_ms_ratio"] == 1.0 for r in shown["rows"])


def test_bench_rejects_unknown_artifacts(tmp_path, capsys):
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"123")
    assert _cli(["bench", str(bogus)]) == 2
    assert "not a checkpoint folder" in " ".join(capsys.readouterr().err.split())
    assert _cli(["bench", str(tmp_path / "missing.onnx")]) == 2


def test_edgeprune_command_benches_onnx_with_torch_unavailable(trained_digits_onnx, tmp_path):
    """With the runtime install alone (no torch), the `edgeprune` command itself starts and
    `edgeprune bench` measures an ONNX artifact; commands that need torch are not reached."""
    _, onnx_path = trained_digits_onnx
    csv_path = tmp_path / "edge.csv"
    done = run_without_torch(
        "import sys\n"
        "from edgeprune.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "assert sys.modules.get('torch') is None\n",
        "bench", str(onnx_path), "--no-memory", "--budget", "0.2", "--csv", str(csv_path),
    )
    rows = read_csv(csv_path)
    assert [r["runtime"] for r in rows] == available_backends()
    assert all(r["b1_median_ms"] > 0 for r in rows)
    assert "torch is not installed" in done.stderr
