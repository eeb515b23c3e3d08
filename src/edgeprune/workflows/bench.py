"""Bench checkpoints, sparse files and ONNX artifacts side by side (the full-install side).

ONNX rows come from `edgeprune.runtime.bench.onnx_pending` (no torch), one per backend asked
for (ONNX Runtime, OpenVINO); this module adds PyTorch eager rows for checkpoints and sparse
files, backend rows for each checkpoint (exported to a temporary file with the same metadata as
`edgeprune export onnx`), and test images from any `--data` form through `edgeprune.data`. Every
row of the call is timed in one round-robin (`edgeprune.runtime.bench.finish_rows`), on the same
random inputs and the same pinned cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.validation import check_option
from edgeprune.runtime.bench import Pending, accuracy_of, finish_rows, onnx_pending
from edgeprune.runtime.measure import PROBE_PRELUDE, cpu_isa, file_size, gzip_size, run_memory_probe
from edgeprune.runtime.metadata import ir_bin_path, is_openvino_ir

Log = Callable[[str], None]

# Same method as the ONNX Runtime probe (edgeprune.runtime.measure.PEAK_MEMORY_NOTE), with
# torch and edgeprune imported before the baseline.
_TORCH_PROBE = PROBE_PRELUDE + """
import torch
from edgeprune.models import load_checkpoint
from edgeprune.export.sparse import load_sparse
kind, path, size, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
baseline = reset_peak()
model = (load_checkpoint(path) if kind == "checkpoint" else load_sparse(path))[0]
with torch.inference_mode():
    model(torch.zeros(1, 3, size, size))
report(baseline)
"""


def artifact_kind(path: str | Path) -> str:
    """`checkpoint` (folder with model.json), `sparse` (edgeprune sparse file), `onnx`, or
    `openvino-ir` (MODEL.xml beside its MODEL.bin)."""
    from edgeprune.export.sparse import is_sparse_file

    p = Path(path)
    if not p.exists():
        raise EdgepruneError(f"artifact not found: {p}")
    if p.is_dir():
        if (p / "model.json").is_file():
            return "checkpoint"
        raise EdgepruneError(f"{p} is a folder but not an edgeprune checkpoint (no model.json)")
    if is_sparse_file(p):
        return "sparse"
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if is_openvino_ir(p):
        if not ir_bin_path(p).is_file():
            raise EdgepruneError(f"{p}: an OpenVINO IR needs its weights file {ir_bin_path(p).name} beside it")
        return "openvino-ir"
    raise EdgepruneError(
        f"{p}: not a checkpoint folder, an .onnx file, an OpenVINO IR (.xml) or an edgeprune sparse file"
    )


def _runtimes_for(kind: str, backends: list[str], path: Path) -> list[str]:
    """An IR runs on OpenVINO only; asked for other backends alone, say so rather than skip it."""
    if kind != "openvino-ir":
        return backends
    if "openvino" not in backends:
        from edgeprune.runtime.backends import check_runtime

        check_runtime("openvino", allow_auto=False)  # not installed: the install hint
        raise EdgepruneError(
            f"{path.name} is an OpenVINO IR, which only the openvino runtime reads; "
            f"--runtime {','.join(backends)} leaves it nothing to run on (add openvino)")
    return ["openvino"]


class TestImages:
    """Decoded test images for each artifact, loaded once per (input size, split) through
    edgeprune.data. `data` is a spec, a DataOptions or an already loaded DataBundle. A model that
    records its split is always benched on that split (never on test images it trained on)."""

    def __init__(self, data, *, max_per_class: int | None = None, log: Log | None = None):
        self.data = data
        self.max_per_class = max_per_class
        self.log = log
        self.cache: dict[Any, Any] = {}

    def _bundle(self, input_size: int, recorded_split: dict | None):
        from edgeprune.data import DataBundle, DataOptions, load_data, split_defaults

        if isinstance(self.data, DataBundle):
            if self.data.image_size != input_size:
                raise EdgepruneError(
                    f"the data given is {self.data.image_size}x{self.data.image_size}, the model "
                    f"takes {input_size}x{input_size}: pass a data spec to load it at each size"
                )
            return self.data
        base = self.data if isinstance(self.data, DataOptions) else DataOptions(spec=str(self.data))
        options = base.replace(image_size=input_size, **split_defaults(recorded_split))
        if options not in self.cache:
            self.cache[options] = load_data(options, log=self.log)
        return self.cache[options]

    def get(self, input_size: int, class_names: Sequence[str], recorded_split: dict | None = None,
            what: str = "the model") -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.data is None:
            return None, None
        from edgeprune.data import check_same_split

        data = self._bundle(input_size, recorded_split)
        if list(class_names) != list(data.class_names):
            raise EdgepruneError(f"{what} has classes {list(class_names)}, {data.name} has "
                                 f"{list(data.class_names)}")
        if recorded_split and data.split is not None:
            check_same_split(recorded_split, data.split, allow_other_split=False, what=what)
        images, labels = data.test.images.numpy(), data.test.labels.numpy()
        if self.max_per_class is not None:
            keep = np.concatenate([np.flatnonzero(labels == c)[: self.max_per_class]
                                   for c in np.unique(labels)])
            keep.sort()
            images, labels = images[keep], labels[keep]
        return images, labels


def torch_pending(
    model: torch.nn.Module,
    meta,
    *,
    name: str,
    fmt: str,
    path: Path,
    kind: str,
    threads: int,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    device: str,
    memory: bool = True,
) -> Pending:
    """A PyTorch eager row (CPU) measured but for its latency; `finish_rows` times it with the
    others, inside `torch.inference_mode()` with torch's threads set by the caller."""
    from edgeprune.export.verify import torch_logits
    from edgeprune.metrics import count_macs
    from edgeprune.runtime.preprocess import normalize

    model = model.cpu().eval()
    accuracy = None
    if images is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            accuracy = accuracy_of(torch_logits(model, normalize(images, meta.mean, meta.std)), labels)
        finally:
            torch.set_num_threads(previous)
    macs, _ = count_macs(model, meta.input_size)
    notes = []
    peak = None
    if memory:
        probe = run_memory_probe(_TORCH_PROBE, [kind, str(path), str(meta.input_size), str(threads)])
        peak = probe.bytes
        if peak is None:
            notes.append(probe.note)
    if kind == "sparse":
        notes.append("sparse storage, restored to dense tensors: runs as fast as the dense model")
    weights = path / "model.safetensors" if path.is_dir() else path

    def run(x: np.ndarray) -> None:
        model(torch.from_numpy(x))

    row = {
        "artifact": name, "format": fmt, "runtime": "torch-eager", "device": device,
        "isa": cpu_isa(), "software": f"torch{torch.__version__.split('+')[0]}", "threads": threads,
        "accuracy": accuracy, "n_images": int(len(labels)) if accuracy is not None else None,
        "file_bytes": file_size(weights), "gzip_bytes": gzip_size(weights),
        "peak_memory_bytes": peak, "macs": macs, "path": str(path),
    }
    return Pending(row, run, meta.input_size, notes)


