"""Pruning engine on untrained torchvision models: exact targets, real shrinking, guards, errors.

Random-init MobileNetV2 / ResNet-18 at 32x32 is enough for shapes, counts and schedules; the
accuracy claims (random < l1) are in test_pruning_digits.py on a trained model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint
from edgeprune.pruning import (
    IMPORTANCES,
    ChannelImportance,
    ChannelPruning,
    L1Channel,
    L1Unstructured,
    L2Channel,
    RandomChannel,
    RandomUnstructured,
    Schedule,
    TaylorChannel,
    UnstructuredPruning,
    WeightImportance,
    cumulative_targets,
    get_importance,
    make_config,
    prune,
    prune_iteratively,
    recalibrate_batchnorm,
    register_importance,
    step_fraction,
)
from edgeprune.pruning.scope import layers_in_scope, prunable_layers
from helpers import kept_filters

X1 = torch.zeros(1, 3, 32, 32)


def _mnv2(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("mobilenet_v2", 10).eval()


def _counted(model: nn.Module, scope: str = "all") -> tuple[int, int]:
    names = layers_in_scope(model, scope, X1)
    zeros = sum(int((model.get_submodule(n).weight == 0).sum()) for n in names)
    total = sum(model.get_submodule(n).weight.numel() for n in names)
    return zeros, total


def _forward_ok(model: nn.Module, classes: int = 10) -> None:
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, classes)
        assert model(torch.randn(5, 3, 32, 32)).shape == (5, classes)



def _fake_fine_tune(model: nn.Module, step) -> None:
    """A real optimizer step that would move pruned weights off zero without the hook."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
        opt.step()
        if step.after_step is not None:
            step.after_step()
    model.eval()


# ----------------------------------------------------------------------------- schedules
def test_schedule_targets_are_cumulative_and_end_exactly_on_the_target():
    s, n = 0.9, 4
    geo = cumulative_targets("geometric", s, n)
    assert geo == pytest.approx([1 - (1 - s) ** (k / n) for k in range(1, n + 1)])
    assert geo[-1] == s
    # each geometric step removes S_step of what remains
    remaining = [1 - t for t in [0.0, *geo]]
    for a, b in zip(remaining, remaining[1:]):
        assert 1 - b / a == pytest.approx(step_fraction(s, n))
    assert cumulative_targets("linear", 0.8, 4) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    agp = cumulative_targets("agp", 0.8, 4)
    assert agp == pytest.approx([0.8 * (1 - (1 - k / 4) ** 3) for k in range(1, 5)])
    assert agp[0] > 0.2 * 1.5  # big steps first
    assert cumulative_targets("oneshot", 0.3) == [0.3]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_targets_outside_the_open_unit_interval_are_rejected(bad):
    with pytest.raises(EdgepruneError, match="between 0 and 1|number in"):
        L1Unstructured(sparsity=bad)
    with pytest.raises(EdgepruneError):
        L2Channel(target=bad, target_kind="params")
    with pytest.raises(EdgepruneError):
        cumulative_targets("geometric", bad, 3)


def test_bad_configs_are_clear_errors():
    with pytest.raises(EdgepruneError, match="unknown pruning method 'magic'"):
        make_config("magic", 0.5)
    with pytest.raises(EdgepruneError, match="unknown schedule"):
        Schedule("cosine", 3)
    with pytest.raises(EdgepruneError, match="steps"):
        Schedule("geometric", 0)
    with pytest.raises(EdgepruneError, match="exactly one step"):
        Schedule("oneshot", 3)
    with pytest.raises(EdgepruneError, match="scope"):
        L1Unstructured(sparsity=0.5, scope="middle")
    with pytest.raises(EdgepruneError, match="target kind"):
        L2Channel(target=0.5, target_kind="flops")
    with pytest.raises(EdgepruneError, match="max_layer_sparsity"):
        L1Unstructured(sparsity=0.5, max_layer_sparsity=1.0)
    with pytest.raises(EdgepruneError, match="do not apply"):
        make_config("l1", 0.5, round_to=8)
    assert make_config("l2-channel", 0.3, target_kind="macs").target_kind == "macs"
    assert L2Channel(ratio=0.3).target_kind == "channels"


