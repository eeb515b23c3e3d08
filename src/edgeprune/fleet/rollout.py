"""A staged roll-out: shadow -> canary -> waves -> done, or stopped / rolled back, with every step
in the fleet database so whoever drives it next (the fleet server after a restart, or another
`edgeprune fleet rollout --wait`) continues where it stood.

    rollouts = Rollouts(engine, registry, config)
    rollout_id = rollouts.create(model_sha256, ["s1", "s2", "s3"], settings)
    driver = Driver(rollouts, owner="cli-1234")
    driver.step(rollout_id)       # one idempotent step: ask the stations, advance or roll back

1. shadow: every selected station runs the candidate beside its model (POST /api/shadow), on the
   same live images, in its dashboard's low-priority process, never to the PLC. After
   `shadow_images` images on each (and `min_reviewed_defects` reviewed defects), the station's
   figures (GET /api/shadow) must show:
   - agreement >= `min_agreement`, unless, on the parts people reviewed, the candidate is right
     significantly more often than the running model (it disagrees where the running one errs:
     after a drift, the reason for the candidate);
   - no significantly lower defect recall on the reviewed defects (paired, part by part);
   - (if set) a median latency within `max_shadow_latency_ms`.
2. canary: the first station switches through its gated POST /api/models (its own gate can still
   refuse), then decides `canary_images` images whose defect rate, review rate and latency must
   stay within the tolerances of its own `history_images` decisions before the switch. A defect or
   review rate that moved is not a breach when the reviewed parts show the candidate right
   significantly more often than the model before it; the reviewed parts showing it right
   significantly less often is a breach whatever the rates.
3. waves: the other stations, in `waves` groups, each switched and watched the same way.
4. A breach at any stage rolls every switched station back (POST /api/models/rollback) and marks
   the model `rejected` in the registry with the figures; a breach in shadow just stops it.
Significance: one-sided exact tests at `significance` (McNemar's for the shadow's paired parts,
Fisher's for the canary's before / after), scipy's, as edgeprune.metrics.paired does for the
k-fold verdicts. A few reviewed parts never decide either way; with `max_shadow_images` /
`max_canary_images` an undecided candidate that leads is watched on instead of stopped.

Only one driver steps a roll-out at a time: a lease in its row (owner, until), taken with one
conditional UPDATE, works the same on SQLite and PostgreSQL. A station that does not answer is
retried at every step (its last error and since when are stored and shown); a roll-out waits for it,
or, once it has been away longer than `max_unreachable_s`, stops and rolls back.
Station tokens come from the fleet config; they are sent in the Authorization header only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, or_, select, update
from sqlalchemy.engine import Engine

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import FleetConfig, RolloutSettings, StationEndpoint
from edgeprune.fleet.registry import ModelRegistry
from edgeprune.outputs import file_sha256

log = logging.getLogger("edgeprune.fleet.rollout")

ACTIVE = ("shadow", "canary", "waves", "rolling-back")
FINAL = ("done", "stopped", "rolled-back")
LEASE_S = 15.0
PAGE = 1000  # the station's /api/decisions page limit

rollout_metadata = MetaData()
rollouts_t = Table(
    "rollouts", rollout_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_sha256", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # shadow | canary | waves | rolling-back | done | stopped | rolled-back
    Column("wave", Integer, nullable=False, default=0),  # 0: the canary; 1..waves
    Column("stations", Text, nullable=False),  # JSON list, in roll-out order
    Column("settings", Text, nullable=False),  # JSON RolloutSettings
    Column("created_ts", Float, nullable=False),
    Column("updated_ts", Float, nullable=False),
    Column("reason", Text),  # why it ended (or is rolling back)
    Column("figures", Text),  # JSON: the figures behind the reason
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
)
rollout_stations_t = Table(
    "rollout_stations", rollout_metadata,
    Column("rollout_id", Integer, primary_key=True, autoincrement=False),
    Column("station_id", String(64), primary_key=True),
    Column("wave", Integer, nullable=False),
    # pending | shadowing | shadow-passed | switched | watched | rolled-back
    Column("state", String(16), nullable=False),
    Column("previous_sha256", String(64)),
    Column("switch_after", Integer),  # the station's last decision id before it switched
    Column("figures", Text),  # JSON: shadow or canary figures, latest
    Column("last_error", Text),
    Column("error_since", Float),
    Column("updated_ts", Float, nullable=False),
)
rollout_events_t = Table(
    "rollout_events", rollout_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("station_id", String(64)),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("figures", Text),
)


@dataclass(frozen=True)
class StationState:
    station_id: str
    wave: int
    state: str
    previous_sha256: str | None
    switch_after: int | None
    figures: dict[str, Any] | None
    last_error: str | None
    error_since: float | None


@dataclass(frozen=True)
class Rollout:
    id: int
    model_sha256: str
    state: str
    wave: int
    stations: list[str]
    settings: RolloutSettings
    created_ts: float
    updated_ts: float
    reason: str | None
    figures: dict[str, Any] | None
    station_states: list[StationState]

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["settings"] = asdict(self.settings)
        return out


def assign_waves(stations: list[str], waves: int) -> dict[str, int]:
    """The first station is the canary (wave 0); the rest split into `waves` near-equal groups."""
    out = {stations[0]: 0}
    rest = stations[1:]
    groups = [list(g) for g in np.array_split(np.array(rest, dtype=object), min(waves, len(rest)))] if rest else []
    for number, group in enumerate(groups, start=1):
        for station in group:
            out[station] = number
    return out


class Rollouts:
    """The roll-outs' tables: create, read, change (each change with an event, in one transaction)."""

    def __init__(self, engine: Engine, registry: ModelRegistry):
        self.engine = engine
        self.registry = registry
        rollout_metadata.create_all(engine)

    def active(self) -> list[int]:
        with self.engine.connect() as conn:
            return [r.id for r in conn.execute(select(rollouts_t.c.id).where(rollouts_t.c.state.in_(ACTIVE))
                                               .order_by(rollouts_t.c.id))]

    def latest(self, limit: int = 20) -> list[Rollout]:
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(select(rollouts_t.c.id).order_by(rollouts_t.c.id.desc()).limit(limit))]
        return [self.get(i) for i in ids]

    def create(self, model_sha256: str, stations: list[str], settings: RolloutSettings) -> int:
        if not stations:
            raise EdgepruneError("a roll-out needs at least one station")
        running = self.active()
        if running:
            other = self.get(running[0])
            raise EdgepruneError(f"roll-out {other.id} of {other.model_sha256[:12]} is still {other.state}: "
                                 "one roll-out at a time (wait for it, or let it finish)")
        model = self.registry.find(model_sha256)
        if model is None:
            raise EdgepruneError(f"model {model_sha256[:12]} is not registered")
        if model.state == "rejected":
            raise EdgepruneError(f"model {model_sha256[:12]} was rejected: {self.registry.states(model_sha256)[-1].reason}")
        now = time.time()
        waves = assign_waves(stations, settings.waves)
        with self.engine.begin() as conn:
            rollout_id = conn.execute(rollouts_t.insert().values(
                model_sha256=model_sha256, state="shadow", wave=0, stations=json.dumps(stations),
                settings=json.dumps(asdict(settings)), created_ts=now, updated_ts=now)).inserted_primary_key[0]
            for station in stations:
                conn.execute(rollout_stations_t.insert().values(rollout_id=rollout_id, station_id=station,
                                                                wave=waves[station], state="pending", updated_ts=now))
            self._event(conn, rollout_id, None, "created",
                        f"shadow on {', '.join(stations)}; canary {stations[0]}; "
                        f"then {max(waves.values())} wave(s)", asdict(settings))
            self.registry.set_state(model_sha256, "shadow", f"roll-out {rollout_id}: shadow on {len(stations)} station(s)",
                                    conn=conn)
        return int(rollout_id)

    def get(self, rollout_id: int) -> Rollout:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts_t).where(rollouts_t.c.id == rollout_id)).first()
            if row is None:
                raise EdgepruneError(f"no roll-out {rollout_id}")
            stations = conn.execute(select(rollout_stations_t).where(rollout_stations_t.c.rollout_id == rollout_id)).all()
        order = json.loads(row.stations)
        states = sorted((StationState(s.station_id, s.wave, s.state, s.previous_sha256, s.switch_after,
                                      json.loads(s.figures) if s.figures else None, s.last_error, s.error_since)
                         for s in stations), key=lambda s: order.index(s.station_id))
        return Rollout(row.id, row.model_sha256, row.state, row.wave, order, RolloutSettings(**json.loads(row.settings)),
                       row.created_ts, row.updated_ts, row.reason, json.loads(row.figures) if row.figures else None,
                       states)

    def events(self, rollout_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(rollout_events_t).where(rollout_events_t.c.rollout_id == rollout_id)
                                .order_by(rollout_events_t.c.id)).all()
        return [{"ts": r.ts, "station_id": r.station_id, "kind": r.kind, "detail": r.detail,
                 "figures": json.loads(r.figures) if r.figures else None} for r in rows]

    def _event(self, conn, rollout_id: int, station: str | None, kind: str, detail: str,
               figures: dict[str, Any] | None = None) -> None:
        conn.execute(rollout_events_t.insert().values(rollout_id=rollout_id, ts=time.time(), station_id=station,
                                                      kind=kind, detail=detail,
                                                      figures=json.dumps(figures) if figures is not None else None))

    def set_station(self, rollout_id: int, station: str, *, event: tuple[str, str] | None = None,
                    event_figures: dict | None = None, **values: Any) -> None:
        if "figures" in values and values["figures"] is not None:
            values["figures"] = json.dumps(values["figures"])
        with self.engine.begin() as conn:
            conn.execute(update(rollout_stations_t).where(and_(rollout_stations_t.c.rollout_id == rollout_id,
                                                               rollout_stations_t.c.station_id == station))
                         .values(updated_ts=time.time(), **values))
            if event is not None:
                self._event(conn, rollout_id, station, event[0], event[1], event_figures)

    def set_rollout(self, rollout_id: int, *, event: tuple[str, str], figures: dict | None = None,
                    model_state: tuple[str, str] | None = None, **values: Any) -> None:
        if figures is not None:
            values["figures"] = json.dumps(figures)
        with self.engine.begin() as conn:
            conn.execute(update(rollouts_t).where(rollouts_t.c.id == rollout_id).values(updated_ts=time.time(), **values))
            self._event(conn, rollout_id, None, event[0], event[1], figures)
            if model_state is not None:
                sha = conn.execute(select(rollouts_t.c.model_sha256).where(rollouts_t.c.id == rollout_id)).scalar_one()
                self.registry.set_state(sha, model_state[0], model_state[1], figures, conn=conn)

    def lease(self, rollout_id: int, owner: str, seconds: float = LEASE_S) -> bool:
        """Take or renew the right to step this roll-out (one driver at a time)."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(update(rollouts_t).where(and_(
                rollouts_t.c.id == rollout_id,
                or_(rollouts_t.c.lease_owner.is_(None), rollouts_t.c.lease_owner == owner,
                    rollouts_t.c.lease_until < now))).values(lease_owner=owner, lease_until=now + seconds))
            return result.rowcount == 1

    def release(self, rollout_id: int, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(rollouts_t).where(and_(rollouts_t.c.id == rollout_id, rollouts_t.c.lease_owner == owner))
                         .values(lease_owner=None, lease_until=None))


class StationClient:
    """One station's dashboard API. The token goes in the header only, never into a message."""

    def __init__(self, endpoint: StationEndpoint, timeout_s: float):
        self.endpoint = endpoint
        token = endpoint.bearer_token()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=endpoint.url, timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StationUnreachable(f"{self.endpoint.id} ({self.endpoint.url}): {type(exc).__name__}: {exc}") from None

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code == 401:
            raise StationRefused(f"{self.endpoint.id} refused the fleet's token for {what} (401): set its token "
                                 "or token_env in the fleet config", 401)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise StationRefused(f"{self.endpoint.id}: {what}: {response.status_code} {detail}", response.status_code,
                                 _safe_json(response))
        return response.json()

    def status(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/status"), "status")

    def decisions(self, since: int, limit: int = PAGE) -> list[dict[str, Any]]:
        return self._json(self._call("GET", "/api/decisions", params={"since": since, "limit": limit}), "decisions")

    def shadow_load(self, data: bytes, name: str) -> dict[str, Any]:
        return self._json(self._call("POST", "/api/shadow", headers=self._headers, files={"file": (name, data)}),
                          "load the shadow model")

    def shadow_figures(self, sha: str) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/shadow", params={"model": sha}), "shadow figures")

    def shadow_stop(self) -> dict[str, Any]:
        return self._json(self._call("POST", "/api/shadow/stop", headers=self._headers), "stop the shadow")

    def upload(self, data: bytes, name: str) -> dict[str, Any]:
        return self._json(self._call("POST", "/api/models", headers=self._headers, files={"file": (name, data)}),
                          "switch the model")

    def rollback(self) -> dict[str, Any]:
        return self._json(self._call("POST", "/api/models/rollback", headers=self._headers), "roll back")


def _safe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class StationUnreachable(EdgepruneError):
    pass


class StationRefused(EdgepruneError):
    def __init__(self, message: str, status_code: int, body: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


def paired_p_greater(a_only: int, b_only: int) -> float:
    """McNemar's exact one-sided test on paired parts: the p-value that A wins its `a_only`
    discordant parts of `a_only + b_only` by more than chance (1.0 without discordant parts)."""
    from scipy.stats import binomtest

    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="greater").pvalue)


