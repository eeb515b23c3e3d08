"""A study killed with SIGKILL mid-way and resumed: nothing that finished runs again, the
experiment that was cut off is discarded and re-run, no row is stored twice. Then the Ray
executor, on a local Ray instance, reproduces the resumed (local) study's rows for the same
experiments (same keys, same seeds), latencies aside."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a real study: ~1-2 min on 2 cores (ONNX export ~10 s a model)

CONFIG = """
name = "resume"
[data]
spec = "digits"
image_size = 32
[baseline]
checkpoint = "{checkpoint}"
[[experiments]]
method = "l1"
target = 0.3
finetune_epochs = 1
[[experiments]]
method = "l1"
target = 0.45
finetune_epochs = 0
[measure]
runtimes = ["onnxruntime"]
budget_s = 0.05
memory = false
"""


def _state(run_dir: Path) -> tuple[set[str], set[str]]:
    """(keys with a row, experiment folders without one)."""
    if not (run_dir / "study.db").is_file():
        return set(), set()
    with sqlite3.connect(run_dir / "study.db", timeout=30) as db:
        try:
            rows = dict(db.execute("SELECT key, folder FROM experiments").fetchall())
        except sqlite3.OperationalError:  # the schema is not there yet
            return set(), set()
    folders = {f"experiments/{p.name}" for p in (run_dir / "experiments").glob("*")} \
        if (run_dir / "experiments").is_dir() else set()
    return set(rows), folders - set(rows.values())


@pytest.fixture(scope="module")
def killed_and_resumed(trained_digits_checkpoint, tmp_path_factory):
    """(config path, run dir, keys finished before the kill, half-written folders, resume outcome)."""
    from edgeprune.study import load_config, run_study

    tmp_path = tmp_path_factory.mktemp("resume")
    config_path = tmp_path / "resume.toml"
    config_path.write_text(CONFIG.format(checkpoint=trained_digits_checkpoint))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    stderr = (tmp_path / "stderr.txt").open("w")  # a file: a full pipe would stall the study
    process = subprocess.Popen([sys.executable, "-m", "edgeprune", "study", "run", str(config_path),
                                "--out", str(run_dir)], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done, unfinished = _state(run_dir)
            # killed while the last experiment is being written: two finished, one half-written
            if len(done) >= 2 and unfinished:
                break
            assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            time.sleep(0.02)
        else:
            raise AssertionError("the study never reached its last experiment")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        stderr.close()
    finished_before, half_written = _state(run_dir)
    outcome = run_study(load_config(config_path), run_dir, resume=True)
    return config_path, run_dir, finished_before, half_written, outcome


def test_killed_study_resumes_without_repeating(killed_and_resumed):
    from edgeprune.study import StudyStore, results

    _, run_dir, finished_before, half_written, outcome = killed_and_resumed
    assert len(finished_before) == 2 and half_written
    assert {e.key for e in outcome.skipped} == finished_before
    assert len(outcome.ran) == 3 - len(finished_before)
    with StudyStore(run_dir) as store:
        attempts = store.attempts()
        keys = [row["key"] for row in store.rows()]
    assert len(keys) == len(set(keys)) == 3  # every experiment once, no duplicate row
    for key in finished_before:
        assert attempts[key] == 1, "a finished experiment ran again"
    cut_off = [k for k in keys if any(f.endswith(k[:10]) for f in half_written)]
    assert cut_off and all(attempts[k] == 2 for k in cut_off)  # discarded and re-run once
    assert sum(attempts.values()) == 3 + len(cut_off)
    table = results(run_dir)
    assert len(table) == 3 and table["accuracy"].min() > 0.5  # chance: 0.1
    # the half-written folder was replaced by a complete one
    for folder in half_written:
        assert (run_dir / folder / "model.onnx").is_file()


RAY_SUBSET = 2  # the baseline and the first experiment: same keys as in the local study


def test_ray_executor_matches_local(killed_and_resumed, tmp_path):
    pytest.importorskip("ray", reason="Ray is the edgeprune[ray] extra, installed by make install")
    from edgeprune.study import StudyStore, load_config, results, run_study

    config_path, local_dir, _, _, _ = killed_and_resumed
    text = config_path.read_text()
    first_two = re.split(r"(?=\[\[experiments\]\])", text)  # header, experiment 1, 2, 3 (+ measure)
    subset = tmp_path / "ray.toml"
    subset.write_text(first_two[0] + first_two[1] + "[measure]" + text.split("[measure]", 1)[1])
    messages: list[str] = []
    remote = run_study(load_config(subset), tmp_path / "ray", executor="ray", ray_init={"num_cpus": 1},
                       log=messages.append)
    assert len(remote.ran) == RAY_SUBSET
    assert any(m.startswith("ray: ") and "done on" in m for m in messages)
    same = ["name", "method", "achieved", "params", "nonzero_params", "macs", "gzip_bytes",
            "accuracy", "balanced_accuracy", "recall:3"]
    local = results(local_dir, per_fold=True).set_index("key")
    ray = results(tmp_path / "ray", per_fold=True).set_index("key")
    assert set(ray.index) <= set(local.index)
    assert ray[same].to_dict("index") == local.loc[ray.index, same].to_dict("index")
    # the ONNX metadata carries the pruning record, timings included: a few bytes may differ
    assert ((ray["onnx_bytes"] - local.loc[ray.index, "onnx_bytes"]).abs() < 100).all()
    for key in ray.index:  # bit-identical weights
        weights = "checkpoint/model.safetensors"
        assert (tmp_path / "ray" / ray.loc[key, "folder"] / weights).read_bytes() == \
            (local_dir / local.loc[key, "folder"] / weights).read_bytes()
    assert ray.loc[ray["method"] != "baseline", "accuracy"].min() > 0.5  # the fine-tuned l1 30 %
    assert (ray["onnxruntime_b1_ms"] > 0).all()
    with StudyStore(tmp_path / "ray") as store:  # the files, unpacked into RUN_DIR by the driver
        for row in store.rows():
            assert (tmp_path / "ray" / row["folder"] / "model.onnx").is_file()
            assert (tmp_path / "ray" / row["folder"] / "checkpoint" / "model.safetensors").is_file()
