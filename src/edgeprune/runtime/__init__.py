"""Run exported edgeprune ONNX artifacts with onnxruntime, numpy and pillow only: no torch.

`pip install edgeprune[runtime]` is meant to fit a Raspberry Pi-class device; nothing in this
package imports torch (a test runs it with torch made unimportable).

    from edgeprune.runtime import Classifier
    clf = Classifier("model-int8.onnx", threads=2)
    label, confidence, _ = clf.classify_images(["part.jpg"])[0]

`python -m edgeprune.runtime classify|bench|compare ...` offers the same without Typer/rich.
"""

from edgeprune.runtime.bench import bench_onnx, compare, read_csv, write_csv
from edgeprune.runtime.classifier import Classifier, Prediction, make_session, softmax
from edgeprune.runtime.metadata import ArtifactMetadata, read_metadata
from edgeprune.runtime.measure import cpu_device_label
from edgeprune.runtime.preprocess import decode_image, decode_images, normalize

__all__ = [
    "ArtifactMetadata",
    "Classifier",
    "Prediction",
    "bench_onnx",
    "compare",
    "cpu_device_label",
    "decode_image",
    "decode_images",
    "make_session",
    "normalize",
    "read_csv",
    "read_metadata",
    "softmax",
    "write_csv",
]
