"""Run exported edgeprune ONNX artifacts with onnxruntime (or OpenVINO), numpy and pillow only: no torch.

`pip install edgeprune[runtime]` is meant to fit a Raspberry Pi-class device; nothing in this
package imports torch (a test runs it with torch made unimportable).

    from edgeprune.runtime import Classifier
    clf = Classifier("model-int8.onnx", threads=2)  # runtime="openvino" or "auto" too
    label, confidence, _ = clf.classify_images(["part.jpg"])[0]

`python -m edgeprune.runtime classify|bench|compare ...` offers the same without Typer/rich.
"""

from edgeprune.runtime.backends import Backend, available_backends, make_backend, open_backend
from edgeprune.runtime.bench import bench_onnx, compare, read_csv, write_csv
from edgeprune.runtime.classifier import Classifier, Prediction, softmax
from edgeprune.runtime.metadata import ArtifactMetadata, read_metadata
from edgeprune.runtime.measure import cpu_device_label, cpu_isa, preferred_channel_multiple, time_round_robin
from edgeprune.runtime.preprocess import decode_image, decode_images, normalize
from edgeprune.runtime.sessions import ort_session

__all__ = [
    "ArtifactMetadata",
    "Backend",
    "Classifier",
    "Prediction",
    "available_backends",
    "bench_onnx",
    "compare",
    "cpu_device_label",
    "cpu_isa",
    "decode_image",
    "decode_images",
    "make_backend",
    "normalize",
    "open_backend",
    "ort_session",
    "preferred_channel_multiple",
    "read_csv",
    "read_metadata",
    "softmax",
    "time_round_robin",
    "write_csv",
]
