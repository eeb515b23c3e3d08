"""A replay whose folder names match none of the model's classes is warned about: its live
accuracy would compare unrelated names."""

from __future__ import annotations

import subprocess
import sys

from station_tiny import tiny_station_files

from edgeprune.station import Station, load_config


def config(tmp_path, model, replay):
    return load_config(None, {"model": model, "source": f"replay:{replay}", "db": tmp_path / "s.db",
                              "ok_classes": "c0"})


def test_folder_names_unknown_to_the_model_are_warned_about(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=3, classes=("good", "scratch"))
    with Station(config(tmp_path, model, replay)) as station:
        assert len(station.warnings) == 1
        assert "good, scratch" in station.warnings[0] and "c0, c1" in station.warnings[0]
        result = station.run()
        assert result.warnings == station.warnings
        assert station.status()["warnings"] == station.warnings
    done = subprocess.run([sys.executable, "-m", "edgeprune", "station", "run", "--model", str(model),
                           "--source", f"replay:{replay}", "--ok-classes", "c0", "--db", str(tmp_path / "t.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    err = " ".join(done.stderr.split())  # rich wraps long lines
    assert "warning" in err.lower() and "match none of the model's classes (c0, c1)" in err


def test_matching_folder_names_give_no_warning(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=3, classes=("c0", "other"))
    with Station(config(tmp_path, model, replay)) as station:
        assert station.warnings == []
