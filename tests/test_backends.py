"""Inference backends (ONNX Runtime, OpenVINO), the one timing policy, `auto` and its cache, the
CPU's instruction-set label and `round_to="auto"`."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models import load_checkpoint
from edgeprune.runtime import backends
from edgeprune.runtime.bench import COLUMNS, BenchRow
from edgeprune.runtime.classifier import Classifier
from edgeprune.runtime.measure import TimingPolicy, cpu_isa, preferred_channel_multiple, time_round_robin
from edgeprune.runtime.preprocess import normalize

from helpers import NO_TORCH, run_blocked  # noqa: E402


def test_openvino_is_installed_for_these_tests():
    # `make install` installs the openvino extra; without it the backend tests prove nothing.
    assert backends.available_backends() == ["onnxruntime", "openvino"], (
        "install the OpenVINO extra: pip install -e '.[openvino]'"
    )


@pytest.mark.parametrize("runtime", backends.BACKENDS)
def test_backends_agree_with_pytorch_on_real_images(trained_digits_onnx, digits32, runtime):
    ckpt, onnx_path = trained_digits_onnx
    model, meta = load_checkpoint(ckpt)
    images, labels = digits32.test.images.numpy(), digits32.test.labels.numpy()
    with torch.inference_mode():
        expected = model(torch.from_numpy(normalize(images, meta.mean, meta.std))).numpy()
    assert expected.std() > 0.5, "near-zero logits: agreeing with them proves nothing"
    clf = Classifier(onnx_path, runtime=runtime, threads=1)
    assert clf.runtime == runtime and clf.backend.version
    logits = clf.predict_uint8(images, batch_size=64)  # batches of 64 and the remainder
    agreement = float((logits.argmax(1) == expected.argmax(1)).mean())
    assert agreement >= 0.999, f"{runtime}: top-1 agrees with PyTorch on {agreement:.2%} of {len(labels)}"
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-4)
    one = clf.predict(normalize(images[:1], meta.mean, meta.std))  # batch 1: another compiled shape
    np.testing.assert_allclose(one[0], expected[0], atol=1e-3, rtol=1e-4)


def test_openvino_classifier_without_torch(trained_digits_onnx, digits32):
    _, onnx_path = trained_digits_onnx
    image = digits32.test.images.numpy()[0]
    npy = Path(onnx_path).with_name("one.npy")
    np.save(npy, image)
    done = run_blocked(
        "import json\nimport numpy as np\n"
        "from edgeprune.runtime import Classifier\n"
        "clf = Classifier(sys.argv[1], runtime='openvino', threads=1)\n"
        "pred = clf.classify_images([np.load(sys.argv[2])])[0]\n"
        "assert sys.modules.get('torch') is None\n"
        "print(json.dumps({'runtime': clf.runtime, 'label': pred.label, 'software': clf.backend.software}))\n",
        str(onnx_path), str(npy),
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["runtime"] == "openvino" and out["software"].startswith("openvino20")
    expected = Classifier(onnx_path).classify_images([image])[0]
    assert out["label"] == expected.label


def test_auto_measures_once_then_reads_the_cache(trained_digits_onnx, tmp_path, monkeypatch):
    _, onnx_path = trained_digits_onnx
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    first = Classifier(onnx_path, runtime="auto", threads=1)
    assert first.runtime in backends.BACKENDS
    choice = first.runtime_choice
    assert choice.source == "measured" and set(choice.median_ms) == set(backends.BACKENDS)
    assert choice.runtime == min(choice.median_ms, key=choice.median_ms.get)
    cache_file = Path(choice.cache_file)
    record = json.loads(cache_file.read_text())
    assert record["runtime"] == first.runtime
    assert record["key"]["threads"] == 1 and len(record["key"]["sha256"]) == 64
    assert record["key"]["device"] and record["key"]["backends"]["openvino"]

    def no_measuring(*_args, **_kwargs):
        raise AssertionError("the second start measured again")

    monkeypatch.setattr(backends, "time_round_robin", no_measuring)
    second = Classifier(onnx_path, runtime="auto", threads=1)
    assert second.runtime == first.runtime and second.runtime_choice.source == "cached"
    # Another thread count is another measurement (a different key, a different file).
    assert backends._cache_file(backends.choice_key(onnx_path, 2, backends.BACKENDS)) != cache_file


def test_unknown_runtime_is_a_clear_error(trained_digits_onnx):
    _, onnx_path = trained_digits_onnx
    with pytest.raises(EdgepruneError, match="unknown runtime 'tensorrt': choose one of auto, onnxruntime, openvino"):
        Classifier(onnx_path, runtime="tensorrt")
    with pytest.raises(EdgepruneError, match="unknown runtime 'tvm'"):
        backends.parse_runtimes("onnxruntime,tvm")


def test_bench_unknown_runtime_is_a_clear_error(trained_digits_onnx, capsys):
    import edgeprune.cli.commands_export  # noqa: F401 - registers bench
    from edgeprune.cli import main

    _, onnx_path = trained_digits_onnx
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(onnx_path), "--runtime", "onnxruntime,tensorrt", "--no-memory"])
    assert exc.value.code == 2
    assert "error: unknown runtime 'tensorrt'" in " ".join(capsys.readouterr().err.split())


def test_openvino_missing_is_a_clear_error(trained_digits_onnx):
    """With openvino (and torch) unimportable: only ONNX Runtime is listed, and asking for
    OpenVINO, from the Classifier or `edgeprune bench`, says how to install it."""
    _, onnx_path = trained_digits_onnx
    done = run_blocked(
        "from edgeprune.errors import EdgepruneError\n"
        "from edgeprune.runtime import Classifier, available_backends\n"
        "assert available_backends() == ['onnxruntime'], available_backends()\n"
        "assert Classifier(sys.argv[1], runtime='auto').runtime == 'onnxruntime'\n"
        "try:\n"
        "    Classifier(sys.argv[1], runtime='openvino')\n"
        "except EdgepruneError as error:\n"
        "    print('classifier:', error)\n"
        "from edgeprune.cli import main\n"
        "main(['bench', sys.argv[1], '--runtime', 'onnxruntime,openvino', '--no-memory'])\n",
        str(onnx_path), block=(*NO_TORCH, "openvino"), check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "classifier: runtime 'openvino' is not installed: pip install edgeprune[openvino]" in done.stdout
    assert ("error: runtime 'openvino' is not installed: pip install edgeprune[openvino]"
            in " ".join(done.stderr.split()))


def test_round_robin_interleaves_and_pins(monkeypatch):
    calls: list[str] = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    timings = time_round_robin(candidates, TimingPolicy(warmup=1, runs_per_round=2, min_rounds=3, max_rounds=3),
                               cpus=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, once each
    rounds = ["".join(calls[3:][i:i + 6:2]) for i in range(0, 18, 6)]
    assert rounds == ["abc", "bca", "cab"]  # each round starts one place later
    assert all(t.runs == 6 and 0 <= t.median_ms <= t.p90_ms for t in timings.values())
    if allowed is not None:
        assert timings["a"].cpus == (min(allowed),)
        assert os.sched_getaffinity(0) == allowed  # restored


CPUINFO_AVX512 = """processor	: 0
model name	: Some Xeon
flags		: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8
"""
CPUINFO_AVX2 = """processor	: 0
model name	: Some Core
flags		: fpu sse2 avx avx2 fma avx_vnni
"""
CPUINFO_ARM = """processor	: 0
Features	: fp asimd evtstrm aes crc32 asimddp
"""


@pytest.fixture
def fake_cpuinfo(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / f"cpuinfo-{abs(hash(text))}"
        path.write_text(text)
        return path

    return write


def test_isa_label_and_channel_multiple_from_cpuinfo(fake_cpuinfo, tmp_path):
    avx512, avx2, arm = fake_cpuinfo(CPUINFO_AVX512), fake_cpuinfo(CPUINFO_AVX2), fake_cpuinfo(CPUINFO_ARM)
    assert cpu_isa(avx512) == "avx2+avx512f+avx512_vnni+amx_tile+amx_int8"
    assert cpu_isa(avx2) == "avx2+avx_vnni"
    assert cpu_isa(arm) == "asimd+asimddp"
    assert cpu_isa(tmp_path / "missing") is None
    assert preferred_channel_multiple(avx512) == 16
    assert preferred_channel_multiple(avx2) == 8
    assert preferred_channel_multiple(arm) == 8


def test_round_to_auto_follows_the_cpu(fake_cpuinfo, monkeypatch):
    from edgeprune.pruning import L2Channel, make_config
    from edgeprune.runtime import measure

    monkeypatch.setattr(measure, "CPUINFO", str(fake_cpuinfo(CPUINFO_AVX512)))
    config = L2Channel(target=0.5)
    assert config.round_to == 16 and config.to_dict()["round_to"] == 16  # resolved in the record
    assert make_config("l2-channel", 0.5, round_to="auto").round_to == 16
    assert make_config("l2-channel", 0.5, round_to="4").round_to == 4  # the CLI's string
    assert L2Channel(target=0.5, round_to=8).round_to == 8
    monkeypatch.setattr(measure, "CPUINFO", str(fake_cpuinfo(CPUINFO_AVX2)))
    assert L2Channel(target=0.5).round_to == 8
    assert L2Channel(target=0.5).with_amount(0.3).round_to == 8
    for bad in ("fast", 0, 2.5, True):
        with pytest.raises(EdgepruneError, match="round_to"):
            L2Channel(target=0.5, round_to=bad)


def test_bench_columns_have_isa_and_match_the_row_type():
    assert "isa" in COLUMNS and COLUMNS.index("isa") == COLUMNS.index("device") + 1
    assert [f.name for f in fields(BenchRow)] == COLUMNS


@pytest.mark.slow  # edgeprune measure on both backends (~40 s on 2 cores)
def test_measure_times_both_backends_side_by_side(trained_digits_checkpoint, capsys):
    """`edgeprune measure --runtime onnxruntime,openvino`: the runtime layer's backends, timed in
    the same round-robin as PyTorch; an unknown backend is refused before any work."""
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["measure", str(trained_digits_checkpoint), "--runtime", "onnxruntime,openvino",
              "--runs", "3", "--warmup", "1", "--json"])
    assert exc.value.code in (0, None)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for runtime in ("torch", "onnxruntime", "openvino"):
        for batch in ("batch1", "batch64"):
            assert result["latency_ms"][runtime][batch]["median"] > 0, (runtime, batch)
    with pytest.raises(SystemExit) as exc:
        main(["measure", str(trained_digits_checkpoint), "--runtime", "openvino,tensorrt"])
    assert exc.value.code == 2
    assert "error: unknown runtime 'tensorrt'" in " ".join(capsys.readouterr().err.split())


def test_timing_policy_budget_and_presets_on_a_synthetic_clock():
    """The budget is per candidate and ends the rounds once spent (never before min_rounds):
    checked on a clock that advances 1 ms per reading, so no real timing is involved."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.runtime.measure import TIMING_PRESETS, timing_preset

    now = [0.0]

    def clock() -> float:
        now[0] += 0.001
        return now[0]

    candidates = {name: (lambda: None) for name in "ab"}
    # 2 readings per call, 5 calls per round and candidate: 20 ms a round for two candidates.
    policy = TimingPolicy(warmup=0, runs_per_round=5, min_rounds=2, max_rounds=100, budget_s=0.1)
    timings = time_round_robin(candidates, policy, clock=clock)
    rounds = timings["a"].runs // 5
    assert 10 <= rounds <= 11  # 0.1 s x 2 candidates = 0.2 s at ~20 ms a round
    assert timings["a"].median_ms == timings["a"].p90_ms == pytest.approx(1.0)
    # Keywords written before TimingPolicy still work; their budget_s is the total.
    legacy = time_round_robin(candidates, warmup=0, runs_per_round=5, min_rounds=2, max_rounds=100,
                              budget_s=0.2, clock=clock)
    assert legacy["b"].runs == timings["b"].runs
    few = time_round_robin(candidates, policy.with_budget(0.0), clock=clock)
    assert few["a"].runs == 10  # min_rounds still run
    fixed = time_round_robin(candidates, TimingPolicy.fixed(7, warmup=0), clock=clock)
    assert fixed["b"].runs == 7
    assert set(TIMING_PRESETS) >= {"auto-choice", "bench-b1", "bench-b64", "layer-table", "whole-network"}
    assert time_round_robin(candidates, "auto-choice", clock=clock)["a"].runs == 20
    for bad in (dict(min_rounds=0), dict(max_rounds=1, min_rounds=2), dict(runs_per_round=0),
                dict(warmup=-1), dict(budget_s=float("nan"))):
        with pytest.raises(EdgepruneError):
            TimingPolicy(**bad)
    with pytest.raises(EdgepruneError, match="unknown timing preset"):
        timing_preset("fastest")
