"""The fleet: every station's decisions, labels, samples and drift in one database.

    edgeprune fleet serve --mqtt mqtt://BROKER:1883/factory/# --db fleet.db --http 127.0.0.1:8090

One module per concern: config (fleet.toml and flags), store (the database, SQLAlchemy 2 Core:
SQLite or PostgreSQL), ingest (one MQTT message in, stored or refused), server (the MQTT
subscriber, the ingest worker, the page), web and page (FastAPI, inline SVG). The wire format
of the stations' batches is station/upload.py's. Torch-free.
"""

from edgeprune.fleet.config import FleetConfig, load_config
from edgeprune.fleet.store import FleetFigures, FleetStore, StationFigures

__all__ = ["FleetConfig", "FleetFigures", "FleetStore", "StationFigures", "load_config"]
