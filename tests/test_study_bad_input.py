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


def damaged_study(tmp_path, how: str):
    from edgeprune.study.store import StudyStore

    run_dir = tmp_path / "run"
    with StudyStore(run_dir, create=True) as store:
        store.set_value("name", "digits-quick")
        for i in range(200):  # a few pages, so truncation cuts into the tables
            store.set_value(f"k{i}", "x" * 200)
    db = run_dir / "study.db"
    if how == "truncated":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    else:
        db.write_bytes(b"this is not a database at all" * 100)
    return run_dir


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_study_db_is_named_by_results_and_resume(tmp_path, capsys, how):
    run_dir = damaged_study(tmp_path, how)
    for args in (["study", "results", run_dir],
                 ["study", "run", PROJECT_ROOT / "configs" / "digits-quick.toml", "--out", run_dir, "--resume"]):
        code, err = run_cli(args, capsys)
        assert code == 2, err
        assert "error:" in err and "Traceback" not in err, err
        assert "study.db is damaged" in err and str(run_dir) in err and "new --out" in err, err


def test_a_second_study_run_on_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    config = PROJECT_ROOT / "configs" / "digits-quick.toml"
    env = dict(os.environ, EDGEPRUNE_CACHE=str(tmp_path / "cache"))
    first = subprocess.Popen([sys.executable, "-m", "edgeprune", "study", "run", str(config), "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / "study.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid)
        before = sorted(p.name for p in out.iterdir())
        for extra in ([], ["--resume"]):
            code, err = run_cli(["study", "run", config, "--out", out, *extra], capsys)
            assert code == 2, err
            assert f"another `study run` (pid {first.pid}) is running in {out}" in err, err
            assert "Traceback" not in err
        assert first.poll() is None, "the first run must not be disturbed"
        after = sorted(p.name for p in out.iterdir())
        assert set(before) <= set(after), (before, after)  # nothing of the first run removed
    finally:
        first.terminate()
        first.wait(30)


def test_the_lock_dies_with_its_holder(tmp_path):
    from edgeprune.study.store import RunLock

    out = tmp_path / "run"
    code = ("import sys, os; from edgeprune.study.store import RunLock; "
            "RunLock(sys.argv[1]).acquire(); os._exit(0)")  # ends without releasing
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=60)
    assert (out / "study.lock").is_file()
    with RunLock(out):
        with pytest.raises(EdgepruneError, match=f"pid {os.getpid()}"):
            RunLock(out).acquire()
