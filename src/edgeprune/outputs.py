"""Where results go: output locations checked before the work, and the one safe way to write.

Checks (`check_output_folder`, `check_output_file`) run before any training, pruning or export,
so a bad `--out` fails in a second, not after an hour: an existing result is never replaced
without `overwrite`, an input is never written into even with it, and the location must be
creatable (no file in the way, a writable parent).

Writes (`atomic_folder`, `atomic_file`, `staging_folder` + `publish_files`) happen under a unique
temporary name beside the target (same folder, so the final rename is atomic; unique, so two
writers never touch each other's files), are fsynced, and are renamed into place only when
complete. A checkpoint folder replaces an old one with one atomic exchange (Linux renameat2
RENAME_EXCHANGE; elsewhere: old aside, new in, old removed), so no reader ever sees new weights
under an old manifest. Without `overwrite` a target that appeared meanwhile (another command
writing the same --out) is never replaced: that command wins whole and this one fails cleanly.
A writer killed before the rename leaves only a `.NAME.tmp-*` entry beside the target.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from edgeprune.errors import EdgepruneError

# The checkpoint format's two files (edgeprune.models.checkpoint takes its names from here): the
# only entries a folder may hold for --overwrite to replace it.
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, MANIFEST_FILE)
# The manifest's format marker: a folder is a checkpoint edgeprune may replace only when its
# model.json says so, not merely because two files carry these common names.
CHECKPOINT_FORMAT = "edgeprune-checkpoint"
TMP_TAG = ".tmp-"

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------------- checks


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(path))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_not_link(out: Path, what: str) -> None:
    if out.is_symlink():
        raise EdgepruneError(f"{what} {out} is a symbolic link: name the real location instead")


def _check_creatable(out: Path, what: str) -> None:
    """The first existing folder above `out` is a folder this process can write in."""
    ancestor = Path(os.path.abspath(out)).parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EdgepruneError(f"cannot create {what} {out}: {ancestor} is a file, not a folder")
    try:  # a real probe: os.access says yes to root on a read-only file system
        # Named like the writer's own temporary entries (.NAME.tmp-*): a writer killed between
        # the two calls leaves nothing of another kind (seen once in CI under load).
        os.rmdir(tempfile.mkdtemp(prefix=f".{Path(out).name}{TMP_TAG}probe-", dir=ancestor))
    except OSError as exc:
        raise EdgepruneError(
            f"cannot write {what} {out}: {ancestor} is not writable ({exc.strerror or exc}); "
            "choose another location"
        ) from None


def _check_inputs(out: Path, inputs: Iterable[PathLike], what: str, *, folder: bool) -> None:
    real = _real(out)
    for given in inputs:
        source = _real(given)
        if real == source:
            problem = "is"
        elif _within(real, source):
            problem = "is inside"
        elif folder and _within(source, real):
            problem = "contains"  # replacing the folder would delete the input
        else:
            continue
        raise EdgepruneError(
            f"{what} {out} {problem} the input {given}: writing there would destroy what is being "
            "read (even with --overwrite); choose another location"
        )


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise EdgepruneError(f"cannot read {folder}: {exc.strerror or exc}") from None


def check_output_folder(
    out: PathLike, *, inputs: Iterable[PathLike] = (), overwrite: bool = False,
    what: str = "output folder",
) -> Path:
    """Refuse a checkpoint folder `out` that would lose something: an existing non-empty folder
    without `overwrite`; with it, a folder holding anything but a checkpoint's files; an input
    (or a folder inside or around one) always; a file in the way; an unwritable parent."""
    out = Path(out)
    _check_not_link(out, what)
    _check_inputs(out, inputs, what, folder=True)
    if os.path.lexists(out):
        if not out.is_dir():
            raise EdgepruneError(f"{what} {out} is a file, not a folder: choose another location")
        entries = _entries(out)
        if entries and not overwrite:
            held = "a checkpoint" if MANIFEST_FILE in entries else f"{len(entries)} file(s) or folder(s)"
            raise EdgepruneError(
                f"{what} {out} already exists and holds {held}: pass --overwrite "
                "(overwrite=True) to replace it, or choose another location"
            )
        others = [e for e in entries if e not in CHECKPOINT_FILES]
        if others:
            raise EdgepruneError(
                f"{what} {out} holds entries that are not part of a checkpoint "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): even --overwrite "
                "replaces only a checkpoint folder; choose another location"
            )
        if entries:
            _check_is_checkpoint(out, what)
    _check_creatable(out, what)
    return out


def _check_is_checkpoint(out: Path, what: str) -> None:
    """--overwrite replaces a folder only when its content says edgeprune wrote it: a model.json
    that is JSON with the checkpoint format marker (another tool's model.json + model.safetensors
    would otherwise be deleted)."""
    import json

    manifest = out / MANIFEST_FILE
    try:
        marker = json.loads(manifest.read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        marker = None
    if marker != CHECKPOINT_FORMAT:
        raise EdgepruneError(
            f"{what} {out} is not an edgeprune checkpoint ({manifest} has no "
            f'"format": "{CHECKPOINT_FORMAT}"): even --overwrite replaces only a checkpoint edgeprune '
            "wrote; move its files away or choose another location"
        )


def check_output_file(
    out: PathLike, *, inputs: Iterable[PathLike] = (), overwrite: bool = False,
    companions: Sequence[PathLike] = (), what: str = "output file",
) -> Path:
    """Refuse an artifact path `out` (and its `companions`, e.g. the FILE.json report) that would
    lose something: an existing file without `overwrite`; a folder in the way; an input file, or
    a path inside an input or inside any checkpoint folder, always; an unwritable parent."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise EdgepruneError(f"{what} {out} names a folder, not a file")
    inputs = list(inputs)
    for path in (out, *map(Path, companions)):
        _check_not_link(path, what)
        _check_inputs(path, inputs, what, folder=False)
    for folder in _real(out).parents:
        if all((folder / name).is_file() for name in CHECKPOINT_FILES):
            raise EdgepruneError(
                f"{what} {out} is inside the checkpoint folder {folder}: an artifact there could "
                "replace the checkpoint's own files; write it beside the folder instead"
            )
    for path in (out, *map(Path, companions)):
        if path.is_dir():
            raise EdgepruneError(f"{what} {path} is a folder, not a file: choose another location")
        if os.path.lexists(path) and not overwrite:
            raise EdgepruneError(
                f"{what} {path} already exists: pass --overwrite (overwrite=True) to replace it, "
                "or choose another location"
            )
    _check_creatable(out, what)
    return out


