"""The station's config file and flags: flags override the file, and every bad value -- in the
file or on the command line -- ends with `error: ...` naming the key, exit code 2, no traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from station_support import db_rows, make_replay

from edgeprune.station import load_config

PROJECT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from edgeprune.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, " ".join(captured.err.split())


def test_example_config_loads_and_flags_override_it():
    cfg = load_config(PROJECT / "configs" / "station.toml", {"rate": 50.0, "ok_classes": "free,clean"})
    assert cfg.model == PROJECT / "configs" / "../runs/tiles.int8.onnx"
    assert cfg.rate == 50.0 and cfg.ok_classes == ("free", "clean") and cfg.review_below == 0.6
    assert cfg.modbus.count_register == 0 and cfg.opcua.sequence_node == "ns=2;s=edgeprune.sequence"


BAD_FILES = [
    ("rat = 5\n", "unknown key 'rat'"),
    ("review_below = 1.5\n", "review_below"),
    ("rate = \"fast\"\n", "rate"),
    ("plc = \"http://plc\"\n", "plc must be a URL"),
    ("mqtt = \"mqtt://broker:1883\"\n", "mqtt needs a topic"),
    ("[modbus]\ncount_registr = 3\n", "unknown key 'count_registr'"),
    ("[modbus]\nsequence_register = 0\n", "modbus registers must differ"),
    ("source = \"ftp:/x\"\n", "source must be replay:DIR"),
    ("this is not toml\n", "is not valid TOML"),
]


@pytest.mark.parametrize("text, needle", BAD_FILES)
def test_bad_config_file_is_a_clear_error(text, needle, tmp_path, capsys):
    config = tmp_path / "station.toml"
    config.write_text('model = "m.onnx"\nsource = "replay:."\n' + text if "source" not in text
                      else 'model = "m.onnx"\n' + text)
    code, _, err = run_cli(["station", "run", "--config", config], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err, err
    assert needle in err and str(config) in err, err


def test_bad_flags_are_clear_errors(tile_model, tmp_path, capsys):
    replay = make_replay(tile_model, tmp_path / "replay", 1)
    # A later --ok-classes in a case replaces the base's (the last value of a flag wins).
    base = ["station", "run", "--model", tile_model[0], "--source", f"replay:{replay}", "--db", tmp_path / "s.db",
            "--ok-classes", "free"]
    cases = [
        (["--rate", "0"], "rate must be > 0"),
        (["--review-below", "-0.1"], "review_below"),
        (["--ok-classes", "good"], "ok_classes names 'good'"),
        (["--ok-classes", "free,defect"], "nothing could ever be a DEFECT"),
        (["--plc", "modbus://127.0.0.1:502?unit=999"], "unit must be a Modbus device id"),
        (["--source", "camera:front"], "camera source takes a device index"),
        (["--source", f"replay:{tmp_path / 'missing'}"], "folder not found"),
        (["--http", "127.0.0.1:99999"], "port 1..65535"),
        (["--model", tmp_path / "missing.onnx"], "not found"),
        # No camera here: without OpenCV the install hint, with it the device that is missing.
        (["--source", "camera:0"], "camera 0 cannot be opened" if importlib.util.find_spec("cv2")
         else "pip install opencv-python-headless"),
    ]
    for extra, needle in cases:
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and "error:" in err and "Traceback" not in err, (extra, err)
        assert needle in err, (extra, err)
    code, _, err = run_cli(["station", "run"], capsys)
    assert code == 2 and "no model given" in err
    assert not (tmp_path / "s.db").exists() or db_rows(tmp_path / "s.db") == []


def test_flags_override_the_file(tile_model, tmp_path, capsys):
    replay = make_replay(tile_model, tmp_path / "replay", 4)
    config = tmp_path / "station.toml"
    config.write_text(f'model = "{tile_model[0]}"\nsource = "replay:{replay}"\nok_classes = ["free"]\n'
                      'db = "from-file.db"\nmax_images = 2\n')
    code, out, err = run_cli(["station", "run", "--config", config, "--max-images", "3",
                              "--db", tmp_path / "flag.db"], capsys)
    assert code == 0, err
    assert "3 decided" in out and len(db_rows(tmp_path / "flag.db")) == 3
    assert not (tmp_path / "from-file.db").exists()