def bench_artifacts(
    artifacts: Sequence[str | Path],
    *,
    data=None,
    threads: int = 1,
    budget_s: float = 2.0,
    device: str | None = None,
    max_per_class: int | None = None,
    memory: bool = True,
    runtimes: str | Sequence[str] | None = None,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Bench rows for every artifact, in order: checkpoints give a torch-eager row and one per
    backend, sparse files a torch-eager row, .onnx files one row per backend. All rows are timed
    in one round-robin.

    runtimes: the ONNX backends ("onnxruntime,openvino", a list; None: every installed one).
    data: a spec, DataOptions or DataBundle whose test split measures accuracy (None: no
    accuracy), on each backend; max_per_class limits the test images per class."""
    from edgeprune.workflows.export import base_metadata
    from edgeprune.export.onnx import export_onnx
    from edgeprune.export.sparse import load_sparse
    from edgeprune.hardware import device_label
    from edgeprune.models import load_checkpoint
    from edgeprune.runtime import metadata as md
    from edgeprune.runtime.backends import parse_runtimes
    from edgeprune.runtime.metadata import read_metadata

    say = log or (lambda _m: None)
    check_option("threads", threads)
    check_option("budget_s", budget_s)
    check_option("max_per_class", max_per_class, optional=True)
    backends = parse_runtimes(runtimes)  # fail fast, before any loading or timing
    label = device or device_label("cpu")
    kinds = [(Path(a), artifact_kind(a)) for a in artifacts]
    test_images = TestImages(data, max_per_class=max_per_class, log=log)
    pending: list[Pending] = []
    # The checkpoints' temporary ONNX files live until every row is timed.
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-") as tmp:
        for index, (path, kind) in enumerate(kinds):
            name = path.name
            if kind in ("onnx", "openvino-ir"):
                meta = read_metadata(path)
                images, labels = test_images.get(meta.input_size, meta.class_names,
                                                 getattr(meta, "split", None), what=name)
                for runtime in _runtimes_for(kind, backends, path):
                    say(f"bench {name}: loading on {runtime}, {threads} thread(s)")
                    pending.append(onnx_pending(path, runtime=runtime, threads=threads, images=images,
                                                labels=labels, device=label, memory=memory))
                continue
            model, meta = load_checkpoint(path) if kind == "checkpoint" else load_sparse(path)
            images, labels = test_images.get(meta.input_size, meta.class_names, meta.split, what=name)
            fmt = "checkpoint" if kind == "checkpoint" else "sparse"
            say(f"bench {name}: PyTorch eager, {threads} thread(s)")
            pending.append(torch_pending(model, meta, name=name, fmt=fmt, path=path, kind=kind,
                                         threads=threads, images=images, labels=labels,
                                         device=label, memory=memory))
            if kind == "checkpoint":
                onnx_path = Path(tmp) / f"{index}-{path.name}.onnx"
                say(f"bench {name}: exporting to ONNX for {', '.join(backends)}")
                export_onnx(model, onnx_path, input_size=meta.input_size,
                            metadata=md.encode(base_metadata(model, meta, path, "onnx")))
                for runtime in backends:
                    item = onnx_pending(onnx_path, runtime=runtime, threads=threads, images=images,
                                        labels=labels, device=label, artifact_name=name, memory=memory)
                    item.row.update(format="checkpoint", path=str(path))
                    item.notes.insert(0, "FP32 ONNX exported for this bench")
                    pending.append(item)
        say(f"timing {len(pending)} row(s) in one round-robin, {threads} thread(s)")
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return finish_rows(pending, threads=threads, budget_s=budget_s)
        finally:
            torch.set_num_threads(previous)
