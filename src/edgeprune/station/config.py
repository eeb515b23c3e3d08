"""The station's settings: one dataclass, read from a TOML file, with command-line flags on top.

    config = load_config("station.toml", {"rate": 50, "max_images": 100})

Every value is checked when the config is built, and every message names the key (and the file),
so a typo in the file fails at start-up with `error: ...`, never half-way through a shift.
Relative paths in the file are relative to the file's folder; flags are relative to the working
directory, as a shell user expects.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgeprune.errors import EdgepruneError
from edgeprune.station.dashboard_config import DashboardConfig, parse_http  # dashboard (issue 12)
from edgeprune.validation import check_number

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the `tomli` backport (the station extra installs it)
    import tomli as tomllib

SOURCE_KINDS = ("replay", "folder", "camera")
PLC_SCHEMES = ("modbus", "opcua")
RUNTIMES = ("onnxruntime", "openvino", "auto")
SYNCHRONOUS = ("NORMAL", "FULL")
DRIFT_ACTIONS = ("off", "alarm", "review")


@dataclass(frozen=True)
class ModbusMap:
    """Where the three values and the reject pulse go on a Modbus TCP PLC (holding registers and
    a coil, 0-based addresses as in pymodbus requests)."""

    count_register: int = 0  # DEFECT signals delivered, mod 65536
    sequence_register: int = 1  # sequence id (decisions.id) of the last part, low 16 bits
    decision_register: int = 2  # 0 OK, 1 DEFECT, 2 REVIEW
    reject_coil: int | None = 0  # set for a DEFECT (the PLC program resets it); None: no coil
    unit: int = 1  # Modbus device id (the URL's ?unit= wins)
    timeout_s: float = 1.0


@dataclass(frozen=True)
class OpcUaMap:
    """The three values written to an OPC UA server's nodes (UInt32 for the counters)."""

    count_node: str = "ns=2;s=edgeprune.defect_count"
    sequence_node: str = "ns=2;s=edgeprune.sequence"
    decision_node: str = "ns=2;s=edgeprune.decision"
    timeout_s: float = 2.0


