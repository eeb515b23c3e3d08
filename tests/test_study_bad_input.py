"""A study's bad inputs: a NaN in its config, a damaged study.db, two runs on one --out."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgeprune.errors import EdgepruneError

from conftest import PROJECT_ROOT

QUICK = (PROJECT_ROOT / "configs" / "digits-quick.toml").read_text()
UNNAMED = 'method = "l1"\ntarget = {target}\nfinetune_epochs = 1'


def run_cli(args, capsys) -> tuple[int, str]:
    from edgeprune.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code or 0, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("target", ["nan", "inf", "-inf", '"half"'])
def test_a_non_finite_target_in_an_unnamed_experiment_names_key_and_line(target):
    from edgeprune.study import parse_config

    text = QUICK.replace('name = "l1-oneshot-50"\nmethod = "l1"\ntarget = 0.5\nfinetune_epochs = 1',
                         UNNAMED.format(target=target))
    assert text != QUICK
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if t == f"target = {target}")
    with pytest.raises(EdgepruneError) as error:
        parse_config(text, path="bad.toml")
    assert f"bad.toml, line {line}: experiments[0].target:" in str(error.value)


def test_a_nan_target_in_a_grid_names_the_grid():
    from edgeprune.study import parse_config

    text = QUICK.replace("[recommend]", '[grid]\nmethod = ["l1"]\ntarget = [0.5, nan]\n\n[recommend]')
    with pytest.raises(EdgepruneError, match=r"grid.target"):
        parse_config(text, path="bad.toml")
