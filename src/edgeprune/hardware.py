"""Device selection, thread control and the hardware label every measurement carries."""

from __future__ import annotations

import os
import platform
import random
from functools import lru_cache

import numpy as np
import torch

from edgeprune.errors import EdgepruneError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for `cuda` on a machine without it is an error."""
    if name not in DEVICE_CHOICES:
        raise EdgepruneError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgepruneError("--device cuda was asked for, but no CUDA device is available here")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (None keeps the current one) and return what is in force."""
    if threads is not None:
        if threads < 1:
            raise EdgepruneError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device: torch.device | str | None = None) -> str:
    """A short, file-name-safe description of the hardware, e.g. `cpu-AMD_EPYC_7B13-2c`."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{cpu_name()}-{os.cpu_count()}c"
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"{dev.type}-{safe.strip('_')}"


def software_label() -> str:
    return f"torch{torch.__version__.split('+')[0]}"