@dataclass(frozen=True)
class StationConfig:
    model: Path
    source: str  # replay:DIR | folder:DIR | camera:N
    db: Path = Path("station.db")
    rate: float | None = None  # images/s for replay and camera; None: as fast as they come
    max_images: int | None = None  # end after N new decisions
    # The classes that pass (OK); None: the OK classes of the model's operating point, and a
    # model without one refuses to start (decision.resolve_ok_classes): no data set's class name
    # is a default that fits another line.
    ok_classes: tuple[str, ...] | None = None
    review_below: float = 0.0  # top probability below this: REVIEW
    fallback_model: Path | None = None  # re-checks an uncertain part before it goes to a person
    runtime: str = "onnxruntime"
    threads: int = 1
    plc: str | None = None  # modbus://HOST:PORT?unit=1 | opcua://HOST:PORT/PATH
    modbus: ModbusMap = field(default_factory=ModbusMap)
    opcua: OpcUaMap = field(default_factory=OpcUaMap)
    retry_min_s: float = 0.05  # PLC retry back-off: doubles from min to max
    retry_max_s: float = 2.0
    mqtt: str | None = None  # mqtt://HOST:PORT/TOPIC
    mqtt_interval_s: float = 10.0
    mqtt_samples: int = 1  # images attached to each summary (the latest DEFECT/REVIEW first)
    drain_timeout: float = 5.0  # on exit, wait this long for pending PLC signals
    db_synchronous: str = "NORMAL"  # SQLite: NORMAL survives a crash of the process, FULL a power cut
    http: str | None = None  # HOST:PORT of the dashboard (issue 12)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)  # [dashboard] table
    # The fleet (upload.py): who this station is, and the decision log sent upstream over `mqtt`.
    station_id: str | None = None  # None: the host name
    line: str | None = None  # the production line's label, for the fleet's per-line views
    upload: bool = True  # with `mqtt` set: every decision and reviewed label goes upstream
    upload_interval_s: float = 5.0  # a batch at least this often (when there is anything new)
    upload_batch: int = 500  # or as soon as this many rows wait
    upload_ack_timeout_s: float = 10.0  # no fleet receipt within it: resend from the cursor
    # Input drift (drift.py): the last drift_window images against the model's reference (PSI).
    drift_action: str = "alarm"  # off | alarm (status, page, MQTT event) | review (and every part to REVIEW)
    drift_window: int = 200  # images in the sliding window
    # The largest PSI over the statistics above it: drift. 0.5, not the rule of thumb's 0.25: with
    # window 200, 0.25 raised 29 false alarms per 10,000 clean images, 0.5 raised 1.5 (docs/drift.md).
    drift_psi_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_source(self.source)
        if self.rate is not None:
            check_number(self.rate, "rate", min=0, min_open=True, hint="images per second")
        if self.max_images is not None:
            check_number(self.max_images, "max_images", min=1, integer=True)
        if self.ok_classes is not None and (
                not self.ok_classes or not all(isinstance(c, str) and c for c in self.ok_classes)):
            raise EdgepruneError("ok_classes must name at least one class, e.g. ok_classes = [\"good\"]")
        check_number(self.review_below, "review_below", min=0, max=1,
                     hint="a top probability below it routes the part to a person")
        if self.runtime not in RUNTIMES:
            raise EdgepruneError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        check_number(self.threads, "threads", min=1, max=256, integer=True)
        if self.plc is not None:
            parse_plc_url(self.plc)
        if self.mqtt is not None:
            parse_mqtt_url(self.mqtt)
        check_number(self.mqtt_interval_s, "mqtt_interval_s", min=0.05)
        check_number(self.mqtt_samples, "mqtt_samples", min=0, max=100, integer=True)
        check_number(self.drain_timeout, "drain_timeout", min=0)
        check_number(self.retry_min_s, "retry_min_s", min=0.001, max=60)
        check_number(self.retry_max_s, "retry_max_s", min=self.retry_min_s, max=3600)
        if self.db_synchronous not in SYNCHRONOUS:
            raise EdgepruneError(f"db_synchronous must be NORMAL or FULL, got {self.db_synchronous!r}")
        for name in ("count_register", "sequence_register", "decision_register", "unit"):
            check_number(getattr(self.modbus, name), f"modbus.{name}", min=0, max=65535, integer=True)
        if self.modbus.reject_coil is not None:
            check_number(self.modbus.reject_coil, "modbus.reject_coil", min=0, max=65535, integer=True)
        registers = (self.modbus.count_register, self.modbus.sequence_register, self.modbus.decision_register)
        if len(set(registers)) != 3:
            raise EdgepruneError(f"modbus registers must differ, got {registers}")
        check_number(self.modbus.timeout_s, "modbus.timeout_s", min=0.01, max=60)
        check_number(self.opcua.timeout_s, "opcua.timeout_s", min=0.01, max=60)
        if self.http is not None:  # dashboard (issue 12)
            parse_http(self.http)
        if self.station_id is None:
            object.__setattr__(self, "station_id", default_station_id())
        check_station_id(self.station_id)
        if self.line is not None and (not isinstance(self.line, str) or not 0 < len(self.line) <= 64):
            raise EdgepruneError(f"line must be a label of 1..64 characters, got {self.line!r}")
        if not isinstance(self.upload, bool):
            raise EdgepruneError(f"upload must be true or false, got {self.upload!r}")
        check_number(self.upload_interval_s, "upload_interval_s", min=0.05, max=86400)
        check_number(self.upload_batch, "upload_batch", min=1, max=50_000, integer=True)
        check_number(self.upload_ack_timeout_s, "upload_ack_timeout_s", min=0.1, max=3600)
        if self.drift_action not in DRIFT_ACTIONS:
            raise EdgepruneError(f"drift_action must be one of {', '.join(DRIFT_ACTIONS)}, got {self.drift_action!r}")
        check_number(self.drift_window, "drift_window", min=20, max=100_000, integer=True,
                     hint="images in the drift test's sliding window")
        check_number(self.drift_psi_threshold, "drift_psi_threshold", min=0, max=10, min_open=True,
                     hint="PSI: 0.1 a small shift, 0.25 a large one")

    def replace(self, **changes: Any) -> StationConfig:
        return replace(self, **changes)


STATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_station_id() -> str:
    """The host name, reduced to the characters a station id allows (it names MQTT topics and
    folders, so no '/', '+', '#' or spaces)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_")[:64]
    return name or "station"


def check_station_id(value: Any) -> str:
    if not isinstance(value, str) or not STATION_ID.fullmatch(value):
        raise EdgepruneError(f"station_id must be 1..64 letters, digits, '.', '_' or '-' (starting with a "
                             f"letter or digit), got {value!r}")
    return value


def check_source(source: Any) -> tuple[str, str]:
    """`replay:DIR`, `folder:DIR` or `camera:N` -> (kind, argument)."""
    if not isinstance(source, str) or ":" not in source:
        raise EdgepruneError(f"source must be replay:DIR, folder:DIR or camera:N, got {source!r}")
    kind, _, argument = source.partition(":")
    if kind not in SOURCE_KINDS or not argument:
        raise EdgepruneError(f"source must be replay:DIR, folder:DIR or camera:N, got {source!r}")
    if kind == "camera" and not argument.isdigit():
        raise EdgepruneError(f"camera source takes a device index, e.g. camera:0, got {source!r}")
    return kind, argument


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str
    query: dict[str, str]


def _endpoint(url: Any, key: str, schemes: tuple[str, ...], default_ports: dict[str, int]) -> Endpoint:
    example = {"plc": "modbus://127.0.0.1:502?unit=1 or opcua://127.0.0.1:4840",
               "mqtt": "mqtt://127.0.0.1:1883/edgeprune/station"}[key]
    if not isinstance(url, str):
        raise EdgepruneError(f"{key} must be a URL such as {example}, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise EdgepruneError(f"{key} must be a URL such as {example}, got {url!r}")
    try:
        port = parts.port or default_ports[parts.scheme]
    except ValueError:
        raise EdgepruneError(f"{key}: bad port in {url!r}") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return Endpoint(parts.scheme, parts.hostname, port, parts.path, query)


def parse_plc_url(url: str) -> Endpoint:
    endpoint = _endpoint(url, "plc", PLC_SCHEMES, {"modbus": 502, "opcua": 4840})
    if endpoint.scheme == "modbus" and "unit" in endpoint.query:
        unit = endpoint.query["unit"]
        if not unit.isdigit() or int(unit) > 255:
            raise EdgepruneError(f"plc: unit must be a Modbus device id 0..255, got {unit!r} in {url!r}")
    return endpoint


def parse_mqtt_url(url: str) -> Endpoint:
    endpoint = _endpoint(url, "mqtt", ("mqtt",), {"mqtt": 1883})
    if not endpoint.path.strip("/"):
        raise EdgepruneError(f"mqtt needs a topic after the port, e.g. mqtt://{endpoint.host}:"
                             f"{endpoint.port}/edgeprune/station, got {url!r}")
    return endpoint


# ----------------------------------------------------------------------------- reading the file

_PATH_KEYS = ("model", "db", "fallback_model")
_TOP_KEYS = {f.name for f in fields(StationConfig)} - {"modbus", "opcua", "dashboard"}
_TABLES = {"modbus": ModbusMap, "opcua": OpcUaMap, "dashboard": DashboardConfig}


def _table(cls, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise EdgepruneError(f"{where}: [{cls.__name__}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EdgepruneError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return cls(**values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TOML file as keyword values for StationConfig (paths resolved against its folder)."""
    p = Path(path)
    if not p.is_file():
        raise EdgepruneError(f"station config not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"{p} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TABLES:
            values[key] = _table(_TABLES[key], value, f"{p} [{key}]")
        elif key in _TOP_KEYS:
            values[key] = value
        else:
            known = ", ".join(sorted(_TOP_KEYS | set(_TABLES)))
            raise EdgepruneError(f"{p}: unknown key {key!r} (known: {known})")
    for key in _PATH_KEYS:
        if key in values:
            if not isinstance(values[key], str):
                raise EdgepruneError(f"{p}: {key} must be a path string, got {values[key]!r}")
            values[key] = (p.parent / values[key]) if not Path(values[key]).is_absolute() else Path(values[key])
    if "dashboard" in values:  # dashboard (issue 12): its gate_set relative to the file too
        values["dashboard"] = values["dashboard"].resolved(p.parent)
    source = values.get("source")
    if isinstance(source, str) and source.partition(":")[0] in ("replay", "folder"):
        kind, _, folder = source.partition(":")
        if folder and not Path(folder).is_absolute():
            values["source"] = f"{kind}:{p.parent / folder}"
    return values


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StationConfig:
    """StationConfig from the file (if any) with `overrides` (flags; None values ignored) on top."""
    values = read_config_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    for key in ("model", "source"):
        if key not in values:
            where = f" in {path}" if path else ""
            raise EdgepruneError(f"no {key} given: set `{key} = ...`{where} or pass --{key}")
    for key in _PATH_KEYS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    if isinstance(values.get("ok_classes"), (list, tuple)):
        values["ok_classes"] = tuple(values["ok_classes"])
    elif isinstance(values.get("ok_classes"), str):
        values["ok_classes"] = tuple(c.strip() for c in values["ok_classes"].split(",") if c.strip())
    where = f"{path}: " if path else ""
    try:
        return StationConfig(**values)
    except TypeError as exc:  # a value of the wrong type in the file
        raise EdgepruneError(f"{where}{exc}") from None
    except EdgepruneError as exc:
        raise EdgepruneError(f"{where}{exc}") from None
