"""The dashboard's settings: the `[dashboard]` table of station.toml (issue 12).

    [dashboard]
    token = "..."              # or EDGEPRUNE_STATION_TOKEN; without one nothing can be changed
    gate_set = "gate/"         # labelled class-folder tree a new model is checked on
    min_accuracy = 0.80        # top-1 on the gate set
    min_defect_recall = 0.90   # share of the gate set's defective parts called DEFECT
    max_latency_ms = 20.0      # batch-1 median latency on this device
    max_upload_mb = 100

The server itself binds to `http = "HOST:PORT"` (top level, or `--http`), 127.0.0.1 unless told.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.validation import check_number

TOKEN_ENV = "EDGEPRUNE_STATION_TOKEN"


@dataclass(frozen=True)
class DashboardConfig:
    token: str | None = None  # bearer token for every state-changing request
    gate_set: Path | str | None = None  # DIR/<class>/<image>: the model's classes, in its order
    min_accuracy: float = 0.0
    min_defect_recall: float = 0.0
    max_latency_ms: float | None = None
    gate_max_per_class: int | None = 200  # images per class the gate reads (None: all)
    max_upload_mb: float = 100.0

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise EdgepruneError("dashboard.token must be a string of at least 8 characters")
        if self.gate_set is not None:
            if not isinstance(self.gate_set, (str, Path)):
                raise EdgepruneError(f"dashboard.gate_set must be a folder path, got {self.gate_set!r}")
            object.__setattr__(self, "gate_set", Path(self.gate_set))
        check_number(self.min_accuracy, "dashboard.min_accuracy", min=0, max=1)
        check_number(self.min_defect_recall, "dashboard.min_defect_recall", min=0, max=1)
        if self.max_latency_ms is not None:
            check_number(self.max_latency_ms, "dashboard.max_latency_ms", min=0, min_open=True)
        if self.gate_max_per_class is not None:
            check_number(self.gate_max_per_class, "dashboard.gate_max_per_class", min=1, integer=True)
        check_number(self.max_upload_mb, "dashboard.max_upload_mb", min=0, min_open=True, max=4096)

    def resolved(self, base: Path) -> DashboardConfig:
        """Relative gate_set taken against `base` (the config file's folder)."""
        if self.gate_set is None or Path(self.gate_set).is_absolute():
            return self
        return replace(self, gate_set=base / self.gate_set)

    def bearer_token(self) -> str | None:
        """The config's token, else $EDGEPRUNE_STATION_TOKEN, else None (nothing may change)."""
        return self.token or os.environ.get(TOKEN_ENV) or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def parse_http(address: object) -> tuple[str, int]:
    """`HOST:PORT` or `:PORT` (127.0.0.1) or `PORT` -> (host, port)."""
    if isinstance(address, int):
        address = str(address)
    if not isinstance(address, str) or not address:
        raise EdgepruneError(f"http must be HOST:PORT, e.g. 127.0.0.1:8080, got {address!r}")
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgepruneError(f"http must be HOST:PORT with a port 1..65535, e.g. 127.0.0.1:8080, got {address!r}")
    return host, int(port)
