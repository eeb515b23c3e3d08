"""The station runs with torch unimportable, as on an edge device with `edgeprune[station]` only:
the package, the CLI and a real run on the tile model."""

from __future__ import annotations

from helpers import run_blocked
from station_support import db_rows, make_replay


def test_station_runs_without_torch(tile_model, tmp_path):
    replay = make_replay(tile_model, tmp_path / "replay", 3)
    db = tmp_path / "station.db"
    done = run_blocked(
        "from edgeprune.cli import main\n"
        "import edgeprune.station, edgeprune.station.plc, edgeprune.station.mqtt, edgeprune.station.sources\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    assert sys.modules.get('torch') is None\n",
        "station", "run", "--model", str(tile_model[0]), "--source", f"replay:{replay}", "--db", str(db),
        "--ok-classes", "free", check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 decided" in done.stdout and len(db_rows(db)) == 6
