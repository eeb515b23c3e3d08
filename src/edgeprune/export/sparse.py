"""Compressed storage for unstructured-sparse models, restored to bit-identical dense weights.

Hand-written because no library here stores a sparse state_dict compactly *and* restores the
exact dense tensors plus the (possibly channel-pruned) architecture: safetensors and ONNX store
zeros densely, torch's sparse tensors pickle, and a plain gzip of the dense file still spends
about 6 bytes per surviving weight on deflate's match/literal codes around the zero runs.

File layout (extension `.epsparse` by convention):

    8 bytes   magic b"EPSPRS01"
    rest      one xz (LZMA2) stream holding:
                8 bytes   little-endian length of the header
                header    UTF-8 JSON: format, version, the checkpoint manifest (model.json),
                          and per tensor: name, dtype, shape, encoding, nnz, byte ranges, sha256
                blobs     the tensors' payloads, back to back

Per tensor, the smaller of two encodings is used:
- `dense`: the raw little-endian bytes (small tensors, BatchNorm statistics, integer buffers);
- `bitmask`: numpy.packbits of (w != 0) in C order, then the nonzero values in that order.
  A bitmask costs 1 bit per weight; CSR-style int32 indices would cost 32 bits per *nonzero*,
  which is smaller only below ~3% density, and the xz stage already squeezes the long zero
  runs of a very sparse mask.
Float values are "byte-shuffled" (all first bytes, then all second bytes, ...) before
compression, as Blosc does: the sign/exponent bytes of neighbouring weights are alike and
compress well once they sit together, the mantissa bytes stay near-random either way.

xz rather than gzip: it is in the standard library too (`lzma`), compresses the bitmasks and
exponent bytes clearly better, and checks its content with CRC64; zstd would decompress faster
but is not in the standard library before Python 3.14.

Restoring negative zeros: `w != 0` is False for -0.0, so the mask would turn -0.0 into +0.0.
Bitmask encoding is therefore only used for tensors without negative zeros; others are stored
dense, and the per-tensor sha256 of the dense bytes is checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_file

MAGIC = b"EPSPRS01"
FORMAT = "edgeprune-sparse"
FORMAT_VERSION = 1
SUFFIX = ".epsparse"
XZ_PRESET = 6  # xz default: within ~1% of preset 9 here, several times faster on a dense ResNet-18

_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_,
}


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def encode_tensors(arrays: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], bytes]:
    """The per-tensor header entries and the concatenated payload (before compression)."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, array in arrays.items():
        a = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d tensors 1-d)
        dtype = a.dtype.name
        if dtype not in _DTYPES:
            raise EdgepruneError(f"tensor {name}: dtype {dtype} cannot be stored in the sparse format")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        dense = a.tobytes()
        entry: dict[str, Any] = {
            "name": name, "dtype": dtype, "shape": list(a.shape),
            "sha256": hashlib.sha256(dense).hexdigest(),
        }
        flat = a.reshape(-1)
        nonzero = flat != 0
        nnz = int(nonzero.sum())
        is_float = a.dtype.kind == "f"
        has_negative_zero = is_float and bool(np.any(np.signbit(flat) & ~nonzero))
        bitmask_bytes = (flat.size + 7) // 8 + nnz * a.itemsize
        if flat.size >= 64 and bitmask_bytes < len(dense) and not has_negative_zero:
            mask = np.packbits(nonzero).tobytes()
            values = flat[nonzero].tobytes()
            parts = [mask, _shuffle(values, a.itemsize) if is_float else values]
            entry.update(encoding="bitmask", nnz=nnz, mask_bytes=len(mask), value_bytes=len(values))
        else:
            parts = [_shuffle(dense, a.itemsize) if is_float else dense]
            entry.update(encoding="dense", nnz=nnz)
        entry["offset"] = offset
        entry["shuffled"] = is_float
        for part in parts:
            chunks.append(part)
            offset += len(part)
        entry["end"] = offset
        entries.append(entry)
    return entries, b"".join(chunks)


