"""Where each image's time goes inside the station, so a stall says where it sits.

Per image, in the decision loop (runner.py):
- `wait`: for the next image (the source's pacing, or a camera that is late);
- `read`: the file read and hashed (from the image's arrival to the loop having it);
- `decode`, `infer`: in the Decider (the fallback's second call included);
- `drift`: the input statistics and the drift window's update (drift.py; none without a reference);
- `log`: the skip check and the transaction that logs the decision and its pending PLC signal;
- `plc`: from the logged row to the PLC's acknowledgement (the forwarder's thread).

`StageTimes` keeps the latest RECENT durations per stage; `summary()` gives p50, p99 and max,
over all of them or over those added since a mark (the MQTT interval). `HostLoad` adds what
the OS says about the machine: the load average and the share of CPU time stolen by the
hypervisor since the previous sample (Linux /proc/stat; None where the OS does not say).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any

import numpy as np

STAGES = ("wait", "read", "decode", "infer", "drift", "log", "plc")
RECENT = 10_000


class StageTimes:
    def __init__(self, keep: int = RECENT):
        self._times = {stage: deque(maxlen=keep) for stage in STAGES}
        self._added = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()  # the forwarder adds `plc` from its thread

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._times[stage].append(max(0.0, ms))
            self._added[stage] += 1

    def mark(self) -> dict[str, int]:
        """A position to summarise from later (`summary(since=mark)`)."""
        with self._lock:
            return dict(self._added)

    def summary(self, since: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
        out = {}
        with self._lock:
            for stage, values in self._times.items():
                n = self._added[stage] - (since or {}).get(stage, 0)
                recent = np.fromiter(values, dtype=float)[-n:] if n > 0 else np.zeros(0)
                out[stage] = ({"n": int(len(recent)), "p50_ms": float(np.percentile(recent, 50)),
                               "p99_ms": float(np.percentile(recent, 99)), "max_ms": float(recent.max())}
                              if len(recent) else {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None})
        return out


class HostLoad:
    """Load average and CPU steal since the previous call."""

    def __init__(self):
        self._previous = _cpu_ticks()
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except (AttributeError, OSError):
            load = None
        steal = None
        with self._lock:
            now = _cpu_ticks()
            if now is not None and self._previous is not None:
                total = now[0] - self._previous[0]
                steal = 100.0 * (now[1] - self._previous[1]) / total if total > 0 else None
            if now is not None:
                self._previous = now
        return {"load_1m_5m_15m": load, "cpu_steal_pct": steal, "cpus": os.cpu_count()}


def _cpu_ticks() -> tuple[int, int] | None:
    """(all CPU ticks, stolen ticks) from Linux's /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    # counted in user and nice.
    return sum(ticks[:8]), ticks[7]
