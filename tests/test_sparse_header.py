"""A sparse file whose header is not JSON, or lacks what the reader needs, is a clear error."""

from __future__ import annotations

import json
import lzma
import struct

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.export.sparse import MAGIC, load_sparse, read_sparse_arrays, write_sparse_arrays


def write_raw(path, header: bytes, payload: bytes = b"") -> None:
    body = struct.pack("<Q", len(header)) + header + payload
    path.write_bytes(MAGIC + lzma.compress(body, format=lzma.FORMAT_XZ))


def good_header(tmp_path) -> tuple[dict, bytes]:
    """The header and payload of a real file, to damage one key at a time."""
    path = write_sparse_arrays(tmp_path / "good.epsparse", {"w": np.arange(100, dtype=np.float32)}, {})
    body = lzma.decompress(path.read_bytes()[len(MAGIC):])
    (n,) = struct.unpack("<Q", body[:8])
    return json.loads(body[8:8 + n]), body[8 + n:]


@pytest.mark.parametrize("header, message", [
    (b"{not json", "header is not UTF-8 JSON"),
    (b"\xff\xfe", "header is not UTF-8 JSON"),
    (b"[1, 2]", "not an object"),
])
def test_a_header_that_is_not_a_json_object(tmp_path, header, message):
    path = tmp_path / "x.epsparse"
    write_raw(path, header)
    with pytest.raises(EdgepruneError, match=message) as info:
        read_sparse_arrays(path)
    assert "x.epsparse" in str(info.value)


def test_a_header_length_past_the_end(tmp_path):
    path = tmp_path / "x.epsparse"
    path.write_bytes(MAGIC + lzma.compress(struct.pack("<Q", 10**9) + b"{}", format=lzma.FORMAT_XZ))
    with pytest.raises(EdgepruneError, match="header length"):
        read_sparse_arrays(path)


@pytest.mark.parametrize("damage, message", [
    (lambda h: h.pop("tensors"), 'no "tensors" list'),
    (lambda h: h["tensors"][0].pop("dtype"), "lacks 'dtype'"),
    (lambda h: h["tensors"][0].update(dtype="complex256"), "unknown dtype"),
    (lambda h: h["tensors"][0].pop("shape"), "lacks 'shape'"),
    (lambda h: h["tensors"][0].update(shape=[-1]), "invalid shape"),
    (lambda h: h["tensors"][0].update(end=10**9), "outside the payload"),
    (lambda h: h["tensors"].append("w"), "is not a JSON object"),
])
def test_a_header_missing_or_damaging_a_key(tmp_path, damage, message):
    header, payload = good_header(tmp_path)
    damage(header)
    path = tmp_path / "x.epsparse"
    write_raw(path, json.dumps(header).encode(), payload)
    with pytest.raises(EdgepruneError, match=message):
        read_sparse_arrays(path)


def test_a_file_without_a_manifest_is_not_a_model(tmp_path):
    header, payload = good_header(tmp_path)
    header.pop("manifest")
    path = tmp_path / "x.epsparse"
    write_raw(path, json.dumps(header).encode(), payload)
    assert set(read_sparse_arrays(path)[1]) == {"w"}  # the tensors still read
    with pytest.raises(EdgepruneError, match="holds no model manifest"):
        load_sparse(path)
