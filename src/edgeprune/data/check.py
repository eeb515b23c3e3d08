"""The report behind `edgeprune data check`: source, class counts, file sizes/modes, duplicates."""

from __future__ import annotations

from collections.abc import Callable

from edgeprune.data.bundle import Split
from edgeprune.data.decode import ProgressFn
from edgeprune.data.dedup import duplicates_within, found_in, pixel_hashes
from edgeprune.data.load import as_options, load_data_with_stats
from edgeprune.data.options import DataOptions
from edgeprune.runtime.preprocess import SIXTEEN_BIT_RULE, is_sixteen_bit

MAX_EXAMPLES = 5


def _describe(split: Split, index: int, split_name: str) -> str:
    return split.paths[index] if split.paths is not None else f"{split_name}[{index}]"


def check_data(
    spec: str | DataOptions = "digits",
    *,
    log: Callable[[str], None] | None = None,
    progress: ProgressFn | None = None,
    **options,
) -> dict:
    """Load `spec` as training would, and return a JSON-ready report about it.

    Duplicates are exact: identical uint8 pixels after decoding and resizing to image_size."""
    opts = as_options(spec, options)
    loaded = load_data_with_stats(opts, log=log, progress=progress)
    bundle, stats = loaded.bundle, loaded.files
    skipped_links = list(stats.skipped_links) if stats is not None else []
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
        sixteen_bit = sum(n for mode, n in stats.modes.items() if is_sixteen_bit(mode))
        files["sixteen_bit"] = {"count": sixteen_bit, "conversion": SIXTEEN_BIT_RULE if sixteen_bit else None}
    return {
        "source": bundle.name,
        "kind": bundle.kind,
        "spec": opts.spec,
        "image_size": opts.image_size,
        "split": bundle.split.to_dict(),
        "classes": bundle.class_names,
        "counts": counts,
        "totals": {name: len(split) for name, split in splits.items()},
        "files": files,
        "unreadable": [{"path": p, "reason": r} for p, r in (stats.unreadable.items() if stats else [])],
        "duplicates": {
            "method": f"identical uint8 pixels after decoding and resizing to {opts.image_size}x{opts.image_size}",
            "within": {name: duplicates_within(h) for name, h in hashes.items()},
            "across": across,
        },
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "skipped_links": skipped_links,
        "notes": bundle.notes,
    }
