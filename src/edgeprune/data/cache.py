"""On-disk cache of decoded images, so a second command on the same files does not decode again.

Layout: <cache>/data/<key>/{images.npy, sizes.npy, meta.json}; <cache> is $EDGEPRUNE_CACHE or
~/.cache/edgeprune. The key hashes the file list (path and a blake2b of each file's bytes),
the image size and DATA_FORMAT_VERSION, so any change to the files or to how they are decoded
misses the cache. Contents, not mtimes: a file rewritten with the same size and its old mtime
(copy tools, `os.utime`, coarse file-system clocks) must not be served stale pixels. The key for
CIFAR-10's 60,000 JPEGs (55 MB) takes about 1 s with the files in the page cache (0.4 s for the
old size+mtime key); decoding them takes far longer.
Entries are plain .npy and JSON (no pickles), written with `outputs.atomic_folder` (a temporary
folder beside the entry, renamed into place whole).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgeprune.data.decode import DecodedFiles, ProgressFn, decode_files
from edgeprune.errors import EdgepruneError
from edgeprune.outputs import atomic_folder, cache_root

# Bump whenever decoding changes what ends up in the arrays (resampling, colour conversion, ...).
# 2: 16-bit greyscale scaled to 8 bits instead of clipped (runtime.preprocess.SIXTEEN_BIT_RULE).
DATA_FORMAT_VERSION = 2
HASH_CHUNK = 1024  # files per pool task
READ_BLOCK = 1 << 20


def data_cache_dir() -> Path:
    return cache_root() / "data"


def file_digest(path: str) -> str:
    """blake2b of a file's bytes, or "missing" when it cannot be read (decoding will name it).

    os.open/os.read rather than open(): the buffered file object costs more than the hashing for
    small files (3.5 s vs 0.7 s on CIFAR-10's 60,000 JPEGs)."""
    try:
        # O_NONBLOCK: a FIFO named like an image must not hang the hashing (no effect on files)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return "missing"
    try:
        digest = hashlib.blake2b(digest_size=16)
        while block := os.read(fd, READ_BLOCK):
            digest.update(block)
        return digest.hexdigest()
    except OSError:  # e.g. a folder with an image's name, or an I/O error
        return "missing"
    finally:
        os.close(fd)


def _digests(paths: list[str]) -> list[str]:
    return [file_digest(p) for p in paths]


def content_digests(paths: list[str], *, workers: int | None = None) -> list[str]:
    """file_digest of every path, in order; reads overlap on a small thread pool (the GIL is
    released in read and in blake2b), which pays off when the files are not yet cached in RAM."""
    if len(paths) <= HASH_CHUNK:
        return _digests(paths)
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = [paths[i : i + HASH_CHUNK] for i in range(0, len(paths), HASH_CHUNK)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [d for chunk in pool.map(_digests, chunks) for d in chunk]


def cache_key(paths: list[str], image_size: int) -> str:
    digest = hashlib.sha256(f"edgeprune-data-v{DATA_FORMAT_VERSION}|{image_size}".encode())
    absolute = [os.path.abspath(p) for p in paths]
    for path, content in zip(absolute, content_digests(absolute)):
        digest.update(f"\n{path}|{content}".encode())
    return digest.hexdigest()[:32]


def _read_entry(entry: Path, n: int, image_size: int) -> DecodedFiles | None:
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        images = np.load(entry / "images.npy", allow_pickle=False)
        sizes = np.load(entry / "sizes.npy", allow_pickle=False)
        modes, errors = list(meta["modes"]), dict(meta["errors"])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign entry: decode again
        return None
    if images.shape != (n, 3, image_size, image_size) or sizes.shape != (n, 2) or len(modes) != n:
        return None
    return DecodedFiles(images, sizes[:, 0].copy(), sizes[:, 1].copy(), modes, errors)


def _write_entry(entry: Path, decoded: DecodedFiles) -> None:
    # Without overwrite: when another process finished the same entry first, its entry stays.
    with atomic_folder(entry, what="data cache entry") as tmp:
        np.save(tmp / "images.npy", decoded.images)
        np.save(tmp / "sizes.npy", np.stack([decoded.widths, decoded.heights], axis=1))
        meta = {"version": DATA_FORMAT_VERSION, "modes": decoded.modes, "errors": decoded.errors}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def decode_cached(
    paths: list[str],
    image_size: int,
    *,
    log: Callable[[str], None],
    progress: ProgressFn | None = None,
    description: str = "decoding images",
) -> DecodedFiles:
    """decode_files, through the on-disk cache."""
    entry = data_cache_dir() / cache_key(paths, image_size)
    cached = _read_entry(entry, len(paths), image_size) if entry.is_dir() else None
    if cached is not None:
        log(f"data cache: using {entry} ({len(paths)} images, no decoding)")
        return cached
    if entry.is_dir():  # unreadable or stale entry: replace it
        shutil.rmtree(entry, ignore_errors=True)
    decoded = decode_files(paths, image_size, progress=progress, description=description)
    try:
        _write_entry(entry, decoded)
        log(f"data cache: decoded {len(paths)} images, saved to {entry}")
    except (OSError, EdgepruneError) as exc:
        if entry.is_dir():  # another process wrote the same entry meanwhile
            log(f"data cache: decoded {len(paths)} images ({entry} already written)")
        else:
            log(f"data cache: decoded {len(paths)} images; could not save to {entry} ({exc})")
    return decoded
