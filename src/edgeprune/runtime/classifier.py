"""Run an exported edgeprune ONNX artifact with ONNX Runtime or OpenVINO: numpy in, logits or labels out."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.backends import open_backend
from edgeprune.runtime.metadata import ArtifactMetadata, check_graph
from edgeprune.runtime.preprocess import ImageLike, decode_images, normalize


class Prediction(NamedTuple):
    label: str
    confidence: float  # softmax probability of the label
    index: int


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """An edgeprune ONNX artifact, ready to classify images.

    >>> clf = Classifier("model.onnx", threads=1)
    >>> clf.classify_images(["part.jpg"])  # [Prediction(label='ok', confidence=0.97, index=0)]

    runtime: "onnxruntime" (default), "openvino", or "auto": the faster of the installed backends
    for this file on this device, measured once (a short round-robin) and cached, see
    `edgeprune.runtime.backends.choose_backend`. `clf.runtime` says which one runs it.
    """

    def __init__(self, path: str | Path, *, runtime: str = "onnxruntime", threads: int | None = 1,
                 providers: Sequence[str] | None = None):
        self.path = Path(path)
        self.backend, self.runtime_choice = open_backend(self.path, runtime, threads=threads,
                                                         providers=providers)
        self.runtime = self.backend.name
        self.session = getattr(self.backend, "session", None)  # ONNX Runtime's, when it runs it
        props = self.backend.metadata_props()
        self.metadata = ArtifactMetadata.from_props(props, source=str(self.path))
        check_graph(self.metadata, *self.backend.io_shapes(), str(self.path))
        self.threads = threads

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits for an already-normalised float32 batch (N, 3, S, S)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        size = self.metadata.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise EdgepruneError(
                f"{self.path.name} takes (N, 3, {size}, {size}) float32 input, got {tuple(x.shape)}"
            )
        logits = self.backend.run(x)
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise EdgepruneError(
                f"{self.path.name} output {tuple(logits.shape)} scores, but its metadata names "
                f"{len(self.class_names)} classes: the metadata does not belong to this graph"
            )
        broken = ~np.isfinite(logits)
        if broken.any():  # softmax would turn these into NaN confidences
            rows = np.unique(np.nonzero(broken)[0])
            raise EdgepruneError(
                f"{self.path.name} output NaN or infinite logits for {len(rows)} of {len(logits)} "
                f"image(s) (first: image {int(rows[0])}): the model is broken (diverged or damaged "
                "weights) or the input holds NaN; no prediction is given"
            )
        return logits

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Paths / PIL images / uint8 arrays -> the normalised float32 batch this model takes."""
        meta = self.metadata
        return normalize(decode_images(images, meta.input_size), meta.mean, meta.std, meta.scale)

    def predict_uint8(self, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Logits for decoded uint8 images (N, 3, S, S), normalised with the artifact's mean/std."""
        meta = self.metadata
        outs = [
            self.predict(normalize(images_uint8[i : i + batch_size], meta.mean, meta.std, meta.scale))
            for i in range(0, len(images_uint8), batch_size)
        ]
        if not outs:
            return np.zeros((0, len(meta.class_names)), dtype=np.float32)
        return np.concatenate(outs)

    def classify_images(self, images: Sequence[ImageLike] | ImageLike, batch_size: int = 64) -> list[Prediction]:
        """Top-1 label and its softmax confidence for each image. `images`: a list of paths, PIL
        images or arrays; one path or PIL image alone (a list of one prediction); or a numpy batch
        (N, H, W, 3) / (N, 3, H, W)."""
        from PIL import Image

        if isinstance(images, (str, Path, Image.Image)):
            images = [images]  # a str is iterable too: its characters must not become "images"
        elif isinstance(images, np.ndarray) and images.ndim != 4:
            raise EdgepruneError(
                f"classify_images takes a list of images or a batch array (N, H, W, 3) / (N, 3, H, W), "
                f"got an array of shape {tuple(images.shape)}: wrap one image in a list ([image])")
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            probs = softmax(self.predict(self.preprocess(images[start : start + batch_size])))
            for row in probs:
                idx = int(row.argmax())
                results.append(Prediction(self.class_names[idx], float(row[idx]), idx))
        return results