def test_unreachable_targets_fail_before_any_work():
    with pytest.raises(EdgepruneError, match="cannot be reached"):
        prune_iteratively(_mnv2(), L1Unstructured(sparsity=0.99, max_layer_sparsity=0.95),
                          Schedule("linear", 5), example_inputs=X1,
                          fine_tune=lambda m, s: pytest.fail("fine-tuned before failing"))
    with pytest.raises(EdgepruneError, match="out of reach"):
        prune(_mnv2(), L2Channel(target=0.9, target_kind="params", min_channels=128), X1)


def test_a_model_without_prunable_layers_is_a_clear_error():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(EdgepruneError, match="no prunable layers"):
        prune(model, L1Unstructured(sparsity=0.5), X1)
    with pytest.raises(EdgepruneError, match="no prunable layers"):
        prune(model, L2Channel(target=0.5), X1)


# ----------------------------------------------------------------------------- unstructured
@pytest.mark.parametrize("schedule,steps", [("oneshot", 1), ("geometric", 3), ("linear", 3), ("agp", 3)])
@pytest.mark.parametrize("per_layer", [False, True])
def test_unstructured_achieved_sparsity_equals_the_target_for_every_schedule(schedule, steps, per_layer):
    model = _mnv2()
    target = 0.5
    seen_masks: list[dict] = []

    def fine_tune(m, step):
        _fake_fine_tune(m, step)
        seen_masks.append({n: (m.get_submodule(n).weight == 0).clone() for n in prunable_layers(m)})

    result = prune_iteratively(
        model, L1Unstructured(sparsity=target, per_layer=per_layer), Schedule(schedule, steps),
        example_inputs=X1, fine_tune=fine_tune,
    )
    zeros, total = _counted(result.model)
    assert abs(zeros / total - target) < 0.005  # within half a point of the counted weights
    if per_layer:  # exactly the target in every layer
        for name, mask in result.masks.pruned.items():
            assert int(mask.sum()) == round(target * mask.numel()), name
    else:
        assert result.masks.num_pruned == round(target * total)  # exactly, not approximately
    assert result.achieved == pytest.approx(result.masks.num_pruned / total)
    asked = [s.asked for s in result.steps]
    assert asked == pytest.approx(cumulative_targets(schedule, target, steps))
    for s in result.steps:
        assert abs(s.achieved - s.asked) < 0.005
    # pruned weights stayed pruned through fine-tuning: the zeros only grow from step to step,
    # and after the last fine-tuning every pruned weight is still zero
    assert len(seen_masks) == steps
    for a, b in zip(seen_masks, seen_masks[1:]):
        for name in a:
            assert bool((a[name] & ~b[name]).sum() == 0), name
    assert set(result.masks.pruned) <= set(seen_masks[-1])
    for name, mask in result.masks.pruned.items():
        assert bool((mask & ~seen_masks[-1][name]).sum() == 0), name
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in result.model.state_dict())
    _forward_ok(result.model)


def test_random_unstructured_is_exact_and_seeded():
    a, b = _mnv2(), _mnv2()
    ra = prune(a, RandomUnstructured(sparsity=0.7, seed=3), X1)
    rb = prune(b, RandomUnstructured(sparsity=0.7, seed=3), X1)
    assert ra.achieved == rb.achieved
    assert all(torch.equal(ra.masks.pruned[k], rb.masks.pruned[k]) for k in ra.masks.pruned)
    zeros, total = _counted(a)
    assert zeros == round(0.7 * total)


def test_layer_collapse_guard_never_empties_a_layer():
    model = _mnv2()
    with torch.no_grad():  # one layer whose weights are all tiny: plain global L1 would empty it
        model.features[5].conv[1][0].weight.mul_(1e-6)
    result = prune(model, L1Unstructured(sparsity=0.9, max_layer_sparsity=0.95, scoring="magnitude"), X1)
    rows = {r["layer"]: r for r in result.layers}
    assert rows["features.5.conv.1.0"]["sparsity"] <= 0.95 + 1e-9
    assert rows["features.5.conv.1.0"]["capped"]
    assert "features.5.conv.1.0" in result.capped_layers
    assert all(r["sparsity"] < 1.0 for r in result.layers)
    zeros, total = _counted(result.model)
    assert zeros == round(0.9 * total)  # the cap moves sparsity elsewhere, the total stays exact
    # LAMP scores are layer-adaptive: no cap needed to keep every layer alive
    lamp = prune(_mnv2(), L1Unstructured(sparsity=0.95, scoring="lamp"), X1)
    assert all(r["sparsity"] < 1.0 for r in lamp.layers)