def unpaired_p_greater(right_a: int, n_a: int, right_b: int, n_b: int) -> float:
    """Fisher's exact one-sided test: the p-value that A's share right (of n_a) beats B's by more
    than chance (1.0 when either has no parts)."""
    from scipy.stats import fisher_exact

    if n_a == 0 or n_b == 0:
        return 1.0
    return float(fisher_exact([[right_a, n_a - right_a], [right_b, n_b - right_b]], alternative="greater").pvalue)


def _rates(rows: list[dict[str, Any]], ok_classes: set[str] | None = None) -> dict[str, Any]:
    n = len(rows)
    latencies = [r["latency_ms"] for r in rows if r.get("latency_ms") is not None]
    # The parts people labelled: was the pass / reject call right? (REVIEW holds a part back: a reject.)
    reviewed = [r for r in rows if r.get("label") and r["decision"] != "ERROR"] if ok_classes else []
    right = sum((r["decision"] != "OK") == (r["label"] not in ok_classes) for r in reviewed)
    return {"images": n,
            "defect_rate": sum(r["decision"] == "DEFECT" for r in rows) / n if n else None,
            "review_rate": sum(r["decision"] == "REVIEW" for r in rows) / n if n else None,
            "latency_ms_p50": float(np.median(latencies)) if latencies else None,
            "reviewed": len(reviewed), "reviewed_right": right}