def decode_tensor(entry: dict[str, Any], payload: memoryview) -> np.ndarray:
    dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
    shape = tuple(entry["shape"])
    blob = bytes(payload[entry["offset"] : entry["end"]])
    size = int(np.prod(shape, dtype=np.int64))
    if entry["encoding"] == "dense":
        raw = _unshuffle(blob, dtype.itemsize) if entry.get("shuffled") else blob
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    elif entry["encoding"] == "bitmask":
        mask_bytes = entry["mask_bytes"]
        mask = np.unpackbits(np.frombuffer(blob[:mask_bytes], dtype=np.uint8), count=size).astype(bool)
        values_raw = blob[mask_bytes:]
        if entry.get("shuffled"):
            values_raw = _unshuffle(values_raw, dtype.itemsize)
        values = np.frombuffer(values_raw, dtype=dtype)
        if values.size != int(mask.sum()):
            raise EdgepruneError(f"sparse file corrupt: tensor {entry['name']} has a mask/value mismatch")
        flat = np.zeros(size, dtype=dtype)
        flat[mask] = values
        array = flat.reshape(shape)
    else:
        raise EdgepruneError(f"unknown tensor encoding {entry['encoding']!r} in sparse file")
    if hashlib.sha256(array.tobytes()).hexdigest() != entry["sha256"]:
        raise EdgepruneError(f"sparse file corrupt: tensor {entry['name']} does not restore exactly")
    return array


def write_sparse_arrays(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    manifest: dict[str, Any],
    source: dict[str, Any] | None = None,
) -> Path:
    """Write numpy tensors + the checkpoint manifest to `path` in the sparse container format.

    source: optional provenance stored in the header as is (e.g. the checkpoint's name and hash)."""
    entries, payload = encode_tensors(arrays)
    fields: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgeprune_version": __version__,
        "compressor": f"xz preset {XZ_PRESET}",
        "manifest": manifest,
    }
    if source is not None:
        fields["source"] = source
    header = json.dumps({**fields, "tensors": entries}, separators=(",", ":")).encode("utf-8")
    body = struct.pack("<Q", len(header)) + header + payload
    out = Path(path)
    with atomic_file(out, overwrite=True) as tmp:  # a reader never sees a partial file
        tmp.write_bytes(MAGIC + lzma.compress(body, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                              preset=XZ_PRESET))
    return out