def test_lamp_scores_follow_the_formula_on_a_hand_made_example():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    # squared and sorted: [0.25, 1, 4, 9]; suffix sums: [14.25, 14, 13, 9]; each squared weight
    # over its suffix sum, placed back at the weight's position (flattened, row-major)
    got = get_importance("lamp", "weight").scores(w)
    assert got.shape == (4,)
    assert torch.equal(got, torch.tensor([1.0, 4.0, 9.0, 0.25]) / torch.tensor([14.0, 13.0, 9.0, 14.25]))
    assert got.tolist() == pytest.approx([1 / 14, 4 / 13, 1.0, 0.25 / 14.25], rel=1e-6)
    assert got[2] == 1.0  # the layer's largest weight scores exactly 1
    # equal magnitudes: the earlier position ranks first (a stable sort)
    assert get_importance("lamp", "weight").scores(torch.tensor([2.0, -2.0])).tolist() == [0.5, 1.0]
    assert get_importance("magnitude", "weight").scores(w).tolist() == [1.0, 2.0, 3.0, 0.5]


def test_configs_name_their_criterion_from_the_registry():
    assert sorted(IMPORTANCES["weight"]) == ["lamp", "magnitude", "random"]
    assert sorted(IMPORTANCES["channel"]) == ["l1", "l2", "random", "taylor"]
    cases = [
        (L1Unstructured(sparsity=0.5), "weight", "lamp"),
        (L1Unstructured(sparsity=0.5, scoring="magnitude"), "weight", "magnitude"),
        (RandomUnstructured(sparsity=0.5, seed=3), "weight", "random"),
        (L2Channel(target=0.3), "channel", "l2"),
        (L1Channel(target=0.3), "channel", "l1"),
        (TaylorChannel(target=0.3, num_batches=2), "channel", "taylor"),
        (RandomChannel(target=0.3, seed=3), "channel", "random"),
    ]
    for config, family, name in cases:
        assert config.criterion == name
        criterion = config.importance()
        assert type(criterion) is IMPORTANCES[family][name]
        assert criterion.name == name
    assert TaylorChannel(target=0.3, num_batches=2).importance().num_batches == 2
    assert TaylorChannel(target=0.3).importance().needs_gradients
    assert not L2Channel(target=0.3).importance().needs_gradients
    # the generic configs reach the same criteria by name, with the same results
    a, b = _mnv2(), _mnv2()
    ra = prune(a, RandomUnstructured(sparsity=0.6, seed=3), X1)
    rb = prune(b, UnstructuredPruning(sparsity=0.6, criterion="random", criterion_options={"seed": 3}), X1)
    assert all(torch.equal(ra.masks.pruned[k], rb.masks.pruned[k]) for k in ra.masks.pruned)
    assert rb.method == "unstructured" and rb.config["criterion"] == "random"


def test_registry_errors_are_clear():
    with pytest.raises(EdgepruneError, match="unknown importance criterion 'nope'.*l2"):
        get_importance("nope")
    with pytest.raises(EdgepruneError, match="family='weight' or family='channel'"):
        get_importance("random")
    with pytest.raises(EdgepruneError, match="unknown criterion family"):
        get_importance("l2", "filter")
    with pytest.raises(EdgepruneError, match="does not take"):
        get_importance("l2", "channel", seed=1)
    with pytest.raises(EdgepruneError, match="unknown importance criterion 'lamp'"):
        ChannelPruning(target=0.3, criterion="lamp")  # a weight criterion, not a channel one
    with pytest.raises(EdgepruneError, match="does not take"):
        UnstructuredPruning(sparsity=0.5, criterion="lamp", criterion_options={"seed": 1})
    with pytest.raises(EdgepruneError, match="already registered"):
        register_importance("l2")(type("Other", (ChannelImportance,), {}))
    with pytest.raises(EdgepruneError, match="subclass"):
        register_importance("plain")(object)
    assert set(IMPORTANCES["channel"]) == {"l1", "l2", "random", "taylor"}  # nothing half-added


