"""CPU energy from RAPL counters (Linux powercap), where the machine exposes them readably.

Each top-level RAPL zone (`intel-rapl:N`, one per CPU package; also used for AMD) has a
cumulative `energy_uj` counter that wraps at `max_energy_range_uj`. Sub-zones (`intel-rapl:N:M`,
cores/uncore/DRAM) are left out because the package already contains cores and uncore, and so is
`psys` (the whole platform, which contains the packages), so nothing is counted twice.

Torch-free, so `edgeprune measure` and the runtime bench on an edge device read energy alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POWERCAP_ROOT = Path("/sys/class/powercap")
ENERGY_SCOPE = (
    "CPU package energy (RAPL) of the whole machine during the timed runs, divided by images: "
    "it includes anything else the machine ran meanwhile"
)


@dataclass(frozen=True)
class RaplZone:
    name: str  # e.g. "intel-rapl:0 (package-0)"
    energy_file: Path
    max_energy_range_uj: int


def find_rapl_zones(root: Path = POWERCAP_ROOT) -> tuple[list[RaplZone], str]:
    """The readable package zones and a note: what is measured, or why nothing can be."""
    if not root.is_dir():
        return [], (
            f"not measured: {root} is absent (no RAPL energy counters on this machine, "
            "or a VM/container that hides them)"
        )
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    for zone_dir in sorted(root.glob("intel-rapl:*")):
        if zone_dir.name.count(":") != 1:
            continue
        try:
            label = (zone_dir / "name").read_text().strip()
            if label == "psys":
                continue
            energy_file = zone_dir / "energy_uj"
            int(energy_file.read_text())
            max_range = int((zone_dir / "max_energy_range_uj").read_text())
        except PermissionError:
            unreadable.append(zone_dir.name)
            continue
        except (OSError, ValueError):
            continue
        zones.append(RaplZone(f"{zone_dir.name} ({label})", energy_file, max_range))
    if zones:
        return zones, f"{ENERGY_SCOPE}; zones: {', '.join(z.name for z in zones)}"
    if unreadable:
        return [], (
            f"not measured: RAPL counters exist ({', '.join(unreadable)}) but energy_uj is not "
            "readable by this user (root-only on Linux >= 5.10; grant read access to measure)"
        )
    return [], f"not measured: no readable RAPL package zone under {root}"


def read_energy(zones: list[RaplZone]) -> list[int]:
    """The zones' cumulative counters now, in microjoules."""
    return [int(zone.energy_file.read_text()) for zone in zones]


def energy_used_uj(zones: list[RaplZone], before: list[int], after: list[int]) -> int:
    """Microjoules used between two readings, correcting each counter that wrapped once."""
    total = 0
    for zone, start, end in zip(zones, before, after, strict=True):
        total += end - start if end >= start else zone.max_energy_range_uj - start + end
    return total
