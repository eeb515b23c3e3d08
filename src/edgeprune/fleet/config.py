"""The fleet server's settings: one dataclass, read from fleet.toml, with command-line flags on top.

    mqtt = "mqtt://127.0.0.1:1883/factory/#"   # the broker and the topic filter the stations publish under
    db = "fleet.db"                            # SQLite file, or postgresql://USER:PASS@HOST:PORT/DB
    http = "127.0.0.1:8090"                    # the fleet page and /api/fleet (loopback unless told)
    data = "fleet-data"                        # labelled images: DATA/<class>/<sha256>.<ext>
    token = "..."                              # or EDGEPRUNE_FLEET_TOKEN; without one nothing can be changed
    stations = ["line1-a", "line2-a"]          # allow-list (absent: every station id is taken)
    offline_after_s = 60                       # silent longer than this: an alarm
    acceptance = "acceptance/"                 # the frozen labelled set every candidate is judged on
    ok_classes = ["good"]                      # the good classes (else the model's operating point's)

    [[stations]]                               # instead of the allow-list: stations the fleet can
    id = "line1-a"                             # roll models out to (their ids form the allow-list)
    url = "http://10.0.0.11:8080"              # the station's dashboard
    token_env = "LINE1_A_TOKEN"                # or token = "..." (never printed or logged)

    [rollout]                                  # defaults of `edgeprune fleet rollout` (docs/loop.md)
    shadow_images = 200

    [retrain]                                  # `edgeprune fleet retrain` and its triggers (docs/loop.md)
    study = "retrain-study.toml"               # the study a retrain runs (base data + DATA as training-only)
    retrain_after_labels = 200                 # a retrain once this many fleet labels came since the last
    retrain_after_drift_s = 3600               # ... or a station's drift alarm lasted this long
    rollout = false                            # true: roll each candidate out to the [[stations]] at once

Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeprune.errors import EdgepruneError
from edgeprune.station.config import check_station_id
from edgeprune.station.dashboard_config import parse_http
from edgeprune.validation import check_number

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the `tomli` backport (the station extra installs it)
    import tomli as tomllib

TOKEN_ENV = "EDGEPRUNE_FLEET_TOKEN"


@dataclass(frozen=True)
class StationEndpoint:
    """A station the fleet can switch: its dashboard's URL and the token its changes need."""
    id: str
    url: str
    token: str | None = None
    token_env: str | None = None

    def __post_init__(self) -> None:
        check_station_id(self.id)
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise EdgepruneError(f"stations {self.id}: url must be the dashboard's http://HOST:PORT, got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise EdgepruneError(f"stations {self.id}: token must be a string of at least 8 characters")
        if self.token_env is not None and not isinstance(self.token_env, str):
            raise EdgepruneError(f"stations {self.id}: token_env must name an environment variable")

    def bearer_token(self) -> str | None:
        """The config's token, else the variable token_env names; never printed or logged."""
        return self.token or (os.environ.get(self.token_env) if self.token_env else None) or None

    def __repr__(self) -> str:  # a token never reaches a log through a repr
        return f"StationEndpoint(id={self.id!r}, url={self.url!r})"


@dataclass(frozen=True)
class RolloutSettings:
    """How a roll-out judges a candidate (the [rollout] table; `fleet rollout` flags on top)."""
    shadow_images: int = 200  # live images each shadow station decides with the candidate too
    min_agreement: float = 0.95  # share of those where the candidate's decision equals the live one
    max_shadow_latency_ms: float | None = None  # the candidate's median on the station (None: no limit)
    canary_images: int = 200  # images a switched station decides before the next wave may switch
    waves: int = 2  # the stations after the canary, in this many waves
    history_images: int = 500  # a station's own recent history the canary is compared with
    max_defect_rate_change: float = 0.10  # |defect rate after - before|, absolute
    max_review_rate_change: float = 0.10
    max_latency_ratio: float = 2.0  # decision latency p50 after / before
    # Judging by the parts people reviewed: a station's shadow is not judged before it has
    # shadowed this many reviewed defects (0: judged after shadow_images whatever was reviewed);
    # a model is worse or better on reviewed parts only when a one-sided exact test says so at
    # `significance` (a handful of reviewed parts never decides a roll-out either way).
    min_reviewed_defects: int = 0
    significance: float = 0.05
    # Low agreement with the candidate ahead on the reviewed parts but not yet significantly: the
    # shadow goes on up to this many images before it stops (None: it stops at shadow_images).
    max_shadow_images: int | None = None
    # The same for a switched station: a moved defect or review rate with the candidate ahead on
    # the reviewed parts, not yet significantly, is watched on up to this many images.
    max_canary_images: int | None = None
    # A station that does not answer is waited for (None), or, after this long, the roll-out is
    # stopped and every switched station rolled back: a line must not run half on each model.
    max_unreachable_s: float | None = None
    poll_s: float = 1.0  # how often the stations are asked
    station_timeout_s: float = 30.0  # one HTTP request (a gated upload runs the gate set first)

    def __post_init__(self) -> None:
        for name in ("shadow_images", "canary_images", "history_images"):
            check_number(getattr(self, name), f"rollout.{name}", min=1, integer=True)
        check_number(self.waves, "rollout.waves", min=1, max=100, integer=True)
        check_number(self.min_reviewed_defects, "rollout.min_reviewed_defects", min=0, integer=True)
        check_number(self.significance, "rollout.significance", min=0, max=0.5, min_open=True)
        if self.max_shadow_images is not None:
            check_number(self.max_shadow_images, "rollout.max_shadow_images", min=self.shadow_images, integer=True,
                         hint="at least shadow_images")
        if self.max_canary_images is not None:
            check_number(self.max_canary_images, "rollout.max_canary_images", min=self.canary_images, integer=True,
                         hint="at least canary_images")
        if self.max_unreachable_s is not None:
            check_number(self.max_unreachable_s, "rollout.max_unreachable_s", min=0, min_open=True)
        for name in ("min_agreement", "max_defect_rate_change", "max_review_rate_change"):
            check_number(getattr(self, name), f"rollout.{name}", min=0, max=1)
        if self.max_shadow_latency_ms is not None:
            check_number(self.max_shadow_latency_ms, "rollout.max_shadow_latency_ms", min=0, min_open=True)
        check_number(self.max_latency_ratio, "rollout.max_latency_ratio", min=1)
        check_number(self.poll_s, "rollout.poll_s", min=0.05, max=600)
        check_number(self.station_timeout_s, "rollout.station_timeout_s", min=0.1, max=600)

    def with_overrides(self, overrides: dict[str, Any]) -> RolloutSettings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class RetrainSettings:
    """`edgeprune fleet retrain` (the [retrain] table; flags on top): which study makes a candidate,
    where it runs, and when `fleet retrain --auto` starts one by itself."""
    study: Path | None = None  # the study config (TOML): its [data] is the base data set
    runs: Path | None = None  # each retrain's study in RUNS/retrain-<id>/ (default: DATA-retrains)
    executor: str = "local"  # local | ray, as `study run --executor`
    ray_address: str | None = None  # with executor = "ray": `study run --ray-address`
    int8_max_drop: float | None = None  # the INT8 gate in points (None: export's default)
    retrain_after_labels: int | None = None  # fleet labels received since the last retrain (None: off)
    retrain_after_drift_s: float | None = None  # a station's drift alarm older than this (None: off)
    poll_s: float = 60.0  # how often `fleet retrain --auto` looks at the triggers
    # Start a roll-out of each registered candidate to every [[stations]] entry (`fleet serve`
    # drives it): the loop closes without a person, and the roll-out's own stages still judge it.
    rollout: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.rollout, bool):
            raise EdgepruneError(f"retrain.rollout must be true or false, got {self.rollout!r}")
        for name in ("study", "runs"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.executor not in ("local", "ray"):
            raise EdgepruneError(f"retrain.executor must be local or ray, got {self.executor!r}")
        if self.ray_address is not None and (self.executor != "ray" or not isinstance(self.ray_address, str)):
            raise EdgepruneError("retrain.ray_address needs retrain.executor = \"ray\"")
        if self.int8_max_drop is not None:
            check_number(self.int8_max_drop, "retrain.int8_max_drop", min=0, max=100)
        if self.retrain_after_labels is not None:
            check_number(self.retrain_after_labels, "retrain.retrain_after_labels", min=1, integer=True)
        if self.retrain_after_drift_s is not None:
            check_number(self.retrain_after_drift_s, "retrain.retrain_after_drift_s", min=0)
        check_number(self.poll_s, "retrain.poll_s", min=0.05, max=86400)

    def with_overrides(self, overrides: dict[str, Any]) -> RetrainSettings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class FleetConfig:
    mqtt: str = "mqtt://127.0.0.1:1883/factory/#"
    db: str = "fleet.db"
    http: str | None = "127.0.0.1:8090"
    data: Path = Path("fleet-data")
    token: str | None = None
    stations: tuple[str, ...] | None = None
    offline_after_s: float = 60.0
    acceptance: Path | None = None
    ok_classes: tuple[str, ...] | None = None
    endpoints: tuple[StationEndpoint, ...] = ()  # [[stations]] tables
    rollout: RolloutSettings = field(default_factory=lambda: RolloutSettings())
    retrain: RetrainSettings = field(default_factory=lambda: RetrainSettings())

    def __post_init__(self) -> None:
        parse_mqtt_filter(self.mqtt)
        if not isinstance(self.db, str) or not self.db:
            raise EdgepruneError(f"db must be a file path or a postgresql:// URL, got {self.db!r}")
        if self.http is not None:
            parse_http(self.http)
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise EdgepruneError("token must be a string of at least 8 characters")
        if self.stations is not None and any(isinstance(s, StationEndpoint) for s in self.stations):
            if not all(isinstance(s, StationEndpoint) for s in self.stations):
                raise EdgepruneError("stations: either a list of ids or [[stations]] tables, not both")
            object.__setattr__(self, "endpoints", tuple(self.stations))
            object.__setattr__(self, "stations", tuple(s.id for s in self.endpoints))
            if len(set(self.stations)) != len(self.stations):
                raise EdgepruneError("stations: a station id appears twice")
        if self.stations is not None:
            if isinstance(self.stations, str) or not all(isinstance(s, str) for s in self.stations):
                raise EdgepruneError(f"stations must be a list of station ids, got {self.stations!r}")
            for station in self.stations:
                check_station_id(station)
            object.__setattr__(self, "stations", tuple(self.stations))
        object.__setattr__(self, "data", Path(self.data))
        check_number(self.offline_after_s, "offline_after_s", min=1, max=7 * 86400)
        if self.acceptance is not None:
            object.__setattr__(self, "acceptance", Path(self.acceptance))
        if self.ok_classes is not None:
            if isinstance(self.ok_classes, str) or not all(isinstance(c, str) and c for c in self.ok_classes):
                raise EdgepruneError(f"ok_classes must be a list of class names, got {self.ok_classes!r}")
            object.__setattr__(self, "ok_classes", tuple(self.ok_classes))
        if self.retrain.rollout and not self.endpoints:
            raise EdgepruneError("retrain.rollout needs the stations to roll out to: [[stations]] tables "
                                 "with id, url and token or token_env")

    def bearer_token(self) -> str | None:
        """The config's token, else $EDGEPRUNE_FLEET_TOKEN, else None (nothing may change)."""
        return self.token or os.environ.get(TOKEN_ENV) or None

    def allows(self, station_id: str) -> bool:
        return self.stations is None or station_id in self.stations


def parse_mqtt_filter(url: Any) -> tuple[str, int, str]:
    """`mqtt://HOST:PORT/TOPIC/FILTER` -> (host, port, topic filter), e.g. factory/#."""
    example = "mqtt://127.0.0.1:1883/factory/#"
    if not isinstance(url, str):
        raise EdgepruneError(f"mqtt must be a URL such as {example}, got {url!r}")
    # '#' starts a URL fragment: split it off by hand so the filter keeps it.
    head, hash_, tail = url.partition("#")
    parts = urlsplit(head)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise EdgepruneError(f"mqtt must be a URL such as {example}, got {url!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise EdgepruneError(f"mqtt: bad port in {url!r}") from None
    topic = (parts.path.lstrip("/") + hash_ + tail).strip()
    if not topic or tail:
        raise EdgepruneError(f"mqtt needs a topic filter after the port, e.g. {example}, got {url!r}")
    if "#" in topic[:-1] or (topic.endswith("#") and len(topic) > 1 and topic[-2] != "/"):
        raise EdgepruneError(f"mqtt: '#' may only end the topic filter (e.g. factory/#), got {topic!r}")
    return parts.hostname, port, topic


_KEYS = {f.name for f in fields(FleetConfig)} - {"endpoints"}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> FleetConfig:
    """FleetConfig from the file (if any) with `overrides` (flags; None values ignored) on top."""
    values: dict[str, Any] = {}
    where = ""
    if path is not None:
        p = Path(path)
        where = f"{p}: "
        if not p.is_file():
            raise EdgepruneError(f"fleet config not found: {p}")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgepruneError(f"{p} is not valid TOML: {exc}") from None
        for key, value in raw.items():
            if key not in _KEYS:
                raise EdgepruneError(f"{p}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
            values[key] = value
        if isinstance(values.get("stations"), list) and any(isinstance(v, dict) for v in values["stations"]):
            values["stations"] = [_endpoint(v, p) for v in values["stations"]]
        if "rollout" in values:
            values["rollout"] = _rollout_table(values["rollout"], p)
        if "retrain" in values:
            values["retrain"] = _retrain_table(values["retrain"], p)
        for key in ("data", "db", "acceptance"):
            value = values.get(key)
            if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
                values[key] = str(p.parent / value)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    if isinstance(values.get("db"), Path):
        values["db"] = str(values["db"])
    if isinstance(values.get("stations"), list):
        values["stations"] = tuple(values["stations"])
    try:
        return FleetConfig(**values)
    except TypeError as exc:
        raise EdgepruneError(f"{where}{exc}") from None
    except EdgepruneError as exc:
        raise EdgepruneError(f"{where}{exc}") from None


def _table_values(value: Any, cls, where: Path, table: str, what: str = "must be a table") -> dict[str, Any]:
    """A TOML table's values for the dataclass `cls`: refused when it is not a table or names a
    key `cls` does not have."""
    if not isinstance(value, dict):
        raise EdgepruneError(f"{where}: {table} {what}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise EdgepruneError(f"{where}: {table}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return dict(value)


def _endpoint(value: Any, where: Path) -> StationEndpoint:
    value = _table_values(value, StationEndpoint, where, "[[stations]]",
                          "entries must be tables (id, url, token or token_env)")
    if "id" not in value or "url" not in value:
        raise EdgepruneError(f"{where}: [[stations]] needs id and url")
    return StationEndpoint(**value)


def _rollout_table(value: Any, where: Path) -> RolloutSettings:
    return RolloutSettings(**_table_values(value, RolloutSettings, where, "[rollout]"))


def _retrain_table(value: Any, where: Path) -> RetrainSettings:
    values = _table_values(value, RetrainSettings, where, "[retrain]")
    for key in ("study", "runs"):  # relative to the config file's folder, like data and acceptance
        if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
            values[key] = str(where.parent / values[key])
    try:
        return RetrainSettings(**values)
    except EdgepruneError as exc:
        raise EdgepruneError(f"{where}: {exc}") from None