def test_a_user_registered_channel_criterion_prunes():
    seen = []

    @register_importance("test-first-channels")
    class FirstChannels(ChannelImportance):
        """Scores channels by their index: the first channels of every group go first."""

        def __call__(self, group):
            _, idxs = group[0]
            return torch.arange(len(idxs), dtype=torch.float32)

    @register_importance("test-needs-grad")
    class NeedsGrad(FirstChannels):
        """A gradient-based criterion: prepare() does the gradient pass, not structured.py."""

        needs_gradients = True

        def __init__(self, num_batches: int = 4):
            super().__init__()
            self.num_batches = num_batches

        def __call__(self, group):
            seen.append(group[0].dep.target.module.weight.grad is not None)
            return super().__call__(group)

    try:
        assert isinstance(get_importance("test-first-channels"), FirstChannels)
        model = _mnv2()
        dense = model.features[0][0].weight.detach().clone()
        # round_to fixed: "auto" would keep multiples of 16 on an AVX-512 host
        result = prune(model, ChannelPruning(target=0.3, criterion="test-first-channels", round_to=8), X1)
        assert torch.equal(model.features[0][0].weight, dense[8:])  # channels 0-7 went
        assert result.method == "channel" and result.config["criterion"] == "test-first-channels"
        _forward_ok(model)

        config = ChannelPruning(target=0.3, criterion="test-needs-grad", round_to=8,
                                criterion_options={"num_batches": 1})
        with pytest.raises(EdgepruneError, match="test-needs-grad criterion needs training batches"):
            prune(_mnv2(), config, X1)
        model = _mnv2()
        batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
        prune(model, config, X1, batches=batches)
        assert seen and all(seen)  # every group was scored with gradients in place
        assert all(p.grad is None for p in model.parameters())  # and they were cleared after
        assert torch.equal(model.features[0][0].weight, dense[8:])
    finally:
        IMPORTANCES["channel"].pop("test-first-channels", None)
        IMPORTANCES["channel"].pop("test-needs-grad", None)


def test_a_user_registered_weight_criterion_prunes():
    @register_importance("test-largest-first")
    class LargestFirst(WeightImportance):
        """The opposite of magnitude pruning: the largest weights go first."""

        def scores(self, weight):
            return -weight.detach().abs().flatten()

    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        dense = torch.cat([m.weight.detach().abs().flatten() for m in (model[0], model[2])])
        result = prune(model, UnstructuredPruning(sparsity=0.5, criterion="test-largest-first"),
                       torch.zeros(1, 4))
        after = torch.cat([m.weight.detach().flatten() for m in (model[0], model[2])])
        assert result.masks.num_pruned == 21  # half of 24 + 18 weights
        assert dense[after == 0].min() > dense[after != 0].max()  # the largest went
    finally:
        IMPORTANCES["weight"].pop("test-largest-first", None)


def test_unstructured_works_on_channels_last_weights():
    model = _mnv2().to(memory_format=torch.channels_last)
    result = prune(model, L1Unstructured(sparsity=0.8), X1)
    zeros, total = _counted(result.model)
    assert zeros == round(0.8 * total)
    _forward_ok(result.model)


@pytest.mark.parametrize("scope", ["head", "blocks"])
def test_unstructured_scope_limits_what_is_touched(scope):
    model = _mnv2()
    result = prune(model, L1Unstructured(sparsity=0.6, scope=scope), X1)
    inside = set(layers_in_scope(model, scope, X1))
    for row in result.layers:
        if row["layer"] in inside:
            assert row["in_scope"]
        else:
            assert row["zeros"] == 0, row["layer"]
    zeros, total = _counted(model, scope)
    assert zeros == round(0.6 * total)
    if scope == "head":
        assert inside == {"classifier.1"}
    else:
        assert "features.0.0" not in inside and "classifier.1" not in inside


def test_unstructured_checkpoint_has_no_mask_copies_and_keeps_zeros(tmp_path):
    model = _mnv2()
    prune(model, L1Unstructured(sparsity=0.9), X1)
    meta = CheckpointMeta("mobilenet_v2", [str(i) for i in range(10)], 32, [0.5] * 3, [0.25] * 3)
    save_checkpoint(model, meta, tmp_path / "c")
    loaded, _ = load_checkpoint(tmp_path / "c")
    z0, t0 = _counted(model)
    z1, t1 = _counted(loaded)
    assert (z0, t0) == (z1, t1)


