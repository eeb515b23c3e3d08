"""--overwrite replaces a folder only when its content says edgeprune wrote the checkpoint there."""

from __future__ import annotations

import json

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.outputs import check_output_folder


def foreign_checkpoint(folder, manifest: str) -> None:
    folder.mkdir()
    (folder / "model.json").write_text(manifest)
    (folder / "model.safetensors").write_bytes(b"someone else's weights")


@pytest.mark.parametrize("manifest", [
    json.dumps({"architectures": ["BertModel"], "hidden_size": 768}),  # another tool's model.json
    "not json at all",
    json.dumps(["a", "list"]),
    json.dumps({"format": "another-format"}),
])
def test_overwrite_refuses_a_folder_whose_manifest_is_not_edgeprunes(tmp_path, manifest):
    out = tmp_path / "ckpt"
    foreign_checkpoint(out, manifest)
    with pytest.raises(EdgepruneError, match="is not an edgeprune checkpoint"):
        check_output_folder(out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == b"someone else's weights"


def test_overwrite_accepts_a_folder_with_edgeprunes_marker(tmp_path):
    out = tmp_path / "ckpt"
    foreign_checkpoint(out, json.dumps({"format": "edgeprune-checkpoint", "format_version": 1}))
    assert check_output_folder(out, overwrite=True) == out


def test_train_overwrite_keeps_a_foreign_model_folder(tmp_path, capsys, monkeypatch):
    from edgeprune.cli import main

    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "hf"
    foreign_checkpoint(out, json.dumps({"model_type": "vit"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", "--epochs", "1", "--max-per-class", "3", "--image-size", "8",
              "--out", str(out), "--overwrite"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2, err
    assert "error:" in err and "not an edgeprune checkpoint" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"someone else's weights"
