"""Export models to deployable files: FP32 / INT8 ONNX and sparse storage, and verify them.

These functions work on models and files; exporting a *checkpoint* with verification on its
test data and a report beside the file is the workflow `edgeprune.workflows.export_checkpoint`."""

from edgeprune.export.onnx import export_onnx
from edgeprune.export.sparse import load_sparse, save_sparse
from edgeprune.export.verify import VerificationReport, verify

__all__ = [
    "VerificationReport",
    "export_onnx",
    "load_sparse",
    "save_sparse",
    "verify",
]
