"""Which classes pass when the station's config names none: those of the artifact's operating
point; an artifact without one refuses to start with `error: ...` (exit 2) naming its classes, as
no default class name fits every line."""

from __future__ import annotations

from pathlib import Path

from station_support import db_rows
from station_tiny import tiny_station_files
from test_bad_input import tiny_onnx
from test_station_config import run_cli

from edgeprune.runtime import metadata as md
from edgeprune.runtime.operating_point import OperatingPoint
from edgeprune.station import Station, load_config


def _model_with_point(root: Path, ok_classes: tuple[str, ...]) -> Path:
    point = OperatingPoint(ok_classes=ok_classes, ok_threshold=0.5, target="ok_threshold=0.5")
    return tiny_onnx(root / "with-point.onnx", **{md.OPERATING_POINT: point.to_dict()})


def _toml(root: Path, model: Path, replay: Path) -> Path:
    config = root / "station.toml"  # no ok_classes key
    config.write_text(f'model = "{model}"\nsource = "replay:{replay}"\ndb = "s.db"\n')
    return config


def test_without_ok_classes_the_operating_points_classes_pass(tmp_path, capsys):
    _, replay = tiny_station_files(tmp_path, per_class=3)
    model = _model_with_point(tmp_path, ("c1",))
    config = _toml(tmp_path, model, replay)
    assert load_config(config).ok_classes is None

    station = Station(load_config(config))
    try:
        assert station.config.ok_classes == ("c1",)
        assert station.status()["ok_classes"] == ["c1"]
    finally:
        station.close()

    code, out, err = run_cli(["station", "run", "--config", config, "--max-images", "4"], capsys)
    assert code == 0, err
    rows = db_rows(tmp_path / "s.db")
    assert len(rows) == 4
    # Two classes, threshold 0.5 on P(c1): OK exactly when c1 is the likelier class.
    assert all((r["decision"] == "OK") == (r["predicted_class"] == "c1") for r in rows), rows


def test_the_config_still_wins_over_a_model_without_a_point(tmp_path):
    model, replay = tiny_station_files(tmp_path, per_class=2)
    station = Station(load_config(None, {"model": model, "source": f"replay:{replay}",
                                         "db": tmp_path / "s.db", "ok_classes": "c0"}))
    try:
        assert station.config.ok_classes == ("c0",)
    finally:
        station.close()


def test_no_ok_classes_and_no_operating_point_refuses_to_start(tmp_path, capsys):
    model, replay = tiny_station_files(tmp_path, per_class=2)
    for args in (["--config", _toml(tmp_path, model, replay)],
                 ["--model", model, "--source", f"replay:{replay}", "--db", tmp_path / "s.db"]):
        code, out, err = run_cli(["station", "run", *args, "--max-images", "2"], capsys)
        assert code == 2 and err.startswith("error:") and "Traceback" not in err, err
        assert "c0, c1" in err and "ok_classes = [...]" in err and "--ok-classes" in err, err
        assert "decided" not in out
    assert not (tmp_path / "s.db").exists() or db_rows(tmp_path / "s.db") == []
