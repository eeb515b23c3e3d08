"""`Model`: a network together with everything needed to use it correctly — classes, input size,
normalisation, the data split it was trained on, its training recipe and pruning record.

The Python API passes these objects around; saving is an explicit step (`model.save(dir)` writes a
checkpoint folder, `Model.load(dir)` reads one, nothing unpickled)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.models.checkpoint import CheckpointMeta, check_data_for_model, load_checkpoint, save_checkpoint


@dataclass
class Model:
    module: nn.Module
    meta: CheckpointMeta

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Model:
        module, meta = load_checkpoint(path, device)
        return cls(module, meta)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a checkpoint folder, whole or not at all; an existing one only with overwrite."""
        return save_checkpoint(self.module.cpu(), self.meta, path, overwrite=overwrite)

    def with_meta(self, **changes: Any) -> Model:
        return Model(self.module, dataclasses.replace(self.meta, **changes))

    def check_data(self, data: Any, *, allow_other_split: bool = False, what: str = "the model") -> str | None:
        """May this model be evaluated or fine-tuned on `data` (a DataBundle)? Same classes, and
        not another split of its training data; see `checkpoint.check_data_for_model`."""
        return check_data_for_model(self.meta, data, allow_other_split=allow_other_split, what=what)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @property
    def architecture(self) -> str:
        return self.meta.architecture

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    @property
    def input_size(self) -> int:
        return int(self.meta.input_size)

    @property
    def mean(self) -> list[float]:
        return list(self.meta.mean)

    @property
    def std(self) -> list[float]:
        return list(self.meta.std)

    @property
    def split(self) -> dict[str, Any]:
        return dict(self.meta.split)

    @property
    def pruning(self) -> dict[str, Any]:
        return dict(self.meta.pruning)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.metrics)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.module.parameters())
        pruned = f", pruned {self.meta.pruning.get('method')}" if self.meta.pruning else ""
        return (f"Model({self.architecture}, {len(self.class_names)} classes, "
                f"{self.input_size}x{self.input_size}, {params:,} params{pruned})")
