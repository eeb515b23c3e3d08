"""Check an exported artifact against the PyTorch model it came from, on real test images.

Both sides get the very same normalised float32 batch (made by the runtime's own preprocessing),
so the comparison isolates the artifact: top-1 agreement, max / mean absolute logit difference,
and, with labels, each side's accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.preprocess import normalize

FP32_MIN_AGREEMENT = 0.999  # the bar for FP32 artifacts
INT8_MAX_DROP = 1.0  # default INT8 gate: test accuracy at most 1 percentage point below FP32's
RANDOM_INPUTS_WARNING = (
    "verified on random inputs only (no --data): the artifact runs and matches PyTorch on noise, "
    "but nothing was checked on real images"
)


@dataclass
class VerificationReport:
    artifact: str
    format: str
    n_images: int
    real_images: bool  # False: random inputs, which prove the graph but not the answers on data
    data: str | None
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    artifact_accuracy: float | None = None
    reference_accuracy: float | None = None
    min_agreement: float | None = None  # the bar it had to pass (None: reported only)
    weights_identical: bool | None = None  # sparse: every restored tensor equals the original bit for bit
    max_accuracy_drop: float | None = None  # accuracy gate, percentage points (None: no gate)
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy_drop(self) -> float | None:
        """Reference minus artifact test accuracy, in percentage points (None without labels)."""
        if self.artifact_accuracy is None or self.reference_accuracy is None:
            return None
        return 100.0 * (self.reference_accuracy - self.artifact_accuracy)

    @property
    def accuracy_ok(self) -> bool:
        if self.max_accuracy_drop is None:
            return True
        # A gate without measured accuracies (no labels) cannot be passed.
        # 1e-9: accuracies are image fractions, so only float noise can sit at the bar itself.
        return self.accuracy_drop is not None and self.accuracy_drop <= self.max_accuracy_drop + 1e-9

    @property
    def agreement_ok(self) -> bool:
        return self.min_agreement is None or self.top1_agreement >= self.min_agreement

    @property
    def passed(self) -> bool:
        return self.agreement_ok and self.accuracy_ok and self.weights_identical is not False

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop, "passed": self.passed}

    def summary(self) -> str:
        source = f"{self.n_images} real test images" if self.real_images else f"{self.n_images} RANDOM inputs"
        text = (
            f"{self.format} vs PyTorch on {source}: top-1 agreement {self.top1_agreement:.4%}, "
            f"max |logit diff| {self.max_abs_diff:.3g}"
        )
        if self.artifact_accuracy is not None:
            text += f", accuracy {self.artifact_accuracy:.4f} (PyTorch {self.reference_accuracy:.4f})"
        if self.max_accuracy_drop is not None and self.accuracy_drop is not None:
            text += f", drop {self.accuracy_drop:.2f} points (max {self.max_accuracy_drop:g})"
        if self.weights_identical is not None:
            text += ", weights bit-identical" if self.weights_identical else ", WEIGHTS DIFFER"
        return text


def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    model = model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i : i + batch_size]).to(device)).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def compare_logits(
    artifact_logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray | None
) -> dict:
    if artifact_logits.shape != reference_logits.shape:
        raise EdgepruneError(
            f"artifact outputs {artifact_logits.shape} do not match PyTorch's {reference_logits.shape}"
        )
    # NaN compares unequal to everything and argmax picks index 0 for it: two all-NaN outputs
    # would "agree 100%" with a "max diff" of nan. Nothing non-finite is ever verified.
    for side, logits in (("the artifact", artifact_logits), ("the PyTorch model", reference_logits)):
        broken = ~np.isfinite(logits)
        if broken.any():
            rows = np.unique(np.nonzero(broken)[0])
            raise EdgepruneError(
                f"{side} outputs NaN or infinite logits (tensor 'logits') for {len(rows)} of "
                f"{len(logits)} verification inputs (first: input {int(rows[0])}): the model is "
                "broken (diverged weights?); nothing was verified"
            )
    a_pred, r_pred = artifact_logits.argmax(1), reference_logits.argmax(1)
    diff = np.abs(artifact_logits.astype(np.float64) - reference_logits.astype(np.float64))
    out = {
        "top1_agreement": float((a_pred == r_pred).mean()),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }
    if labels is not None:
        out["artifact_accuracy"] = float((a_pred == labels).mean())
        out["reference_accuracy"] = float((r_pred == labels).mean())
    return out


def _inputs(images: np.ndarray | None, n_random: int, input_size: int, mean, std) -> tuple[np.ndarray, bool]:
    if images is not None and len(images):
        if images.dtype != np.uint8:
            raise EdgepruneError(f"verification images must be decoded uint8 (N, 3, S, S), got {images.dtype}")
        return normalize(images, mean, std), True
    rng = np.random.default_rng(0)
    return rng.standard_normal((n_random, 3, input_size, input_size), dtype=np.float32), False


def verify_onnx(
    path: str | Path,
    model: nn.Module,
    images: np.ndarray | None,
    *,
    labels: np.ndarray | None = None,
    data_name: str | None = None,
    min_agreement: float | None = None,
    max_accuracy_drop: float | None = None,
    threads: int = 1,
    n_random: int = 64,
) -> VerificationReport:
    """Run the ONNX artifact (ONNX Runtime) and the model (PyTorch) on the same inputs.

    images: decoded uint8 (N, 3, S, S) test images; None falls back to `n_random` random inputs,
    and the report says so (real_images=False). max_accuracy_drop: the largest allowed drop of
    the artifact's test accuracy below the model's, in percentage points (needs labels)."""
    from edgeprune.runtime.classifier import Classifier

    from edgeprune.runtime.metadata import is_openvino_ir

    clf = Classifier(path, threads=threads, runtime="openvino" if is_openvino_ir(path) else "onnxruntime")
    meta = clf.metadata
    x, real = _inputs(images, n_random, meta.input_size, meta.mean, meta.std)
    artifact_logits = np.concatenate([clf.predict(x[i : i + 64]) for i in range(0, len(x), 64)])
    reference = torch_logits(model, x)
    stats = compare_logits(artifact_logits, reference, labels if real else None)
    notes = [] if real else [RANDOM_INPUTS_WARNING]
    return VerificationReport(
        artifact=str(path), format=meta.format, n_images=len(x), real_images=real,
        data=data_name if real else None, min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop, notes=notes, **stats,
    )


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (so -0.0 vs 0.0 and NaN payloads count as differences)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.detach().cpu().contiguous().numpy().tobytes() == b.detach().cpu().contiguous().numpy().tobytes()


def verify_sparse(
    path: str | Path,
    model: nn.Module,
    images: np.ndarray | None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    labels: np.ndarray | None = None,
    data_name: str | None = None,
    n_random: int = 64,
) -> VerificationReport:
    """Reload the sparse file, check every tensor is bit-identical, and compare outputs."""
    from edgeprune.export.sparse import load_sparse

    restored, meta = load_sparse(path)
    original = model.state_dict()
    loaded = restored.state_dict()
    identical = set(original) == set(loaded) and all(
        same_bits(original[k], loaded[k]) for k in original
    )
    x, real = _inputs(images, n_random, meta.input_size, mean, std)
    stats = compare_logits(torch_logits(restored, x), torch_logits(model, x), labels if real else None)
    notes = [] if real else [RANDOM_INPUTS_WARNING]
    return VerificationReport(
        artifact=str(path), format="sparse", n_images=len(x), real_images=real,
        data=data_name if real else None, min_agreement=1.0, weights_identical=identical,
        notes=notes, **stats,
    )


def verify(
    artifact: str | Path,
    model: nn.Module,
    images: np.ndarray | None,
    *,
    labels: np.ndarray | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data_name: str | None = None,
    min_agreement: float | None = None,
    max_accuracy_drop: float | None = None,
    threads: int = 1,
) -> VerificationReport:
    """Verify an `.onnx` or sparse artifact against `model` (dispatches on the file's kind).

    ONNX artifacts normalise with the mean/std in their metadata; sparse files need mean/std."""
    from edgeprune.export.sparse import is_sparse_file

    if is_sparse_file(artifact):
        if mean is None or std is None:
            raise EdgepruneError("verifying a sparse file needs the model's mean and std")
        return verify_sparse(artifact, model, images, mean=mean, std=std, labels=labels,
                             data_name=data_name)
    return verify_onnx(artifact, model, images, labels=labels, data_name=data_name,
                       min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop,
                       threads=threads)