# ----------------------------------------------------------------------------- structured
@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_channel_pruning_physically_shrinks_tensors_and_keeps_the_classes(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, 10).eval()
    dense = {n: m.weight.shape for n, m in prunable_layers(model).items()}
    x = torch.randn(2, 3, 32, 32)
    result = prune(model, L2Channel(ratio=0.3, round_to=8, min_channels=16), X1)
    after = {n: m.weight.shape for n, m in prunable_layers(model).items()}
    shrunk = [n for n in dense if after[n] != dense[n]]
    assert len(shrunk) > len(dense) // 2
    head = "classifier.1" if arch == "mobilenet_v2" else "fc"
    assert after[head][0] == 10  # the classifier never loses outputs
    for name, m in prunable_layers(model).items():
        if name != head and after[name] != dense[name]:
            assert m.weight.shape[0] % 8 == 0 and m.weight.shape[0] >= 16, (name, m.weight.shape)
    assert result.params < 0.6 * result.dense_params
    assert result.macs < 0.6 * result.dense_macs
    assert result.params == sum(p.numel() for p in model.parameters())
    for m in model.modules():  # batch norms follow their convs
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean.shape[0] == m.num_features == m.weight.shape[0]
    _forward_ok(model)
    # An untrained MobileNetV2 in eval mode gives logits near 1e-10, which any two models
    # "agree" on: re-estimate the batch norms so the outputs carry signal before comparing.
    recalibrate_batchnorm(model, [(torch.randn(16, 3, 32, 32), None) for _ in range(2)])
    meta = CheckpointMeta(arch, [str(i) for i in range(10)], 32, [0.5] * 3, [0.25] * 3)
    save_checkpoint(model, meta, tmp_path / "c")
    loaded, _ = load_checkpoint(tmp_path / "c")
    with torch.no_grad():
        out = model(x)
        assert out.abs().mean() > 0.05 and (out[0] - out[1]).abs().max() > 0.05, out
        assert torch.allclose(out, loaded(x), rtol=0, atol=1e-5)
    assert (tmp_path / "c" / "model.safetensors").stat().st_size < 0.6 * 4 * result.dense_params


@pytest.mark.parametrize("kind", ["params", "macs"])
def test_params_and_macs_targets_are_met_by_search(kind):
    result = prune(_mnv2(), L1Channel(target=0.5, target_kind=kind), X1)
    got = result.params_reduction if kind == "params" else result.macs_reduction
    assert abs(got - 0.5) < 0.01, got
    assert result.achieved == pytest.approx(got)
    assert result.achieved_kind == kind


def test_structured_geometric_schedule_reaches_the_params_target():
    result = prune_iteratively(
        _mnv2(), L2Channel(target=0.6, target_kind="params"), Schedule("geometric", 3),
        example_inputs=X1, fine_tune=_fake_fine_tune,
    )
    reductions = [s.params_reduction for s in result.steps]
    assert reductions == sorted(reductions)
    for s in result.steps:
        assert abs(s.achieved - s.asked) < 0.01, (s.asked, s.achieved)
    assert abs(result.params_reduction - 0.6) < 0.01
    _forward_ok(result.model)


def test_taylor_needs_gradients_and_says_so():
    model = _mnv2()
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    with pytest.raises(EdgepruneError, match="needs training batches"):
        prune(model, TaylorChannel(target=0.3, target_kind="channels"), X1)
    frozen = _mnv2()
    for p in frozen.features.parameters():
        p.requires_grad_(False)
    with pytest.raises(EdgepruneError, match="no usable gradient"):
        prune(frozen, TaylorChannel(target=0.3, target_kind="channels"), X1, batches=batches)
    result = prune(model, TaylorChannel(target=0.3, target_kind="channels", num_batches=2), X1,
                   batches=batches)
    assert result.params < result.dense_params
    assert all(p.grad is None for p in model.parameters())
    _forward_ok(model)


def test_random_channel_removes_other_channels_than_l2_and_is_seeded():
    dense = _mnv2().features[0][0].weight.detach().clone()  # the stem: its inputs are the image
    norms = dense.flatten(1).norm(dim=1)
    assert len(set(norms.tolist())) == 32 and norms.min() > 0  # filters L2 can tell apart

    def stem_kept(config):
        model = _mnv2()
        result = prune(model, config, X1)
        _forward_ok(model)
        return result, kept_filters(dense, model.features[0][0].weight)

    # round_to fixed: "auto" would keep multiples of 16 on an AVX-512 host
    l2_result, l2 = stem_kept(L2Channel(target=0.3, target_kind="channels", round_to=8))
    r1_result, r1 = stem_kept(RandomChannel(target=0.3, target_kind="channels", seed=1, round_to=8))
    _, r1_again = stem_kept(RandomChannel(target=0.3, target_kind="channels", seed=1, round_to=8))
    _, r2 = stem_kept(RandomChannel(target=0.3, target_kind="channels", seed=2, round_to=8))
    assert len(l2) == len(r1) == 24  # 32 * 0.7, rounded to a multiple of 8
    assert r1_result.params == l2_result.params  # same counts...
    assert set(r1) != set(l2)  # ...different channels
    assert r1 == r1_again  # the same seed makes the same choice
    assert set(r2) != set(r1)  # and another seed another one