class Driver:
    """Steps roll-outs: each step asks the stations once and advances as far as the answers allow."""

    def __init__(self, rollouts: Rollouts, config: FleetConfig, owner: str):
        self.rollouts = rollouts
        self.config = config
        self.owner = owner
        self._clients: dict[str, StationClient] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def client(self, station: str, timeout_s: float) -> StationClient:
        if station not in self._clients:
            endpoint = next((e for e in self.config.endpoints if e.id == station), None)
            if endpoint is None:
                raise EdgepruneError(f"station {station} is not in the fleet config's [[stations]]")
            self._clients[station] = StationClient(endpoint, timeout_s)
        return self._clients[station]

    def _model_bytes(self, sha: str) -> tuple[bytes, str]:
        model = self.rollouts.registry.find(sha)
        data = Path(model.file).read_bytes()
        if file_sha256(Path(model.file)) != sha:
            raise EdgepruneError(f"the registry's copy {model.file} no longer holds {sha[:12]}")
        return data, model.name or f"{sha[:12]}.onnx"

    # ------------------------------------------------------------------------- one step

    def step(self, rollout_id: int) -> Rollout:
        if not self.rollouts.lease(rollout_id, self.owner):
            return self.rollouts.get(rollout_id)
        r = self.rollouts.get(rollout_id)
        if r.state == "shadow":
            self._shadow(r)
        elif r.state in ("canary", "waves"):
            self._switch_and_watch(r)
        if self.rollouts.get(rollout_id).state == "rolling-back":
            self._roll_back(self.rollouts.get(rollout_id))
        r = self.rollouts.get(rollout_id)
        if r.finished:
            self.rollouts.release(rollout_id, self.owner)
        return r

    def _unreachable(self, r: Rollout, s: StationState, exc: EdgepruneError) -> bool:
        """Record a station that did not answer; True when it has been away longer than
        `max_unreachable_s` and the roll-out was stopped for it (the caller returns)."""
        first = s.last_error is None
        since = s.error_since or time.time()
        self.rollouts.set_station(r.id, s.station_id, last_error=str(exc), error_since=since,
                                  event=("unreachable", str(exc)) if first else None)
        log.warning("roll-out %d: %s", r.id, exc)
        limit = r.settings.max_unreachable_s
        if limit is None or r.state == "rolling-back" or time.time() - since <= limit:
            return False
        self._breach(r, f"{s.station_id} has not answered for {time.time() - since:.0f} s "
                        f"(max_unreachable_s = {limit:g}): {exc}", {"station_id": s.station_id})
        return True

    def _reached(self, r: Rollout, s: StationState) -> None:
        if s.last_error is not None:
            self.rollouts.set_station(r.id, s.station_id, last_error=None, error_since=None,
                                      event=("reachable", f"{s.station_id} answers again"))

    def _shadow(self, r: Rollout) -> None:
        st = r.settings
        data, name = self._model_bytes(r.model_sha256)
        for s in r.station_states:
            client = self.client(s.station_id, st.station_timeout_s)
            try:
                if s.state == "pending":
                    # A load whose answer timed out may have gone through: ask before sending again.
                    answer = client.shadow_figures(r.model_sha256)
                    if not answer.get("active"):
                        answer = client.shadow_load(data, name)
                    self.rollouts.set_station(r.id, s.station_id, state="shadowing",
                                              event=("shadow", f"{s.station_id} shadows {r.model_sha256[:12]}"))
                elif s.state == "shadowing":
                    figures = client.shadow_figures(r.model_sha256)
                    if not figures.get("active"):  # e.g. the shadow was stopped by hand: load it again
                        client.shadow_load(data, name)
                    judged = figures["images"] >= st.shadow_images and \
                        figures.get("reviewed_defects", 0) >= st.min_reviewed_defects
                    failed = self._shadow_breaches(figures, st) if judged else None
                    if failed and self._shadow_undecided(figures, st, failed):
                        failed = None  # the candidate leads on the reviewed parts, not yet significantly
                    if failed:
                        self._reached(r, s)
                        self.rollouts.set_station(r.id, s.station_id, figures=figures)
                        self._breach(r, f"shadow on {s.station_id}: {'; '.join(failed)}",
                                     {"station_id": s.station_id, **figures})
                        return
                    self.rollouts.set_station(r.id, s.station_id, figures=figures,
                                              **({"state": "shadow-passed"} if failed == [] else {}),
                                              event=("shadow-passed", f"{s.station_id}: agreement "
                                                     f"{figures['agreement']:.3f} over {figures['images']} images")
                                              if failed == [] else None, event_figures=figures)
            except StationUnreachable as exc:
                if self._unreachable(r, s, exc):
                    return
                continue
            except StationRefused as exc:
                self._breach(r, f"shadow on {s.station_id} refused: {exc}", {"station_id": s.station_id})
                return
            self._reached(r, s)
        r = self.rollouts.get(r.id)
        if all(s.state == "shadow-passed" for s in r.station_states):
            self._stop_shadows(r)
            figures = {s.station_id: s.figures for s in r.station_states}
            self.rollouts.set_rollout(r.id, state="canary", wave=0,
                                      event=("canary", f"shadow passed on every station; canary {r.stations[0]}"),
                                      figures=figures,
                                      model_state=("canary", f"roll-out {r.id}: shadow passed, canary {r.stations[0]}"))

    @staticmethod
    def _shadow_undecided(figures: dict[str, Any], st: RolloutSettings, failed: list[str] | None = None) -> bool:
        """Only the agreement failed, the candidate is right on more of the reviewed parts than the
        running model but not yet significantly so, and `max_shadow_images` allows more: the shadow
        goes on gathering reviewed parts instead of stopping on too little evidence."""
        if st.max_shadow_images is None or figures["images"] >= st.max_shadow_images:
            return False
        failed = Driver._shadow_breaches(figures, st) if failed is None else failed  # the step has them already
        ahead = figures.get("reviewed_right_shadow_only", 0) > figures.get("reviewed_right_live_only", 0)
        return ahead and len(failed) == 1 and failed[0].startswith("agreement")

    @staticmethod
    def _shadow_breaches(figures: dict[str, Any], st: RolloutSettings) -> list[str]:
        failed = []
        right_live, right_shadow = figures.get("reviewed_right_live_only", 0), figures.get("reviewed_right_shadow_only", 0)
        if figures["agreement"] is None or figures["agreement"] < st.min_agreement:
            p_better = paired_p_greater(right_shadow, right_live)
            if p_better >= st.significance:
                failed.append(f"agreement {figures['agreement']:.3f} < {st.min_agreement} over {figures['images']} "
                              f"images, and on the reviewed parts it is not right significantly more often than the "
                              f"running model ({right_shadow} vs {right_live} parts only one got right, p = {p_better:.2g})")
        live, shadow = figures.get("live_defect_recall"), figures.get("shadow_defect_recall")
        only_live, only_shadow = figures.get("defects_caught_by_live_only", 0), figures.get("defects_caught_by_shadow_only", 0)
        p_worse = paired_p_greater(only_live, only_shadow)
        if live is not None and shadow is not None and p_worse < st.significance:
            failed.append(f"defect recall on {figures['reviewed_defects']} reviewed defects {shadow:.3f} < the "
                          f"running model's {live:.3f}: {only_live} caught only by the running model, {only_shadow} "
                          f"only by the candidate (p = {p_worse:.2g})")
        if st.max_shadow_latency_ms is not None and (figures.get("latency_ms_p50") or 0) > st.max_shadow_latency_ms:
            failed.append(f"latency {figures['latency_ms_p50']:.2f} ms > {st.max_shadow_latency_ms} ms")
        return failed

    def _stop_shadows(self, r: Rollout) -> None:
        for s in r.station_states:
            try:
                self.client(s.station_id, r.settings.station_timeout_s).shadow_stop()
            except EdgepruneError as exc:  # the shadow only costs the station idle CPU: reported, not fatal
                self.rollouts.set_station(r.id, s.station_id, event=("shadow-not-stopped", str(exc)))

    def _switch_and_watch(self, r: Rollout) -> None:
        st = r.settings
        data, name = self._model_bytes(r.model_sha256)
        wave = [s for s in r.station_states if s.wave == r.wave]
        for s in wave:
            client = self.client(s.station_id, st.station_timeout_s)
            try:
                if s.state in ("pending", "shadow-passed"):
                    status = client.status()
                    if status["model_sha256"] != r.model_sha256:
                        last_id = int(status.get("last_id") or 0)
                        self.rollouts.set_station(r.id, s.station_id, switch_after=last_id,
                                                  previous_sha256=status["model_sha256"])
                        answer = client.upload(data, name)
                        detail = f"{s.station_id} switched from {status['model_sha256'][:12]} (gate: {answer.get('figures')})"
                    else:  # an earlier step's upload went through but its answer was lost
                        last_id, detail = s.switch_after or int(status.get("last_id") or 0), f"{s.station_id} runs it"
                    self.rollouts.set_station(r.id, s.station_id, state="switched", switch_after=last_id,
                                              event=("switched", detail))
                elif s.state == "switched":
                    figures = self._watch(client, s, r)
                    if figures is None:
                        continue
                    failed = self._canary_breaches(figures, st)
                    if failed and self._canary_undecided(figures, st, failed):
                        self.rollouts.set_station(r.id, s.station_id, figures=figures)  # watched on
                        continue
                    self.rollouts.set_station(r.id, s.station_id, figures=figures,
                                              **({} if failed else {"state": "watched"}),
                                              event=None if failed else ("watched", f"{s.station_id}: within tolerance "
                                                                         f"over {figures['after']['images']} images"),
                                              event_figures=figures)
                    if failed:
                        self._breach(r, f"{'canary' if r.wave == 0 else f'wave {r.wave}'} on {s.station_id}: "
                                        f"{'; '.join(failed)}", {"station_id": s.station_id, **figures})
                        return
            except StationUnreachable as exc:
                if self._unreachable(r, s, exc):
                    return
                continue
            except StationRefused as exc:
                self._breach(r, f"{s.station_id} refused the model: {exc}",
                             {"station_id": s.station_id, "answer": exc.body})
                return
            self._reached(r, s)
        r = self.rollouts.get(r.id)
        if all(s.state == "watched" for s in r.station_states if s.wave == r.wave):
            last_wave = max(s.wave for s in r.station_states)
            if r.wave >= last_wave:
                self.rollouts.set_rollout(r.id, state="done", reason="every station runs the model",
                                          event=("done", f"{len(r.stations)} station(s) run {r.model_sha256[:12]}"),
                                          model_state=("rolled-out", f"roll-out {r.id}: every station runs it"))
            else:
                nxt = [s.station_id for s in r.station_states if s.wave == r.wave + 1]
                self.rollouts.set_rollout(r.id, state="waves", wave=r.wave + 1,
                                          event=("wave", f"wave {r.wave + 1}: {', '.join(nxt)}"))

    def _watch(self, client: StationClient, s: StationState, r: Rollout) -> dict[str, Any] | None:
        """The station's decisions by the candidate since its switch (up to `max_canary_images`)
        against its own history before it; None until `canary_images` of them exist."""
        st = r.settings
        after: list[dict[str, Any]] = []
        since = s.switch_after or 0
        most = st.max_canary_images or st.canary_images
        while len(after) < most:
            page = client.decisions(since)
            if not page:
                break
            after += [row for row in page if row["model_sha256"] == r.model_sha256]
            since = page[-1]["id"]
        if len(after) < st.canary_images:
            return None
        before: list[dict[str, Any]] = []
        start = max(0, (s.switch_after or 0) - st.history_images)
        while start < (s.switch_after or 0):
            page = client.decisions(start, min(PAGE, (s.switch_after or 0) - start))
            if not page:
                break
            before += [row for row in page if row["id"] <= (s.switch_after or 0)]
            start = page[-1]["id"]
        before = [row for row in before if row["model_sha256"] == s.previous_sha256]
        model = self.rollouts.registry.find(r.model_sha256)  # its OK classes, as registered
        ok = set(model.ok_classes if model is not None else self.config.ok_classes or ())
        return {"before": _rates(before, ok), "after": _rates(after[:most], ok)}

    @staticmethod
    def _canary_undecided(figures: dict[str, Any], st: RolloutSettings, failed: list[str] | None = None) -> bool:
        """Only a moved rate failed, the candidate is right on a larger share of the reviewed parts
        than the model before it but not yet significantly, and `max_canary_images` allows more:
        the station is watched on instead of rolled back on too little evidence."""
        if st.max_canary_images is None or figures["after"]["images"] >= st.max_canary_images:
            return False
        before, after = figures["before"], figures["after"]
        if not before.get("reviewed") or not after.get("reviewed"):
            return False
        ahead = after["reviewed_right"] / after["reviewed"] > before["reviewed_right"] / before["reviewed"]
        failed = Driver._canary_breaches(figures, st) if failed is None else failed  # the step has them already
        return ahead and bool(failed) and all(f.startswith(("defect rate", "review rate")) for f in failed)

    @staticmethod
    def _canary_breaches(figures: dict[str, Any], st: RolloutSettings) -> list[str]:
        before, after = figures["before"], figures["after"]
        if not before["images"]:
            return []  # no history on this station: nothing to compare with (the gate checked it)
        failed = []
        n_a, n_b = after.get("reviewed", 0), before.get("reviewed", 0)
        r_a, r_b = after.get("reviewed_right", 0), before.get("reviewed_right", 0)
        p_better, p_worse = unpaired_p_greater(r_a, n_a, r_b, n_b), unpaired_p_greater(r_b, n_b, r_a, n_a)
        if p_worse < st.significance:
            failed.append(f"right on {r_a} of {n_a} reviewed parts vs {r_b} of {n_b} before (p = {p_worse:.2g})")
        for key, tol in (("defect_rate", st.max_defect_rate_change), ("review_rate", st.max_review_rate_change)):
            if abs(after[key] - before[key]) > tol and p_better >= st.significance:
                failed.append(f"{key.replace('_', ' ')} {after[key]:.3f} vs {before[key]:.3f} before (tolerance {tol}), "
                              f"and the reviewed parts do not show it right more often ({r_a} of {n_a} vs {r_b} of "
                              f"{n_b}, p = {p_better:.2g})")
        if before["latency_ms_p50"] and after["latency_ms_p50"] and \
                after["latency_ms_p50"] > st.max_latency_ratio * before["latency_ms_p50"]:
            failed.append(f"latency p50 {after['latency_ms_p50']:.2f} ms > {st.max_latency_ratio} x "
                          f"{before['latency_ms_p50']:.2f} ms before")
        return failed

    def _breach(self, r: Rollout, reason: str, figures: dict[str, Any]) -> None:
        switched = [s for s in self.rollouts.get(r.id).station_states if s.state in ("switched", "watched")]
        if r.state == "shadow":
            self._stop_shadows(r)
        log.warning("roll-out %d: %s", r.id, reason)
        self.rollouts.set_rollout(r.id, state="rolling-back" if switched else "stopped", reason=reason,
                                  figures=figures, event=("breach", reason),
                                  model_state=("rejected", f"roll-out {r.id}: {reason}"))

    def _roll_back(self, r: Rollout) -> None:
        for s in r.station_states:
            if s.state not in ("switched", "watched"):
                continue
            client = self.client(s.station_id, r.settings.station_timeout_s)
            try:
                status = client.status()
                if status["model_sha256"] != r.model_sha256:  # already back (an earlier step's answer lost)
                    answer = {"sha256": status["model_sha256"]}
                else:
                    answer = client.rollback()
                self.rollouts.set_station(r.id, s.station_id, state="rolled-back",
                                          event=("rolled-back", f"{s.station_id} runs {answer['sha256'][:12]} again"))
            except StationUnreachable as exc:
                self._unreachable(r, s, exc)
            except StationRefused as exc:
                self.rollouts.set_station(r.id, s.station_id, last_error=str(exc),
                                          event=("rollback-refused", str(exc)))
        r = self.rollouts.get(r.id)
        if not any(s.state in ("switched", "watched") for s in r.station_states):
            self.rollouts.set_rollout(r.id, state="rolled-back", event=("rolled-back", "every switched station rolled back"),
                                      figures=r.figures)

    def drive(self, rollout_id: int, *, timeout_s: float | None = None, on_step=None) -> Rollout:
        """Step until the roll-out ends (or timeout_s passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            r = self.step(rollout_id)
            if on_step is not None:
                on_step(r)
            if r.finished or (deadline is not None and time.monotonic() > deadline):
                return r
            time.sleep(r.settings.poll_s)


class RolloutWorker:
    """In `fleet serve`: steps every active roll-out it can lease, so a roll-out started without
    --wait goes on, and one whose driver died (or a server restarted) resumes where it stood."""

    def __init__(self, engine: Engine, config: FleetConfig, owner: str):
        from edgeprune.fleet.registry import models_dir_for

        import threading

        self.rollouts = Rollouts(engine, ModelRegistry(engine, models_dir_for(config.data)))
        self.driver = Driver(self.rollouts, config, owner)
        self.poll_s = config.rollout.poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeprune-fleet-rollouts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                for rollout_id in self.rollouts.active():
                    self.driver.step(rollout_id)
            except Exception as exc:  # noqa: BLE001 - the server outlives a failed step; the next one retries
                log.exception("roll-out step failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.driver.close()
