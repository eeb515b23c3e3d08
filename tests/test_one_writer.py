"""Every cache and study folder is written by the one safe writer (`edgeprune.outputs`), and the
cache location and file digest have one definition each."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from edgeprune.data import cache as data_cache
from edgeprune.data.decode import DecodedFiles
from edgeprune.outputs import cache_root, file_sha256
from edgeprune.runtime import backends
from edgeprune.study.runner import _unpack


def test_cache_root_and_file_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert data_cache.data_cache_dir() == tmp_path / "c" / "data"
    monkeypatch.delenv("EDGEPRUNE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "edgeprune"
    blob = np.random.default_rng(0).bytes(3 << 20)  # more than one 1 MiB block
    (tmp_path / "f").write_bytes(blob)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(blob).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_study_unpack_swaps_an_unfinished_folder_whole(tmp_path):
    target = tmp_path / "run" / "exp"
    target.mkdir(parents=True)
    (target / "half-written.onnx").write_bytes(b"x")  # an unfinished attempt: no row
    (target / "checkpoint").mkdir()
    _unpack(_tar({"model.onnx": b"onnx", "checkpoint/model.json": b"{}"}), target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "checkpoint", "checkpoint/model.json", "model.onnx"]
    assert (target / "model.onnx").read_bytes() == b"onnx"
    assert sorted(p.name for p in target.parent.iterdir()) == ["exp"]  # no temporary left


def _decoded(n: int, value: int) -> DecodedFiles:
    images = np.full((n, 3, 4, 4), value, np.uint8)
    return DecodedFiles(images, np.full(n, 4), np.full(n, 4), ["RGB"] * n, {})


def test_data_cache_entry_is_written_once_and_never_clobbered(tmp_path):
    entry = tmp_path / "data" / "key"
    data_cache._write_entry(entry, _decoded(2, 7))
    assert data_cache._read_entry(entry, 2, 4).images.max() == 7
    # A second process finishing the same entry later leaves the first one's entry as it is.
    try:
        data_cache._write_entry(entry, _decoded(2, 9))
    except Exception as exc:  # noqa: BLE001 - decode_cached catches exactly this
        assert "appeared" in str(exc)
    else:
        raise AssertionError("the second writer replaced a finished cache entry")
    assert data_cache._read_entry(entry, 2, 4).images.max() == 7
    assert sorted(p.name for p in entry.parent.iterdir()) == ["key"]


def test_decode_cached_uses_the_entry_it_wrote(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(path)
        paths.append(str(path))
    said: list[str] = []
    first = data_cache.decode_cached(paths, 8, log=said.append)
    second = data_cache.decode_cached(paths, 8, log=said.append)
    assert "saved to" in said[0] and "no decoding" in said[1]
    assert np.array_equal(first.images, second.images)
    entries = list((tmp_path / "cache" / "data").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")


def test_runtime_choice_cache_is_written_atomically(tmp_path):
    file = tmp_path / "runtime" / "choice-x.json"
    key = {"sha256": "s", "backends": {"onnxruntime": "1"}}
    choice = backends.RuntimeChoice("onnxruntime", "measured", key, {"onnxruntime": 1.5}, "now", str(file))
    backends._write_choice(file, choice)
    assert json.loads(file.read_text())["runtime"] == "onnxruntime"
    assert backends._read_choice(file, key).source == "cached"
    assert sorted(p.name for p in file.parent.iterdir()) == ["choice-x.json"]
    # A read-only cache costs a measurement, never an error.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    backends._write_choice(blocked / "runtime" / "c.json", choice)
