"""The Python API's names and rules (the README's Python quickstart runs in tests/test_readme.py)."""

from __future__ import annotations

import pytest


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
