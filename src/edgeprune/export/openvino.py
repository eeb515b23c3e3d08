"""INT8 for OpenVINO: NNCF post-training quantization of the FP32 ONNX graph, saved as OpenVINO IR.

ONNX Runtime's QDQ file also runs on OpenVINO, but OpenVINO's own quantizer (NNCF) knows which
of its kernels take INT8 and where FakeQuantize nodes may go (it keeps, for example, the layers
whose quantization costs accuracy for no speed in float): `nncf.quantize` on the model OpenVINO
reads from the FP32 .onnx, calibrated on the same training images as the QDQ export, with the
default (performance) preset: symmetric INT8 weights per channel, activations per tensor.

The IR is two files, MODEL.xml and MODEL.bin beside it; edgeprune's metadata (the same keys as an
ONNX file's metadata_props) is kept in the .xml's rt_info (edgeprune.runtime.metadata.IR_RT_INFO).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.runtime.metadata import IR_RT_INFO, ir_bin_path
from edgeprune.runtime.sessions import import_openvino, openvino_read


def quantize_openvino(fp32_onnx: str | Path, out_xml: str | Path, calibration: np.ndarray, *,
                      metadata: dict[str, str] | None = None,
                      log: Callable[[str], None] | None = None) -> Path:
    """NNCF post-training INT8 quantization of `fp32_onnx`, written as OpenVINO IR to `out_xml`
    (+ .bin). `calibration`: normalised float32 (N, 3, S, S) images, fed one at a time (the
    batch a device runs). `metadata`: string props stored in the IR's rt_info."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError:
        raise EdgepruneError("--format openvino-int8 needs NNCF: pip install edgeprune[openvino]") from None
    if len(calibration) == 0:
        raise EdgepruneError("OpenVINO INT8 needs calibration images")
    model = openvino_read(fp32_onnx)[1]
    items = [np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32) for i in range(len(calibration))]
    if log:
        log(f"quantizing for OpenVINO with NNCF {nncf.__version__} (post-training, "
            f"{len(items)} calibration images)")
    try:
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    except Exception as exc:  # noqa: BLE001 - NNCF raises many types
        raise EdgepruneError(f"NNCF quantization failed: {str(exc).strip()[-400:]}") from exc
    if metadata:
        quantized.set_rt_info(json.dumps(metadata, sort_keys=True), IR_RT_INFO)
    out = Path(out_xml)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    if not ir_bin_path(out).is_file():
        raise EdgepruneError(f"internal: OpenVINO wrote no {ir_bin_path(out).name} beside {out.name}")
    return out


def set_ir_metadata(xml: str | Path, values: dict[str, str]) -> None:
    """Merge string props into an IR's rt_info metadata (rewrites the .xml and .bin)."""
    from edgeprune.runtime.metadata import ir_props

    ov = import_openvino()
    p = Path(xml)
    model = openvino_read(p)[1]
    props = {**ir_props(model), **values}
    model.set_rt_info(json.dumps(props, sort_keys=True), IR_RT_INFO)
    tmp = p.with_name(f".{p.stem}.meta.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    ir_bin_path(tmp).replace(ir_bin_path(p))
    tmp.replace(p)
