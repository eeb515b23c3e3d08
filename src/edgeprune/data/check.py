"""The report behind `edgeprune data check`: source, class counts, file sizes/modes, duplicates."""

from __future__ import annotations

from collections.abc import Callable

from edgeprune.data.bundle import Split
from edgeprune.data.decode import ProgressFn
from edgeprune.data.dedup import duplicates_within, found_in, pixel_hashes
from edgeprune.data.load import load_data_with_stats

MAX_EXAMPLES = 5


def _describe(split: Split, index: int, split_name: str) -> str:
    return split.paths[index] if split.paths is not None else f"{split_name}[{index}]"


def check_data(
    spec: str = "digits",
    *,
    image_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    skip_bad: bool = False,
    max_per_class: int | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Load `spec` as training would, and return a JSON-ready report about it.

    Duplicates are exact: identical uint8 pixels after decoding and resizing to image_size."""
    loaded = load_data_with_stats(
        spec,
        image_size=image_size,
        val_fraction=val_fraction,
        seed=seed,
        download=download,
        skip_bad=skip_bad,
        max_per_class=max_per_class,
        test_fraction=test_fraction,
        log=log,
        progress=progress,
    )
    bundle, stats = loaded.bundle, loaded.files
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    counts = {
        name: {cls: int((split.labels == i).sum()) for i, cls in enumerate(bundle.class_names)}
        for name, split in splits.items()
    }
    hashes = {name: pixel_hashes(split.images) for name, split in splits.items()}
    across = {}
    for reference, other in (("train", "test"), ("val", "test"), ("train", "val")):
        first_in_reference = {}
        for i, h in enumerate(hashes[reference]):
            first_in_reference.setdefault(h, i)
        matches = found_in(hashes[reference], hashes[other])
        across[f"{reference}/{other}"] = {
            "count": len(matches),
            "examples": [
                {
                    other: _describe(splits[other], i, other),
                    reference: _describe(splits[reference], first_in_reference[hashes[other][i]], reference),
                }
                for i in matches[:MAX_EXAMPLES]
            ],
        }
    files = None
    if stats is not None:
        files = {
            "count": stats.count,
            "readable": stats.count - len(stats.unreadable),
            "width": {"min": min(stats.widths), "max": max(stats.widths)},
            "height": {"min": min(stats.heights), "max": max(stats.heights)},
            "modes": dict(stats.modes.most_common()),
        }
    return {
        "source": bundle.name,
        "kind": bundle.kind,
        "spec": spec,
        "image_size": image_size,
        "classes": bundle.class_names,
        "counts": counts,
        "totals": {name: len(split) for name, split in splits.items()},
        "files": files,
        "unreadable": [{"path": p, "reason": r} for p, r in (stats.unreadable.items() if stats else [])],
        "duplicates": {
            "method": f"identical uint8 pixels after decoding and resizing to {image_size}x{image_size}",
            "within": {name: duplicates_within(h) for name, h in hashes.items()},
            "across": across,
        },
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "notes": bundle.notes,
    }
