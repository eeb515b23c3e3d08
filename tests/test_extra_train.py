"""DataOptions.extra_train: a class-folder tree added to the training split only (the fleet's
labelled parts in a retrain). Its images never reach val or test, the base images keep their
splits, the fingerprint and the split record change, and a study keys its experiments as before
when it has none."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_data import make_tree, write_image

from edgeprune.data import DataOptions, load_data
from edgeprune.data.dedup import pixel_hashes
from edgeprune.errors import EdgepruneError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(cache))
    return cache


def fleet_tree(root: Path, counts: dict[str, int], first_seed: int = 10_000) -> Path:
    """Images named by their sha256, as the fleet writes them (seeds far from make_tree's)."""
    seed = first_seed
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            seed += 1
            tmp = root / cls / "tmp.png"
            write_image(tmp, seed=seed)
            tmp.rename(root / cls / f"{hashlib.sha256(tmp.read_bytes()).hexdigest()}.png")
    return root


def test_extra_images_go_to_train_only(tmp_path):
    base = make_tree(tmp_path / "base", {"good": 20, "crack": 20})
    extra = fleet_tree(tmp_path / "fleet-data", {"crack": 7, "good": 3})
    plain = load_data(DataOptions(spec=str(base), image_size=16, seed=1))
    more = load_data(DataOptions(spec=str(base), image_size=16, seed=1, extra_train=str(extra)))
    extra_files = {str(p) for p in extra.rglob("*.png")}
    assert len(extra_files) == 10
    assert set(more.train.paths) - set(plain.train.paths) == extra_files
    assert not extra_files & set(more.val.paths) and not extra_files & set(more.test.paths)
    # The base images land in the very same splits as without the extra tree.
    assert more.val.paths == plain.val.paths and more.test.paths == plain.test.paths
    assert more.train.paths[: len(plain.train)] == plain.train.paths
    # Labels by the base data's class names, whatever classes the extra tree holds.
    names = more.class_names
    for path, label in zip(more.train.paths[len(plain.train):], more.train.labels[len(plain.train):].tolist()):
        assert Path(path).parent.name == names[label]
    # Pixels too: no extra image is in val or test.
    extra_pixels = set(pixel_hashes(more.train.images[len(plain.train):]))
    assert not extra_pixels & (set(pixel_hashes(more.test.images)) | set(pixel_hashes(more.val.images)))
    # The fingerprint and the split record say the training data differs.
    assert more.split.fingerprint != plain.split.fingerprint and more.split.extra_train == 10
    assert "extra_train" not in plain.split.to_dict() and more.split.to_dict()["extra_train"] == 10
    # Another labelled part: another fingerprint.
    fleet_tree(extra, {"good": 1}, first_seed=20_000)
    again = load_data(DataOptions(spec=str(base), image_size=16, seed=1, extra_train=str(extra)))
    assert again.split.fingerprint not in (more.split.fingerprint, plain.split.fingerprint)
    assert len(again.train) == len(more.train) + 1


def test_extra_train_with_digits_and_an_empty_tree(tmp_path):
    digits = load_data("digits", image_size=8)
    tree = tmp_path / "fleet-data"
    (tree / "3").mkdir(parents=True)
    empty = load_data(DataOptions(spec="digits", image_size=8, extra_train=str(tree)))
    assert empty.split.fingerprint == digits.split.fingerprint and len(empty.train) == len(digits.train)
    assert any("holds no images" in n for n in empty.notes)
    write_image(tree / "3" / "a.png", seed=5, size=(8, 8))
    one = load_data(DataOptions(spec="digits", image_size=8, extra_train=str(tree)))
    assert len(one.train) == len(digits.train) + 1 and one.train.labels[-1].item() == 3
    assert len(one.test) == len(digits.test) and one.split.fingerprint != digits.split.fingerprint


def test_bad_extra_trees(tmp_path):
    base = make_tree(tmp_path / "base", {"good": 6, "crack": 6})
    with pytest.raises(EdgepruneError, match="no such folder"):
        load_data(DataOptions(spec=str(base), image_size=16, extra_train=str(tmp_path / "missing")))
    unknown = fleet_tree(tmp_path / "fleet", {"scratch": 2})
    with pytest.raises(EdgepruneError, match="class folder.*the data lacks: scratch"):
        load_data(DataOptions(spec=str(base), image_size=16, extra_train=str(unknown)))
    with pytest.raises(EdgepruneError, match="extra_train must name"):
        DataOptions(extra_train="")


def test_study_keys_unchanged_without_extra_and_changed_with_it(tmp_path):
    from edgeprune.study.config import parse_config
    from edgeprune.study.plan import plan_study

    base = make_tree(tmp_path / "base", {"good": 6, "crack": 6})
    extra = fleet_tree(tmp_path / "fleet-data", {"crack": 2})
    text = (f'name = "k"\n[data]\nspec = "{base}"\n[baseline]\narch = "mobilenet_v2"\nepochs = 1\n'
            '[[experiments]]\nmethod = "l1"\ntarget = 0.5\n')
    plain = parse_config(text)
    with_extra = parse_config(text.replace("[baseline]", f'extra_train = "{extra}"\n[baseline]'))
    assert with_extra.data.extra_train == str(extra)
    keys = [e.key for e in plan_study(plain, "f" * 64)]
    # The key of a study without extra_train is what it was before the option existed.
    import dataclasses

    values = dataclasses.asdict(plain.data)
    assert values.pop("extra_train") is None
    del values["folds"], values["fold"]
    assert plan_study(plain, "f" * 64)[0].config["data"] == {**values, "fingerprint": "f" * 64}
    assert keys != [e.key for e in plan_study(with_extra, "f" * 64)]
    with pytest.raises(EdgepruneError, match="extra_train folder not found"):
        parse_config(text.replace("[baseline]", 'extra_train = "nowhere"\n[baseline]'))
