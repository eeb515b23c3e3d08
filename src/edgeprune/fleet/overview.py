"""What the fleet page and `fleet status` show of the loop: the model registry, the roll-outs and
the retrains, read through their own classes (registry.ModelRegistry, rollout.Rollouts,
retrain.Retrains) on the fleet database's engine, and the one document both print.

    view = LoopView(store.engine, models_dir_for(config.data))   # creates the tables a database lacks
    overview = view.read(running=figures.models)                 # LoopOverview, newest first
    document = fleet_document(figures, overview, config)         # /api/fleet and `fleet status --json`

No token reaches the document: station tokens live in the fleet config and travel in request
headers only, and `fleet_document` still removes every configured token from every string in it,
because an event's detail quotes what a station answered, and that text is not the fleet's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy.engine import Engine

from edgeprune.fleet.config import FleetConfig
from edgeprune.fleet.registry import ModelRegistry, RegisteredModel
from edgeprune.fleet.retrain import RetrainRecord, Retrains
from edgeprune.fleet.rollout import ACTIVE, Rollout, Rollouts, StationState
from edgeprune.fleet.store import FleetFigures

REGISTRY_SHOWN = 20  # the newest registered models
ROLLOUTS_SHOWN = 5  # the newest roll-outs
EVENTS_SHOWN = 15  # each roll-out's newest events
RETRAINS_SHOWN = 10  # the newest retrains
REDACTED = "[token]"


@dataclass(frozen=True)
class RegistryEntry:
    """One registered model as the page shows it (no file paths of the fleet host)."""
    sha256: str
    name: str | None
    state: str
    parent_sha256: str | None
    accuracy: float
    balanced_accuracy: float
    defect_recall: float
    false_reject_rate: float | None
    size_bytes: int
    latency_ms_p50: float
    latency_device: str
    fleet_labels: int | None
    acceptance_images: int
    registered_ts: float
    state_ts: float
    reason: str | None  # the last state change's

    @classmethod
    def of(cls, model: RegisteredModel, reason: str | None) -> RegistryEntry:
        values = {name: getattr(model, name) for name in cls.__dataclass_fields__ if name != "reason"}
        return cls(**values, reason=reason)


@dataclass(frozen=True)
class RolloutEvent:
    ts: float
    station_id: str | None
    kind: str
    detail: str


@dataclass(frozen=True)
class RolloutView:
    id: int
    model_sha256: str
    model_name: str | None
    model_state: str | None  # the registry's state of the model
    state: str  # shadow | canary | waves | rolling-back | done | stopped | rolled-back
    active: bool
    wave: int
    stages: list[str]  # shadow, canary, wave 1 .. wave N, done
    stage: str  # the stage it is in, or the one it ended in (a breach stops it there)
    reason: str | None
    created_ts: float
    updated_ts: float
    settings: dict[str, Any]
    stations: list[StationState]  # in roll-out order
    events: list[RolloutEvent]  # newest first, EVENTS_SHOWN at most
    event_count: int


@dataclass(frozen=True)
class LoopOverview:
    registry: list[RegistryEntry]  # newest first
    running: dict[str, RegistryEntry]  # every registered model a station runs, by sha256
    rollouts: list[RolloutView]  # newest first
    retrains: list[RetrainRecord]  # newest first

    def to_dict(self) -> dict[str, Any]:
        return {"registry": [asdict(m) for m in self.registry],
                "running_models": {sha: asdict(m) for sha, m in self.running.items()},
                "rollouts": [asdict(r) for r in self.rollouts],
                "retrains": [r.to_dict() for r in self.retrains]}

    def current_rollout(self) -> RolloutView | None:
        """The active roll-out (one at a time), else the newest."""
        return next((r for r in self.rollouts if r.active), self.rollouts[0] if self.rollouts else None)


def rollout_stages(r: Rollout) -> list[str]:
    last_wave = max((s.wave for s in r.station_states), default=0)
    return ["shadow", "canary", *(f"wave {n}" for n in range(1, last_wave + 1)), "done"]


def rollout_stage(r: Rollout, event_kinds: Iterable[str]) -> str:
    if r.state in ("shadow", "canary", "done"):
        return r.state
    if r.state == "waves":
        return f"wave {r.wave}"
    # stopped, rolling-back, rolled-back: where the breach came. A roll-out left shadow when
    # its "canary" event was written; its wave number stays where the breach stopped it.
    if "canary" not in set(event_kinds):
        return "shadow"
    return "canary" if r.wave == 0 else f"wave {r.wave}"


class LoopView:
    """Reads the registry, roll-outs and retrains; constructing it creates whichever of their tables
    the database lacks (each class creates its own), so an older fleet database works as it is."""

    def __init__(self, engine: Engine, models_dir: str | Path):
        self.registry = ModelRegistry(engine, models_dir)
        self.rollouts = Rollouts(engine, self.registry)
        self.retrains = Retrains(engine)

    def _entry(self, model: RegisteredModel) -> RegistryEntry:
        changes = self.registry.states(model.sha256)
        return RegistryEntry.of(model, changes[-1].reason if changes else None)

    def _rollout(self, r: Rollout, events_shown: int) -> RolloutView:
        events = self.rollouts.events(r.id)
        model = self.registry.find(r.model_sha256)
        newest = [RolloutEvent(e["ts"], e["station_id"], e["kind"], e["detail"]) for e in reversed(events)]
        return RolloutView(
            id=r.id, model_sha256=r.model_sha256, model_name=model.name if model else None,
            model_state=model.state if model else None, state=r.state, active=r.state in ACTIVE, wave=r.wave,
            stages=rollout_stages(r), stage=rollout_stage(r, (e["kind"] for e in events)), reason=r.reason,
            created_ts=r.created_ts, updated_ts=r.updated_ts, settings=asdict(r.settings),
            stations=r.station_states, events=newest[:events_shown], event_count=len(events))

    def read(self, running: Iterable[str] = (), *, registry_shown: int = REGISTRY_SHOWN,
             rollouts_shown: int = ROLLOUTS_SHOWN, events_shown: int = EVENTS_SHOWN,
             retrains_shown: int = RETRAINS_SHOWN) -> LoopOverview:
        """`running`: the sha256s the stations run (FleetFigures.models), named when registered."""
        registry = [self._entry(m) for m in self.registry.models(registry_shown)]
        by_sha = {m.sha256: m for m in registry}
        shown_running: dict[str, RegistryEntry] = {}
        for sha in running:
            if sha in by_sha:
                shown_running[sha] = by_sha[sha]
            elif (model := self.registry.find(sha)) is not None:  # registered before the newest few
                shown_running[sha] = self._entry(model)
        return LoopOverview(registry=registry, running=shown_running,
                            rollouts=[self._rollout(r, events_shown) for r in self.rollouts.latest(rollouts_shown)],
                            retrains=self.retrains.latest(retrains_shown))


def config_secrets(config: FleetConfig) -> list[str]:
    """Every token the fleet config holds or names: the page's own and each station's."""
    found = [config.bearer_token(), *(e.bearer_token() for e in config.endpoints)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` (JSON-like) with every secret replaced in every string, keys included. Hand-written:
    a walk over dicts, lists and strings is all it takes, and no library knows our tokens."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


def fleet_document(figures: FleetFigures, overview: LoopOverview, config: FleetConfig,
                   server: dict[str, Any] | None = None) -> dict[str, Any]:
    """/api/fleet's JSON (and `fleet status --json`): the stations' figures, the server's state
    (None outside `fleet serve`), the registry, roll-outs and retrains; no configured token."""
    out = figures.to_dict()
    out["server"] = server
    out["token_configured"] = config.bearer_token() is not None
    out.update(overview.to_dict())
    return redact(out, config_secrets(config))
