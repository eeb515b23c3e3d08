"""How many bytes the weights take on disk, raw and compressed."""

from __future__ import annotations

import gzip

from safetensors.torch import save
from torch import nn

from edgeprune.models.checkpoint import FORMAT

GZIP_LEVEL = 9


def weight_file_sizes(model: nn.Module) -> tuple[int, int]:
    """(bytes, gzip bytes) of the state_dict serialised as safetensors.

    The bytes are exactly those of a checkpoint's `model.safetensors` (same metadata); the gzip
    size uses level 9 and a fixed header time so it is reproducible. Zeroed weights do not
    shrink the raw file but do shrink the compressed one.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    raw = save(state, metadata={"format": FORMAT})
    return len(raw), len(gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0))
