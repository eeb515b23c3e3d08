"""Helpers the benchmarks share: where the shared data lives, and result file names."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeprune.hardware import device_label, software_label

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
WORK = PROJECT_ROOT / "benchmarks" / "work"  # checkpoints of long runs (git-ignored, resumable)


def run_main(main) -> None:
    """Run a benchmark's main(): its exit code, or `error: ...` and exit 2 on bad input."""
    from edgeprune.errors import EdgepruneError

    try:
        sys.exit(main())
    except EdgepruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def shared_root() -> Path:
    env = os.environ.get("EDGEPRUNE_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


def result_path(name: str, suffix: str = "csv") -> Path:
    """benchmarks/results/<name>_<hardware>_<software>.<suffix>"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}_{device_label()}_{software_label()}.{suffix}"


def imagenet_hub_cache(tmp_root: Path) -> Path:
    """A torch hub cache holding the shared ImageNet V1 MobileNetV2 file (a link, not a copy)."""
    source = shared_root() / "weights" / "mobilenet_v2-b0353104.pth"
    if not source.is_file():
        raise SystemExit(f"ImageNet V1 weights not found at {source}: set EDGEPRUNE_SHARED")
    cache = tmp_root / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / source.name
    if not link.exists():
        link.symlink_to(source)
    return tmp_root