# --------------------------------------------------------------------------------- primitives

_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100


@functools.lru_cache(maxsize=1)
def _renameat2_function():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """rename with flags; False where the C library or the file system does not offer them."""
    function = _renameat2_function()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _fsync(path: PathLike, *, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        return  # e.g. folders cannot be opened on Windows: nothing to sync there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(directory, name))
        _fsync(directory, folder=True)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, folder: bool) -> None:
    """mkdtemp / mkstemp create private (0700 / 0600) entries; results get the usual mode."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise publishing in one folder (two writers of the same --out); best effort: where
    flock is missing the renames alone still keep every result whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _appeared(target: Path, what: str) -> EdgepruneError:
    return EdgepruneError(
        f"{what} {target} appeared while this command ran (another command writing the same "
        "location?): it was left as it is and nothing was written; choose another location or "
        "pass --overwrite"
    )


def _temp_name(target: Path) -> str:
    return f".{target.name}{TMP_TAG}"


# ------------------------------------------------------------------------------------ folders


def publish_folder(tmp: Path, target: Path, *, overwrite: bool, what: str = "output folder",
                   owned: bool = False) -> None:
    """Move the complete folder `tmp` to `target` (same parent) in one step. With `overwrite`, a
    folder there is replaced only while it still holds a checkpoint alone, unless `owned`: the
    caller owns whatever is there (a study's unfinished experiment folder) and it is replaced."""
    parent = target.parent
    with _folder_lock(parent):
        existing = _entries(target) if target.is_dir() and not target.is_symlink() else None
        if existing:
            if not overwrite:
                raise _appeared(target, what)
            if not owned:
                check_output_folder(target, overwrite=True, what=what)  # still only a checkpoint?
            if _renameat2(tmp, target, _RENAME_EXCHANGE):
                old = tmp  # the exchange left the old folder under the temporary name
            else:
                old = parent / f"{_temp_name(target)}old-{uuid.uuid4().hex[:12]}"
                os.rename(target, old)
                os.rename(tmp, target)
            _fsync(parent, folder=True)
            shutil.rmtree(old, ignore_errors=True)
            return
        try:  # POSIX: a folder replaces a missing target or an empty folder, never anything else
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise _appeared(target, what) from None
            raise EdgepruneError(f"cannot write {what} {target}: {exc.strerror or exc}") from None
        _fsync(parent, folder=True)


def _temp_folder_beside(target: Path, what: str) -> Path:
    """A fresh, uniquely named folder in target's parent (created if missing): same file system,
    so a rename can publish it atomically."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=_temp_name(target), dir=target.parent))
    except OSError as exc:
        raise EdgepruneError(f"cannot write {what}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_folder(target: PathLike, *, overwrite: bool = False, what: str = "output folder",
                  owned: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; when the block ends without an error, its
    contents are fsynced and it becomes `target` whole (see publish_folder, also for `owned`). On
    an error it is removed and `target` is untouched."""
    target = Path(os.path.abspath(target))
    tmp = _temp_folder_beside(target, f"{what} {target}")
    _default_mode(tmp, folder=True)
    try:
        yield tmp
        _sync_tree(tmp)
        publish_folder(tmp, target, overwrite=overwrite, what=what, owned=owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; left over after an error


# -------------------------------------------------------------------------------------- files


def publish_files(pairs: Sequence[tuple[Path, Path]], *, overwrite: bool, what: str = "output file") -> None:
    """Rename each complete (src, target) pair into place, in order, under one lock: without
    `overwrite` nothing is renamed when any target exists (a concurrent writer's result is
    never replaced); with it each target is replaced atomically."""
    if not pairs:
        return
    parents = {p.parent for _, p in pairs}
    with contextlib.ExitStack() as stack:
        for parent in sorted(parents):
            stack.enter_context(_folder_lock(parent))
        for src, target in pairs:
            _fsync(src)
            _default_mode(src, folder=False)
            if target.is_dir() and not target.is_symlink():
                raise EdgepruneError(f"{what} {target} is a folder, not a file: nothing was written")
            if not overwrite and os.path.lexists(target):
                raise _appeared(target, what)
        for src, target in pairs:
            try:
                if overwrite or not _renameat2(src, target, _RENAME_NOREPLACE):
                    if not overwrite and os.path.lexists(target):  # fallback: checked under the lock
                        raise _appeared(target, what)
                    os.replace(src, target)
            except FileExistsError:
                raise _appeared(target, what) from None
            except OSError as exc:
                raise EdgepruneError(f"cannot write {what} {target}: {exc.strerror or exc}") from None
        for parent in parents:
            _fsync(parent, folder=True)


@contextlib.contextmanager
def staging_folder(beside: PathLike) -> Iterator[Path]:
    """A fresh temporary folder next to `beside` for several files that are published together
    with publish_files; removed (with whatever is left in it) when the block ends."""
    beside = Path(os.path.abspath(beside))
    tmp = _temp_folder_beside(beside, f"beside {beside}")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: PathLike, *, overwrite: bool = False, what: str = "output file") -> Iterator[Path]:
    """Yield a temporary path beside `target` (same suffix) to write; when the block ends without
    an error it is fsynced and renamed to `target` (see publish_files)."""
    target = Path(os.path.abspath(target))
    with staging_folder(target) as tmp:
        work = tmp / target.name
        yield work
        if not work.is_file():
            raise EdgepruneError(f"internal: nothing was written for {target}")
        publish_files([(work, target)], overwrite=overwrite, what=what)


# ---------------------------------------------------------------------- caches and digests


def cache_root() -> Path:
    """$EDGEPRUNE_CACHE or ~/.cache/edgeprune: every cache lives below it (decoded images in
    data/, the runtime's `auto` choice in runtime/, layer latency tables in latency/)."""
    return Path(os.environ.get("EDGEPRUNE_CACHE") or Path.home() / ".cache" / "edgeprune")


def file_sha256(path: PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
