"""A whole study on the shipped configs/digits-quick.toml: the database, the table, every plot
and the self-contained HTML report; the CLI over the same run."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a real study: ~1-2 min on 2 cores (ONNX export ~10 s a model)
CONFIG = PROJECT_ROOT / "configs" / "digits-quick.toml"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    from edgeprune.study import load_config, run_study

    run_dir = tmp_path_factory.mktemp("study") / "digits-quick"
    messages: list[str] = []
    outcome = run_study(load_config(CONFIG), run_dir, log=messages.append)
    return run_dir, outcome, messages


def test_database_holds_one_row_per_experiment(quick_study):
    run_dir, outcome, messages = quick_study
    assert len(outcome.planned) == 3 and len(outcome.ran) == 3  # baseline + 2 experiments
    with sqlite3.connect(run_dir / "study.db") as db:
        rows = db.execute("SELECT key, folder, wall_s FROM experiments").fetchall()
    assert sorted(k for k, _, _ in rows) == sorted(e.key for e in outcome.planned)
    for _, folder, wall_s in rows:
        assert (run_dir / folder / "checkpoint" / "model.json").is_file()
        assert (run_dir / folder / "model.onnx").is_file()
        assert wall_s > 0
    # the progress display: experiment i of N and an ETA
    assert any(m.startswith("[2/3] ") and "ETA" in m for m in messages)


def test_results_table(quick_study):
    from edgeprune.study import results

    run_dir, _, _ = quick_study
    table = results(run_dir)
    assert list(table["name"]) == ["baseline", "l1-oneshot-50", "l2-channel-geometric-50"]
    base, l1, channel = (table.iloc[i] for i in range(3))
    assert base["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert l1["accuracy"] > 0.5 and channel["accuracy"] > 0.3
    # unstructured: half the weights zero, same shape; structured: physically smaller
    assert l1["params"] == base["params"] and l1["nonzero_params"] < 0.6 * base["params"]
    assert channel["params"] < 0.6 * base["params"] and channel["macs"] < base["macs"]
    assert channel["onnx_bytes"] < 0.6 * base["onnx_bytes"]
    assert abs(l1["achieved"] - 0.5) < 0.01
    for column in ("onnxruntime_b1_ms", "onnxruntime_b64_ms", "peak_memory_bytes", "balanced_accuracy",
                   "gzip_bytes", "wall_s"):
        assert (table[column] > 0).all(), column
    assert (table["folds"] == 1).all()
    assert "recall:0" in table
    # robustness ("auto": digits' 360 test images): every model under every shift, and strong
    # shifts cost the baseline accuracy on average
    shift_columns = [c for c in table if c.startswith("shift:")]
    assert len(shift_columns) == 6 and table[shift_columns].notna().all().all()
    assert base[shift_columns].mean() < base["accuracy"] and base["shift_relative_drop"] > 0


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_embeds_every_plot(quick_study):
    from PIL import Image

    from edgeprune.errors import EdgepruneError
    from edgeprune.study import write_report

    run_dir, _, _ = quick_study
    written = write_report(run_dir)
    expected = {"accuracy_vs_sparsity", "latency_vs_sparsity", "params_vs_sparsity", "accuracy_vs_latency",
                "first_conv_filters", "pruned_per_layer", "accuracy_per_step", "robustness"}
    assert {p.stem for p in written.images} == expected
    parser = _Images()
    parser.feed(written.html.read_text())
    assert len(parser.sources) == len(expected)
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 200 and image.size[1] > 100
    markdown = written.markdown.read_text()
    assert all(f"({name}.png)" in markdown for name in expected)
    assert "Recommend" in markdown and "baseline" in markdown
    with pytest.raises(EdgepruneError, match="--overwrite"):
        write_report(run_dir)  # an existing report is not replaced silently


def test_cli_results_recommend_and_refusals(quick_study, tmp_path, capsys):
    from edgeprune.cli import main
    from edgeprune.study import results

    run_dir, _, _ = quick_study
    csv = tmp_path / "table.csv"
    with pytest.raises(SystemExit) as done:
        main(["study", "results", str(run_dir), "--csv", str(csv), "--json"])
    assert done.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(results(run_dir)["name"])
    assert csv.read_text().startswith("name,arch,method")
    with pytest.raises(SystemExit) as done:
        main(["study", "recommend", str(run_dir), "--max-drop", "100", "--prefer", "smallest"])
    assert done.value.code in (0, None)
    assert "Recommended: l2-channel-geometric-50" in capsys.readouterr().out  # the smallest file
    with pytest.raises(SystemExit) as done:
        main(["study", "recommend", str(run_dir), "--max-drop", "0", "--max-latency-ms", "0.0001"])
    assert "None qualifies" in capsys.readouterr().out
    # an existing study is not run over without --resume; nothing is changed
    before = (run_dir / "study.db").read_bytes()
    with pytest.raises(SystemExit) as done:
        main(["study", "run", str(CONFIG), "--out", str(run_dir)])
    assert done.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert (run_dir / "study.db").read_bytes() == before
    other = tmp_path / "other.toml"  # another study is not mixed into this one
    other.write_text(CONFIG.read_text().replace('name = "digits-quick"', 'name = "other"'))
    with pytest.raises(SystemExit) as done:
        main(["study", "run", str(other), "--out", str(run_dir), "--resume"])
    assert done.value.code == 2 and "holds the study 'digits-quick'" in capsys.readouterr().err
    assert (run_dir / "study.db").read_bytes() == before


def test_resume_of_a_finished_study_runs_nothing(quick_study):
    from edgeprune.study import load_config, run_study

    run_dir, outcome, _ = quick_study
    again = run_study(load_config(CONFIG), run_dir, resume=True)
    assert again.ran == [] and len(again.skipped) == len(outcome.planned)
    dry = run_study(load_config(CONFIG), run_dir, resume=True, dry_run=True)
    assert dry.estimate_s == 0.0


def test_retime_times_every_model_again_in_one_round_robin(quick_study, tmp_path, capsys):
    """`study retime` replaces each stored latency with one from a single round-robin over all
    models and keeps accuracy and sizes; it works on a copy of the run folder."""
    import shutil

    from edgeprune.cli import main
    from edgeprune.study import StudyStore

    run_dir, outcome, _ = quick_study
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with StudyStore(copy) as store:
        before = {r["key"]: r["result"] for r in store.rows()}
    with pytest.raises(SystemExit) as exc:
        main(["study", "retime", str(copy), "--budget", "0.05", "--runtime", "onnxruntime"])
    assert exc.value.code in (0, None)
    assert "retimed" in capsys.readouterr().err
    with StudyStore(copy) as store:
        after = {r["key"]: r["result"] for r in store.rows()}
    assert after.keys() == before.keys() and len(after) == len(outcome.planned)
    changed = 0
    for key, result in after.items():
        old = before[key]
        for field in ("accuracy", "balanced_accuracy", "onnx_bytes", "size_gzip_bytes", "params"):
            assert result[field] == old[field]
        timing = result["latency_timing"]
        assert "one round-robin" in timing["mode"] and timing["threads"] == 1 and timing["budget_s"] == 0.05
        new, was = result["latency"]["onnxruntime"], old["latency"]["onnxruntime"]
        assert new["b1_ms"] > 0 and new["b64_ms"] > 0
        assert new["peak_memory_bytes"] == was["peak_memory_bytes"]  # kept, not re-measured
        changed += new["b1_ms"] != was["b1_ms"]
    assert changed == len(after)  # every model was timed again
    with pytest.raises(SystemExit) as exc:
        main(["study", "retime", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: no study database" in err and "Traceback" not in err
