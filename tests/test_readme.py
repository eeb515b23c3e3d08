"""The README's three quickstarts run as written: each test takes its block out of README.md and
runs it (the CLI block in bash, on a small class-folder tree made here; the station block on
what `edgeprune demo` leaves, with a free port and a bounded number of images)."""

from __future__ import annotations

import csv
import json
import os
import re
import runpy
import shlex
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from station_support import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's edgeprune script lives beside its python


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def _block(title: str, lang: str) -> str:
    match = re.search(rf"```{lang}\n(.*?)```", _section(title), re.S)
    assert match, f"README's section '{title}' has no {lang} block"
    return match.group(1)


def _commands(block: str) -> list[str]:
    """The block's shell commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["EDGEPRUNE_CACHE"] = str(tmp_path / "cache")
    return env


def test_readme_stays_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text
    for link in re.findall(r"\]\(((?:docs/|LICENSE)[^)#]*)", text):
        assert (ROOT / link).exists(), f"README links to a missing file: {link}"
    for page in (ROOT / "docs").glob("*.md"):
        words = page.read_text(encoding="utf-8")
        for stale in ("not run yet", "not found yet"):
            assert stale not in words, f"{page.name} speaks of work in progress: {stale!r}"
        assert not re.search(r"\bissue \d+", words), f"{page.name} names an issue"


@pytest.mark.slow
def test_python_quickstart_runs(tmp_path, monkeypatch):
    block = _block("Quickstart 1", "python")
    assert len([line for line in block.splitlines() if line.strip()]) <= 12  # "about ten lines"
    script = tmp_path / "readme_api.py"
    script.write_text(block, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    names = runpy.run_path(str(script))

    model, pruned, data, int8 = names["model"], names["pruned"], names["data"], names["int8"]
    params = lambda m: sum(p.numel() for p in m.module.parameters())  # noqa: E731
    # a useful baseline, not chance (10 classes: 0.10)
    assert model.metrics["test_accuracy"] > 0.5
    assert 0.45 <= 1 - params(pruned) / params(model) <= 0.55  # half the parameters, physically
    assert pruned.pruning["method"] == "taylor-channel"
    assert pruned.split == model.split and pruned.split["fingerprint"]
    assert (tmp_path / "digits.int8.onnx").is_file() and int8.path.name == "digits.int8.onnx"
    int8_accuracy = int8.verification.artifact_accuracy
    assert int8_accuracy is not None and int8_accuracy > 0.4
    predictions = names["clf"].classify_images(
        [image.permute(1, 2, 0).numpy() for image in data.test.images[:4]]
    )
    assert len(predictions) == 4 and all(p.label in data.class_names for p in predictions)


def _class_tree(root: Path, per_class: int = 24) -> list[str]:
    """Three classes a small network tells apart in a few epochs: a bright square top left, bottom
    right, or none, on noise (every image different, so `data check` finds no duplicates)."""
    rng = np.random.default_rng(0)
    classes = ["corner-a", "corner-b", "plain"]
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            image = rng.integers(0, 90, (40, 40, 3), dtype=np.uint8)
            if index == 0:
                image[4:18, 4:18] = 230
            elif index == 1:
                image[22:36, 22:36] = 230
            Image.fromarray(image).save(root / name / f"{k:03d}.png")
    return classes


@pytest.mark.slow
def test_cli_quickstart_runs_on_a_class_folder_tree(tmp_path):
    block = _block("Quickstart 2", "bash")
    data = re.search(r"^DATA=(\S+)", block, re.M)
    assert data, "the CLI quickstart names its data folder in DATA="
    classes = _class_tree(tmp_path / data.group(1))

    started = time.perf_counter()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"CLI quickstart: {time.perf_counter() - started:.1f} s")

    baseline = json.loads((tmp_path / "runs/mine/model.json").read_text())
    pruned = json.loads((tmp_path / "runs/mine-pruned/model.json").read_text())
    assert baseline["class_names"] == classes and pruned["pruning"]["method"] == "taylor-channel"
    assert (tmp_path / "runs/mine.int8.onnx").is_file()
    with open(tmp_path / "runs/bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_artifact = {}
    for row in rows:
        by_artifact.setdefault(row["artifact"], []).append(row)
    assert set(by_artifact) == {"mine", "mine-pruned", "mine.int8.onnx"}
    int8 = next(r for r in by_artifact["mine.int8.onnx"] if r["runtime"] == "onnxruntime")
    dense = next(r for r in by_artifact["mine"] if r["runtime"] == "onnxruntime")
    # the squares are easy, but the test split is a handful of images: well above chance (1/3)
    assert float(int8["accuracy"]) >= 0.6
    assert int(int8["file_bytes"]) < 0.25 * int(dense["file_bytes"])  # half the channels, int8


@pytest.mark.slow
def test_station_quickstart_serves_the_dashboard_on_what_the_demo_leaves(tmp_path, demo_run):
    commands = _commands(_block("Quickstart 3", "bash"))
    assert commands[0] == "make demo" and len(commands) == 2
    station = shlex.split(commands[1])
    assert station[:3] == ["edgeprune", "station", "run"] and "127.0.0.1:8080" in station

    # `make demo` is `edgeprune demo` in a fresh venv; here with fewer epochs, same outputs (the
    # demo test judges its figures)
    env, cwd = _env(tmp_path), Path(demo_run["cwd"])
    model = cwd / station[station.index("--model") + 1]
    replay = cwd / station[station.index("--source") + 1].removeprefix("replay:")
    assert model.is_file() and json.loads((cwd / "runs/demo/pruned-taylor-50-int8.onnx.json").read_text())
    assert len(list(replay.glob("*/*.png"))) == 200
    assert " ".join(station[3:]) in demo_run["stdout"].replace("\n", " ").replace(
        "  ", " "
    )  # the demo says it

    port = free_port()
    station[0] = str(BIN / "edgeprune")
    station[station.index("127.0.0.1:8080")] = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*station, "--max-images", "12"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        page, status = None, None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as response:
                    status = json.loads(response.read())
                if status["decided_this_run"] > 0:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert page is not None and "<title>edgeprune station</title>" in page
        assert status is not None and status["decided_this_run"] > 0, status
        assert status["source"].startswith("replay:") and status["ok_classes"] == [
            str(d) for d in (0, 1, 2, 3, 4, 5, 6, 8, 9)
        ]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    with sqlite3.connect(cwd / "runs/demo/station.db") as db:
        decided = db.execute("SELECT count(*), count(DISTINCT path) FROM decisions").fetchone()
    assert decided == (12, 12)