def is_sparse_file(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def read_sparse_arrays(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, tensors as numpy arrays) of a sparse file; every tensor is hash-checked. No torch."""
    p = Path(path)
    if not p.exists():
        raise EdgepruneError(f"sparse file not found: {p}")
    data = p.read_bytes()
    if data[: len(MAGIC)] != MAGIC:
        raise EdgepruneError(f"{p} is not an edgeprune sparse file (wrong magic bytes)")
    try:
        body = lzma.decompress(data[len(MAGIC):], format=lzma.FORMAT_XZ)
    except lzma.LZMAError as exc:
        raise EdgepruneError(f"{p} is corrupt: {exc}") from None
    if len(body) < 8 or struct.unpack("<Q", body[:8])[0] > len(body) - 8:
        raise EdgepruneError(f"{p} is corrupt: its header length is missing or runs past the end of the file")
    (header_len,) = struct.unpack("<Q", body[:8])
    try:
        header = json.loads(body[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EdgepruneError(f"{p} is corrupt: its header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise EdgepruneError(f"{p} is corrupt: its header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT or not isinstance(header.get("format_version", 0), int) \
            or header.get("format_version", 0) > FORMAT_VERSION:
        raise EdgepruneError(f"{p}: unsupported sparse format {header.get('format')} v{header.get('format_version')}")
    payload = memoryview(body)[8 + header_len :]
    _check_entries(header, len(payload), p)
    arrays = {e["name"]: decode_tensor(e, payload) for e in header["tensors"]}
    return header, arrays


_ENTRY_KEYS = {"name": str, "dtype": str, "shape": list, "encoding": str, "offset": int, "end": int, "sha256": str}


def _check_entries(header: dict[str, Any], payload_len: int, p: Path) -> None:
    """Every key `decode_tensor` reads, with its type, present in every entry (a damaged or
    hand-made header would otherwise end in a KeyError or TypeError)."""
    entries = header.get("tensors")
    if not isinstance(entries, list):
        raise EdgepruneError(f"{p} is corrupt: its header has no \"tensors\" list")
    for i, entry in enumerate(entries):
        where = f"{p} is corrupt: header tensor {i}"
        if not isinstance(entry, dict):
            raise EdgepruneError(f"{where} is not a JSON object")
        where += f" ({entry['name']})" if isinstance(entry.get("name"), str) else ""
        for key, kind in _ENTRY_KEYS.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise EdgepruneError(f"{where} lacks {key!r} (or it is not a {kind.__name__})")
        if entry["dtype"] not in _DTYPES:
            raise EdgepruneError(f"{where} has an unknown dtype {entry['dtype']!r} "
                                 f"(known: {', '.join(_DTYPES)})")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry["shape"]):
            raise EdgepruneError(f"{where} has an invalid shape {entry['shape']!r}")
        if not 0 <= entry["offset"] <= entry["end"] <= payload_len:
            raise EdgepruneError(f"{where} has byte ranges outside the payload")
        if entry["encoding"] == "bitmask" and not isinstance(entry.get("mask_bytes"), int):
            raise EdgepruneError(f"{where} lacks 'mask_bytes'")


def _manifest_for(model, meta) -> dict[str, Any]:
    """The same manifest `save_checkpoint` writes as model.json."""
    from edgeprune.models.checkpoint import FORMAT as CKPT_FORMAT
    from edgeprune.models.checkpoint import FORMAT_VERSION as CKPT_VERSION
    from edgeprune.models.checkpoint import layer_manifest

    state = model.state_dict()
    return {
        "format": CKPT_FORMAT,
        "format_version": CKPT_VERSION,
        "edgeprune_version": __version__,
        **asdict(meta),
        "num_classes": meta.num_classes,
        "layers": layer_manifest(model),
        "shapes": {k: list(v.shape) for k, v in state.items()},
    }


def save_sparse(model, meta, path: str | Path) -> Path:
    """Store a model (pruning made permanent) and its CheckpointMeta in the sparse format."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    masked = [k for k in state if k.endswith("_orig") or k.endswith("_mask")]
    if masked:
        raise EdgepruneError(
            f"refusing to store a model with pruning masks attached ({masked[0]}, ...): "
            "make the pruning permanent first"
        )
    arrays = {k: v.numpy() for k, v in state.items()}
    return write_sparse_arrays(path, arrays, _manifest_for(model, meta))


def load_sparse(path: str | Path, device: str = "cpu"):
    """Rebuild the (possibly channel-pruned) model from a sparse file: (model in eval mode, meta).

    The dense tensors are bit-identical to those saved (checked by sha256 per tensor)."""
    import torch

    from edgeprune.models import create_model
    from edgeprune.models.checkpoint import apply_layer_manifest, meta_from_manifest
    from edgeprune.models.zoo import check_finite

    header, arrays = read_sparse_arrays(path)
    check_finite(arrays, str(path))
    manifest = header.get("manifest")
    if not isinstance(manifest, dict):
        raise EdgepruneError(f"{path} holds no model manifest (its header lacks \"manifest\"): "
                             "it stores tensors, not a model")
    meta = meta_from_manifest(manifest)
    model = create_model(meta.architecture, meta.num_classes, "none", width_mult=meta.width_mult)
    apply_layer_manifest(model, manifest.get("layers", {}))
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EdgepruneError(f"{path}: tensors do not fit the stored architecture: {str(exc)[:500]}") from None
    return model.to(device).eval(), meta


def sparse_summary(header: dict[str, Any]) -> dict[str, Any]:
    """Counts from a sparse file's header: weights stored, nonzeros, tensors per encoding."""
    total = sum(int(np.prod(e["shape"], dtype=np.int64)) for e in header["tensors"])
    nnz = sum(e["nnz"] for e in header["tensors"])
    return {
        "tensors": len(header["tensors"]),
        "bitmask_tensors": sum(e["encoding"] == "bitmask" for e in header["tensors"]),
        "elements": total,
        "nonzero": nnz,
        "density": nnz / total if total else 0.0,
    }