def test_structured_scope():
    with pytest.raises(EdgepruneError, match="no prunable channels in scope 'head'"):
        prune(_mnv2(), L2Channel(ratio=0.3, scope="head"), X1)
    model = _mnv2()
    prune(model, L2Channel(ratio=0.3, scope="blocks"), X1)
    assert model.features[0][0].out_channels == 32  # stem untouched
    assert model.features[18][0].out_channels == 1280  # last conv untouched
    assert model.features[3].conv[0][0].out_channels < 144
    _forward_ok(model)


# ----------------------------------------------------------------------------- guard, BN
def test_max_drop_stops_and_returns_the_last_good_model():
    model = _mnv2()

    def evaluate(m):  # accuracy falls with the params removed: 0.9 dense, -1 point per 2% removed
        removed = 1 - sum(p.numel() for p in m.parameters()) / 2_236_682
        return 0.9 - removed / 2

    result = prune_iteratively(
        model, L2Channel(ratio=0.6), Schedule("linear", 4), example_inputs=X1,
        evaluate=evaluate, max_drop=20.0,
    )
    # channel ratios 15/30/45%: about 28/51/70% of the params, drops 14/25/35 points: stop at 2
    assert [s.accepted for s in result.steps] == [True, False]
    assert "step 2/4" in result.stopped_reason and "max-drop" in result.stopped_reason
    assert "model after step 1" in result.stopped_reason
    assert result.baseline_accuracy == pytest.approx(0.9)
    assert result.params == result.steps[0].params  # the model after step 1, not step 2
    assert sum(p.numel() for p in result.model.parameters()) == result.steps[0].params
    assert result.achieved == pytest.approx(result.steps[0].achieved)
    _forward_ok(result.model)
    with pytest.raises(EdgepruneError, match="evaluate"):
        prune_iteratively(_mnv2(), L1Unstructured(sparsity=0.5), "oneshot", example_inputs=X1,
                          max_drop=3.0)


def test_max_drop_on_the_first_step_returns_the_unpruned_model():
    model = _mnv2()
    result = prune_iteratively(
        model, L1Unstructured(sparsity=0.9), Schedule("geometric", 2), example_inputs=X1,
        evaluate=lambda m: 0.5 - _counted(m)[0] / _counted(m)[1], max_drop=3.0,
        baseline_accuracy=0.5,
    )
    assert "unpruned model" in result.stopped_reason
    assert _counted(result.model)[0] == 0
    assert result.achieved == 0.0


def test_batchnorm_recalibration_re_estimates_statistics():
    model = _mnv2()
    bn = model.features[0][1]
    assert torch.all(bn.running_var == 1)
    batches = [(torch.randn(8, 3, 32, 32) * 3, None) for _ in range(3)]
    assert recalibrate_batchnorm(model, batches) == 3
    assert not model.training
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    before = bn.running_var.clone()
    assert recalibrate_batchnorm(model, []) == 0  # nothing seen: statistics kept
    assert torch.equal(before, bn.running_var)


def test_recalibrate_callback_runs_after_each_step():
    seen = []
    prune_iteratively(
        _mnv2(), L1Unstructured(sparsity=0.5), Schedule("agp", 2), example_inputs=X1,
        recalibrate=lambda m: seen.append(_counted(m)[0]),
    )
    assert len(seen) == 2 and seen[0] < seen[1]


def test_result_record_is_json_ready():
    result = prune(_mnv2(), L2Channel(target=0.4, target_kind="channels"), X1)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["method"] == "l2-channel" and record["achieved_kind"] == "channels"
    assert len(record["layers"]) == len(prunable_layers(result.model))
    assert record["channels"] and all(r["channels_after"] <= r["channels_before"] for r in record["channels"])
    assert math.isclose(record["params_reduction"], result.params_reduction)
