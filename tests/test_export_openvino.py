"""INT8 for OpenVINO (`export --format openvino-int8`: NNCF post-training quantization, OpenVINO
IR) and what ONNX Runtime really runs for the QDQ file (`optimized_graph`), on the shared trained
digits MobileNetV2 at 32x32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.export.int8 import optimized_graph
from edgeprune.runtime.metadata import ir_bin_path
from edgeprune.models import load_checkpoint
from edgeprune.runtime import metadata as md
from edgeprune.runtime.classifier import Classifier
from edgeprune.runtime.preprocess import normalize
from edgeprune.workflows import export_checkpoint

from helpers import run_blocked

CALIBRATION = 100


@pytest.fixture(scope="module")
def ov_int8(trained_digits_checkpoint, digits32, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "model.xml"
    return export_checkpoint(trained_digits_checkpoint, out, "openvino-int8", data=digits32,
                             calibration_images=CALIBRATION, max_drop=3.0)


@pytest.mark.slow  # NNCF and QDQ INT8 exports (~170 s and ~100 s on 2 cores)
def test_openvino_int8_is_an_ir_verified_gated_and_timed(ov_int8, trained_digits_checkpoint, digits32):
    xml = ov_int8.path
    assert xml.suffix == ".xml" and ir_bin_path(xml).is_file() and ov_int8.report_path.is_file()
    report = ov_int8.verification
    assert report.real_images and report.n_images == len(digits32.test.labels)
    gate = ov_int8.info["accuracy_gate"]
    assert gate["passed"] and gate["drop_points"] <= 3.0 and report.reference_accuracy >= 0.5
    side = json.loads(ov_int8.report_path.read_text())
    assert side["weights_file"] == ir_bin_path(xml).name and side["format"] == "openvino-int8"
    assert side["file_bytes"] == xml.stat().st_size + ir_bin_path(xml).stat().st_size
    assert "nncf" in side["calibration"]["method"] and side["calibration"]["images"] == CALIBRATION
    # Measured against the FP32 file and ONNX Runtime's QDQ file, both on OpenVINO.
    speed = ov_int8.info["openvino_int8_speed"]
    assert min(speed["fp32_b1_ms"], speed["qdq_b1_ms"], speed["ir_b1_ms"]) > 0
    assert speed["ir_beats_qdq"] == (speed["ir_b1_ms"] < speed["qdq_b1_ms"])
    # The IR carries edgeprune's metadata and runs through the Classifier on OpenVINO.
    clf = Classifier(xml, runtime="openvino", threads=1)
    assert clf.metadata.format == "openvino-int8" and clf.class_names == list(digits32.class_names)
    assert md.read_metadata(xml).input_size == 32
    model, meta = load_checkpoint(trained_digits_checkpoint)
    x = normalize(digits32.test.images.numpy()[:64], meta.mean, meta.std)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy().argmax(1)
    assert (clf.predict(x).argmax(1) == expected).mean() >= 0.85
    assert Classifier(xml, runtime="auto").runtime == "openvino"  # the only backend for an IR


@pytest.mark.slow  # NNCF and QDQ INT8 exports (~170 s and ~100 s on 2 cores)
def test_openvino_ir_runs_without_torch_and_refuses_onnxruntime(ov_int8, digits32):
    npy = Path(ov_int8.path).with_name("one.npy")
    np.save(npy, digits32.test.images.numpy()[0])
    done = run_blocked(
        "import numpy as np\nfrom edgeprune.runtime import Classifier\n"
        "clf = Classifier(sys.argv[1], runtime='openvino')\n"
        "print(clf.classify_images([np.load(sys.argv[2])])[0].label)\n",
        str(ov_int8.path), str(npy))
    assert done.stdout.strip().splitlines()[-1] in digits32.class_names
    with pytest.raises(EdgepruneError, match="OpenVINO IR: it runs on OpenVINO only"):
        Classifier(ov_int8.path, runtime="onnxruntime")


@pytest.mark.slow  # NNCF and QDQ INT8 exports (~170 s and ~100 s on 2 cores)
def test_bench_runs_an_ir_on_openvino_only(ov_int8, digits32):
    from edgeprune.workflows import bench_artifacts

    xml = Path(ov_int8.path)
    rows = bench_artifacts([xml], data=digits32, threads=1, budget_s=0.2, memory=False)
    assert [r["runtime"] for r in rows] == ["openvino"]  # never offered to ONNX Runtime
    assert rows[0]["file_bytes"] == xml.stat().st_size + ir_bin_path(xml).stat().st_size
    assert rows[0]["accuracy"] >= ov_int8.verification.reference_accuracy - 0.03
    assert rows[0]["b1_median_ms"] > 0
    with pytest.raises(EdgepruneError, match="only the openvino runtime reads"):
        bench_artifacts([xml], runtimes="onnxruntime", memory=False)


def test_openvino_int8_needs_an_xml_name(trained_digits_checkpoint, digits32, tmp_path):
    with pytest.raises(EdgepruneError, match="name the file MODEL.xml"):
        export_checkpoint(trained_digits_checkpoint, tmp_path / "m.onnx", "openvino-int8", data=digits32)


@pytest.mark.slow  # NNCF and QDQ INT8 exports (~170 s and ~100 s on 2 cores)
def test_qdq_file_runs_integer_convolutions_everywhere_after_ort_optimisation(ov_int8, trained_digits_checkpoint,
                                                                             digits32, tmp_path):
    """Depthwise convolutions, the first convolution and the classifier included: the export
    records what stays float (the optimised graph), and here nothing may."""
    result = export_checkpoint(trained_digits_checkpoint, tmp_path / "q.onnx", "onnx-int8", data=digits32,
                               calibration_images=CALIBRATION, max_drop=3.0)
    graph = result.info["optimized_graph"]
    assert graph == {k: v for k, v in optimized_graph(result.path).items() if k != "ops"}
    assert graph["convs"] == 52  # MobileNetV2: 1 + 17 blocks (2-3 convs each) + the last 1x1
    assert graph["float_convs"] == [], f"convolutions left in float: {graph['float_convs']}"
    assert graph["depthwise_integer"] == 17 and graph["depthwise_float"] == 0
    assert graph["first_conv_integer"] is True
    assert [h["integer"] for h in graph["classifier"]] == [True], graph["classifier"]
    assert graph["dequantize_nodes"] <= 2  # the logits out, nothing inside
