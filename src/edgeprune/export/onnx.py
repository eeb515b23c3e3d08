"""FP32 ONNX export with a dynamic batch axis, as one self-contained, checked .onnx file.

Uses the torch.export-based exporter (`dynamo=True`). The legacy TorchScript exporter is faster
but cannot export VGG-16 at small inputs (adaptive_avg_pool2d to 7x7 from a 1x1 map), so one
exporter that handles every supported architecture, pruned or not, wins. That exporter's lowest
implemented opset is 18: asking for less makes it attempt a down-conversion that fails for these
graphs, so lower opsets are refused up front.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 18


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: int,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` (eval mode, float32 NCHW input named `input`, output `logits`) to `path`.

    `metadata` goes into the model's `metadata_props` (strings only). The model's train/eval
    mode is restored afterwards.
    """
    if opset < MIN_OPSET:
        raise EdgepruneError(
            f"ONNX opset {opset} is not supported: the torch.export-based exporter writes "
            f"opset {MIN_OPSET} or newer"
        )
    bad = {k: v for k, v in (metadata or {}).items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise EdgepruneError(f"ONNX metadata keys and values must be strings, got {bad!r}")
    out = Path(path)
    device = next(model.parameters()).device
    # Batch 2, not 1, as the example: torch.export specialises a dimension traced with size 1.
    example = torch.randn(2 if dynamic_batch else 1, 3, input_size, input_size, device=device)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None

    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise EdgepruneError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    finally:
        model.train(was_training)

    proto = program.model_proto
    if metadata:
        props = {prop.key: prop.value for prop in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, **metadata})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EdgepruneError(f"the exported ONNX model does not pass onnx.checker: {exc}") from exc
    with atomic_file(out, overwrite=True) as tmp:  # a reader never sees a partial file
        onnx.save(proto, str(tmp))
    return out
