"""The fleet server's settings: one dataclass, read from fleet.toml, with command-line flags on top.

    mqtt = "mqtt://127.0.0.1:1883/factory/#"   # the broker and the topic filter the stations publish under
    db = "fleet.db"                            # SQLite file, or postgresql://USER:PASS@HOST:PORT/DB
    http = "127.0.0.1:8090"                    # the fleet page and /api/fleet (loopback unless told)
    data = "fleet-data"                        # labelled images: DATA/<class>/<sha256>.<ext>
    token = "..."                              # or EDGEPRUNE_FLEET_TOKEN; without one nothing can be changed
    stations = ["line1-a", "line2-a"]          # allow-list (absent: every station id is taken)
    offline_after_s = 60                       # silent longer than this: an alarm

Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
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
class FleetConfig:
    mqtt: str = "mqtt://127.0.0.1:1883/factory/#"
    db: str = "fleet.db"
    http: str | None = "127.0.0.1:8090"
    data: Path = Path("fleet-data")
    token: str | None = None
    stations: tuple[str, ...] | None = None
    offline_after_s: float = 60.0

    def __post_init__(self) -> None:
        parse_mqtt_filter(self.mqtt)
        if not isinstance(self.db, str) or not self.db:
            raise EdgepruneError(f"db must be a file path or a postgresql:// URL, got {self.db!r}")
        if self.http is not None:
            parse_http(self.http)
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise EdgepruneError("token must be a string of at least 8 characters")
        if self.stations is not None:
            if isinstance(self.stations, str) or not all(isinstance(s, str) for s in self.stations):
                raise EdgepruneError(f"stations must be a list of station ids, got {self.stations!r}")
            for station in self.stations:
                check_station_id(station)
            object.__setattr__(self, "stations", tuple(self.stations))
        object.__setattr__(self, "data", Path(self.data))
        check_number(self.offline_after_s, "offline_after_s", min=1, max=7 * 86400)

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


_KEYS = {f.name for f in fields(FleetConfig)}


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
        for key in ("data", "db"):
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
