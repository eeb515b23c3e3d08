"""Device selection, thread control and the hardware label every measurement carries."""

from __future__ import annotations

import random

import numpy as np
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.validation import check_option
from edgeprune.runtime.measure import cpu_device_label, hardware_label

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
        torch.set_num_threads(check_option("threads", threads))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_label(device: torch.device | str | None = None) -> str:
    """A short, file-name-safe description of the hardware, e.g. `cpu-AMD_EPYC_7B13-2c`.

    The CPU label comes from the torch-free runtime, so bench rows written on an edge device
    carry the same label as `edgeprune measure` on that device."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return hardware_label("cuda", torch.cuda.get_device_name(dev))
    return cpu_device_label()


def software_label() -> str:
    return f"torch{torch.__version__.split('+')[0]}"
