"""Shared fixtures. The real data sets live outside the project (never copied in): the directory
named by $EDGEPRUNE_SHARED, or ../shared next to the project root. A missing folder fails the
tests that need it, loudly: in CI that is a broken set-up, not something to skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tests run on 2 cores next to other work: keep torch to one thread unless a test says otherwise.
torch.set_num_threads(1)


def shared_root() -> Path:
    env = os.environ.get("EDGEPRUNE_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    root = shared_root() / "datasets"
    if not root.is_dir():
        pytest.fail(
            f"shared datasets not found at {root}: set EDGEPRUNE_SHARED to the folder holding "
            "datasets/ (cifar10-jpeg, magnetic-tile) and weights/"
        )
    return root


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    root = shared_root() / "weights"
    if not root.is_dir():
        pytest.fail(f"shared weights not found at {root}: set EDGEPRUNE_SHARED")
    return root


@pytest.fixture(scope="session")
def cifar_jpeg(shared_datasets: Path) -> Path:
    return shared_datasets / "cifar10-jpeg"


@pytest.fixture(scope="session")
def magnetic_tile(shared_datasets: Path) -> Path:
    return shared_datasets / "magnetic-tile"
