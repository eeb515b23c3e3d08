"""Study configs: every shipped config validates; a bad one is rejected before anything runs,
naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.errors import EdgepruneError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
QUICK = (PROJECT_ROOT / "configs" / "digits-quick.toml").read_text()


@pytest.mark.parametrize("name", ["digits-quick", "cifar10-32-seed-study", "cifar10-64-grid",
                                  "tiles-taylor-kfold", "frontier"])
def test_shipped_configs_validate(name, shared_datasets, monkeypatch):
    from edgeprune.study import load_config, plan_study

    monkeypatch.setenv("EDGEPRUNE_SHARED", str(shared_datasets.parent))
    config = load_config(PROJECT_ROOT / "configs" / f"{name}.toml")
    planned = plan_study(config, fingerprint="0" * 64)  # keys need no data: they are hashes
    assert len(planned) == config.folds * len(config.baseline.archs) * (1 + len(config.experiments))
    assert len({e.key for e in planned}) == len(planned)
    # Each experiment's resolved dict parses into its typed settings, back to the config's objects.
    for exp in planned:
        settings = exp.settings
        assert (settings.kind, settings.fold, settings.measure) == (exp.kind, exp.fold, config.measure)
        assert settings.data.spec == config.data.spec and settings.fingerprint == "0" * 64
        if exp.kind == "baseline":
            assert settings.baseline.arch in config.baseline.archs and settings.prune is None
            assert settings.baseline.recipe.epochs == config.baseline.recipe["epochs"]
        else:
            spec = next(s for s in config.experiments if exp.name in (s.name, f"{s.name}-{settings.arch}"))
            assert settings.prune.method == spec.method and settings.prune.steps == spec.steps
            assert settings.data.image_size == (spec.image_size or config.data.image_size)
            assert settings.finetune.epochs == spec.finetune_epochs and settings.baseline is None


def test_the_grid_expands_and_folds_repeat():
    from edgeprune.study import load_config

    config = load_config(PROJECT_ROOT / "configs" / "cifar10-64-grid.toml")
    assert len(config.experiments) == 2 * 2 * 3  # {l1, l2-channel} x {oneshot, geometric} x 3 targets
    tiles = load_config(PROJECT_ROOT / "configs" / "tiles-taylor-kfold.toml")
    assert tiles.folds == 5 and tiles.baseline.archs == ("resnet18", "vgg16", "mobilenet_v2")
    assert all(e.max_drop == 3.0 for e in tiles.experiments)


def test_keys_change_with_the_config_and_the_data():
    from edgeprune.study import parse_config, plan_study

    a = plan_study(parse_config(QUICK), "a" * 64)
    assert [e.key for e in a] == [e.key for e in plan_study(parse_config(QUICK), "a" * 64)]
    assert not {e.key for e in a} & {e.key for e in plan_study(parse_config(QUICK), "b" * 64)}
    other_lr = plan_study(parse_config(QUICK.replace("lr = 0.01", "lr = 0.02")), "a" * 64)
    assert other_lr[0].key == a[0].key  # the baseline does not fine-tune
    assert not {e.key for e in other_lr[1:]} & {e.key for e in a[1:]}
    # a renamed experiment is the same computation
    renamed = plan_study(parse_config(QUICK.replace('"l1-oneshot-50"', '"half"')), "a" * 64)
    assert renamed[1].key == a[1].key


BAD = [
    # (change to digits-quick, key named, text of the line it must name)
    (("[measure]", "[measure]\nspeed = 3"), "measure.speed", "speed = 3"),
    (('method = "l1"', 'method = "l3"'), "experiments[0].method", 'method = "l3"'),
    (('schedule = "geometric"', 'schedule = "cubic"'), "experiments[1].schedule", 'schedule = "cubic"'),
    (("target = 0.5\nfinetune", "target = 1.5\nfinetune"), "experiments[0].target", "target = 1.5"),
    (('spec = "digits"', 'spec = "/nonexistent/tiles"'), "data.spec", "/nonexistent/tiles"),
    (("lr = 0.01", "lr = -1"), "finetune.lr", "lr = -1"),
    (('prefer = "fastest"', 'prefer = "cheapest"'), "recommend.prefer", "cheapest"),
    (('arch = "mobilenet_v2"', 'arch = "mobilenet_v9"'), "baseline.arch", "mobilenet_v9"),
    (("[recommend]", '[grid]\nmethod = ["l1"]\ntarget = [0.5, 0]\n\n[recommend]'), "grid.target",
     "target = [0.5, 0]"),
    (("name = \"digits-quick\"", "name = \"digits-quick\"\nfoldz = 2"), "foldz", "foldz = 2"),
]


@pytest.mark.parametrize("change,key,marker", BAD, ids=[b[1] for b in BAD])
def test_bad_config_names_key_and_line(change, key, marker):
    from edgeprune.study import parse_config

    text = QUICK.replace(*change)
    assert text != QUICK
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if marker in t)
    with pytest.raises(EdgepruneError) as error:
        parse_config(text, path="bad.toml")
    assert f"bad.toml, line {line}: {key}:" in str(error.value)


def test_cli_rejects_a_bad_config_before_anything_runs(tmp_path, capsys):
    from edgeprune.cli import main

    config = tmp_path / "bad.toml"
    config.write_text(QUICK.replace('method = "l1"', 'method = "l3"'))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        main(["study", "run", str(config), "--out", str(out)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "experiments[0].method" in err and "Traceback" not in err
    assert not out.exists()


def test_dry_run_lists_and_estimates(tmp_path, capsys):
    from edgeprune.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        main(["study", "run", str(PROJECT_ROOT / "configs" / "digits-quick.toml"), "--out", str(out), "--dry-run"])
    assert done.value.code in (0, None)
    text = capsys.readouterr().out
    assert "l2-channel-geometric-50" in text and "to run" in text and "estimated" in text
    assert not out.exists()
