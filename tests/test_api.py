"""The README's Python API block runs as written, on real (bundled) data, and gives a useful model."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_api_block_runs(tmp_path, monkeypatch):
    block = _api_block()
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
        [image.permute(1, 2, 0).numpy() for image in data.test.images[:4]])
    assert len(predictions) == 4 and all(p.label in data.class_names for p in predictions)


def test_lazy_top_level_names_resolve_without_importing_everything():
    import edgeprune

    assert edgeprune.Model.__name__ == "Model"
    assert callable(edgeprune.prune_model) and callable(edgeprune.train_model)
    with pytest.raises(AttributeError):
        edgeprune.no_such_name  # noqa: B018


def test_api_refuses_another_split_of_the_same_data():
    import edgeprune as ep
    from edgeprune.errors import EdgepruneError

    data = ep.load_data("digits", image_size=16, max_per_class=30)
    model = ep.train_model(data, ep.TrainRecipe(epochs=1, batch_size=32), progress=False)
    other = ep.load_data("digits", image_size=16, max_per_class=30, seed=5)
    with pytest.raises(EdgepruneError, match="another split of this same data"):
        ep.evaluate(model, other)
    flagged = ep.evaluate(model, other, allow_other_split=True)
    assert flagged.n == len(other.test)
