"""On-disk cache of decoded images, so a second command on the same files does not decode again.

Layout: <cache>/data/<key>/{images.npy, sizes.npy, meta.json}; <cache> is $EDGEPRUNE_CACHE or
~/.cache/edgeprune. The key hashes the file list (path, size, mtime), the image size and
DATA_FORMAT_VERSION, so any change to the files or to how they are decoded misses the cache.
Entries are plain .npy and JSON (no pickles), written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeprune.data.decode import DecodedFiles, ProgressFn, decode_files

# Bump whenever decoding changes what ends up in the arrays (resampling, colour conversion, ...).
DATA_FORMAT_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE") or Path.home() / ".cache" / "edgeprune") / "data"


def cache_key(paths: list[str], image_size: int) -> str:
    digest = hashlib.sha256(f"edgeprune-data-v{DATA_FORMAT_VERSION}|{image_size}".encode())
    for path in paths:
        absolute = os.path.abspath(path)
        try:
            stat = os.stat(absolute)
            signature = f"{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:  # decoding will report it as unreadable
            signature = "missing"
        digest.update(f"\n{absolute}|{signature}".encode())
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
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        np.save(tmp / "images.npy", decoded.images)
        np.save(tmp / "sizes.npy", np.stack([decoded.widths, decoded.heights], axis=1))
        meta = {"version": DATA_FORMAT_VERSION, "modes": decoded.modes, "errors": decoded.errors}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.rename(tmp, entry)  # atomic; fails if another process finished the same entry first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def decode_cached(
    paths: list[str],
    image_size: int,
    *,
    log: Callable[[str], None],
    progress: ProgressFn | None = None,
    description: str = "decoding images",
) -> DecodedFiles:
    """decode_files, through the on-disk cache."""
    entry = cache_root() / cache_key(paths, image_size)
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
    except OSError as exc:
        if entry.is_dir():  # another process wrote the same entry meanwhile
            log(f"data cache: decoded {len(paths)} images ({entry} already written)")
        else:
            log(f"data cache: decoded {len(paths)} images; could not save to {entry} ({exc})")
    return decoded
