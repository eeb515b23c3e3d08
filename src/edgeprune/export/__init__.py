"""Export trained or pruned models to deployable files: FP32 / INT8 ONNX and sparse storage."""

from edgeprune.export.onnx import export_onnx
from edgeprune.export.artifact import FORMATS, ExportResult, export_checkpoint
from edgeprune.export.sparse import load_sparse, save_sparse
from edgeprune.export.verify import VerificationReport, verify

__all__ = [
    "FORMATS",
    "ExportResult",
    "VerificationReport",
    "export_checkpoint",
    "export_onnx",
    "load_sparse",
    "save_sparse",
    "verify",
]
