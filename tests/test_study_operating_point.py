"""A study judged as a line judges: operating points per model, resolution as a grid axis beside
pruning, a final fine-tune, and a recommendation by the false-reject rate at a recall target."""

from __future__ import annotations

import pytest

from edgeprune.errors import EdgepruneError

pytestmark = pytest.mark.slow  # a real study: 3 models on digits, ~1-2 min on 2 cores

CONFIG = """
name = "digits-line"
[data]
spec = "digits"
image_size = 32
seed = 0
[baseline]
arch = "mobilenet_v2"
width_mult = 0.5
epochs = 3
[finetune]
lr = 0.01
augment = "line"
[grid]
method = ["l2-channel"]
target = [0.5]
image_size = [24, 32]
final_epochs = [1]
distill = [true]
[measure]
threads = 1
budget_s = 0.2
memory = false
robustness = false
ok_classes = ["0"]
recall_targets = [0.9]
[recommend]
max_drop = 100
metric = "false_reject@recall=0.9"
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from edgeprune.study import parse_config, run_study

    run_dir = tmp_path_factory.mktemp("line") / "run"
    config = parse_config(CONFIG)
    outcome = run_study(config, run_dir)
    return run_dir, config, outcome


def test_resolution_is_a_grid_axis_and_each_cut_runs_at_its_size(study):
    from edgeprune.models import Model
    from edgeprune.study import results

    run_dir, config, outcome = study
    sizes = sorted(e.config["data"]["image_size"] for e in outcome.planned if e.kind == "prune")
    assert sizes == [24, 32]
    table = results(run_dir).set_index("name")
    assert sorted(table["image_size"]) == [24, 32, 32]
    assert (table.loc[[n for n in table.index if n != "baseline"], "final_epochs"] == 1).all()
    small = next(e for e in outcome.planned if e.kind == "prune" and e.config["data"]["image_size"] == 24)
    assert Model.load(run_dir / small.folder / "checkpoint").meta.input_size == 24
    assert config.finetune["augment"] == "line"


def test_every_model_is_judged_at_the_validation_chosen_point(study):
    from edgeprune.study import results

    run_dir, _, _ = study
    table = results(run_dir)
    assert table["false_reject@recall=0.9"].between(0, 1).all()
    assert table["defect_recall@recall=0.9"].between(0, 1).all()


def test_recommend_ranks_by_false_rejects_lower_is_better(study):
    from edgeprune.study import results
    from edgeprune.study.config import RecommendRule
    from edgeprune.study.recommend import recommend

    run_dir, _, _ = study
    table = results(run_dir)
    choice = recommend(table, RecommendRule(metric="false_reject@recall=0.9", max_drop=0.0))
    base = float(table.loc[table["method"] == "baseline", "false_reject@recall=0.9"].iloc[0])
    assert choice.baseline_metric == base
    assert all(r["metric"] <= base + 1e-12 for r in [choice.chosen, *choice.runners_up] if r)
    with pytest.raises(EdgepruneError, match="ok_classes"):
        recommend(table, RecommendRule(metric="false_reject@recall=0.5"))


def test_the_report_draws_the_roc(study):
    from edgeprune.study.report import write_report

    run_dir, _, _ = study
    written = write_report(run_dir)
    assert any(p.name == "roc.png" for p in written.images)


@pytest.mark.parametrize("line, message", [
    ("metric = \"false_reject@recall=2\"", "false_reject@recall=R"),
    ("metric = \"false_reject@recall=x\"", "false_reject@recall=R"),
])
def test_bad_operating_metrics_are_refused(line, message):
    from edgeprune.study import parse_config

    with pytest.raises(EdgepruneError, match=message):
        parse_config(CONFIG.replace('metric = "false_reject@recall=0.9"', line))
