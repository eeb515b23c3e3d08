"""Real station processes for the loop's tests: `edgeprune station run` with its dashboard on a
free loopback port, a station.toml with a token and a gate set, and small HTTP helpers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from station_support import free_port

TOKEN = "loop-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StationProcess:
    """One `edgeprune station run --http` process; `start()` waits for its dashboard."""

    def __init__(self, root: Path, model: Path, replay: Path, *, ok_classes: str, gate_set: Path,
                 rate: float = 20.0, station_id: str = "s1", plc_port: int | None = None,
                 min_accuracy: float = 0.0, extra: tuple[str, ...] = (), settings: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = root / "station.db"
        self.config = root / "station.toml"
        self.config.write_text(
            f'model = "{model}"\nsource = "replay:{replay}"\ndb = "{self.db}"\nok_classes = [{", ".join(repr(c) for c in ok_classes.split(","))}]\n'
            f'http = "127.0.0.1:{self.port}"\nrate = {rate}\nstation_id = "{station_id}"\ndrain_timeout = 5.0\n'
            + (f'plc = "modbus://127.0.0.1:{plc_port}"\nretry_min_s = 0.02\nretry_max_s = 0.2\n' if plc_port else "")
            + settings  # more top-level keys (`key = value` lines), before the [dashboard] table
            + f'\n[dashboard]\ntoken = "{TOKEN}"\ngate_set = "{gate_set}"\nmin_accuracy = {min_accuracy}\n'
              'gate_max_per_class = 20\n')
        self.extra = extra
        self.log = root / "station.log"
        self.process: subprocess.Popen | None = None

    def set_model(self, model: Path) -> None:
        text = self.config.read_text().splitlines()
        self.config.write_text("\n".join(f'model = "{model}"' if line.startswith("model = ") else line
                                         for line in text) + "\n")

    def start(self, timeout: float = 120, tries: int = 4) -> "StationProcess":
        # The dashboard process starts at nice +10: on a machine loaded far past its cores it can
        # miss the station's 60 s start-up limit (`error: ... did not start`); that is the host,
        # not the code under test, so such a start is tried again, once.
        for attempt in range(tries):
            try:
                return self._start(timeout)
            except AssertionError as exc:
                if "did not start" not in str(exc) or attempt == tries - 1:
                    raise

    def _start(self, timeout: float) -> "StationProcess":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeprune", "station", "run", "--config", str(self.config), *self.extra],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the station exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/api/status", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the dashboard never answered: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def status(self) -> dict:
        return httpx.get(f"{self.url}/api/status", timeout=10).json()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text()


def write_fleet_toml(path: Path, *, db: str | Path, acceptance: Path, ok_classes: str,
                     stations: list[StationProcess], tables: str) -> Path:
    """fleet.toml for StationProcess stations (ids s1, s2, ... in order, each with TOKEN), the
    labelled tree beside it, and `tables` ([rollout], [retrain] as TOML text) after them."""
    path.write_text(
        f'db = "{db}"\ndata = "{path.parent / "fleet-data"}"\nacceptance = "{acceptance}"\n'
        f'ok_classes = [{", ".join(repr(c) for c in ok_classes.split(","))}]\n'
        + "".join(f'\n[[stations]]\nid = "s{i}"\nurl = "{s.url}"\ntoken = "{TOKEN}"\n'
                  for i, s in enumerate(stations, 1))
        + "\n" + tables)
    return path


def upload(url: str, model: Path) -> httpx.Response:
    with open(model, "rb") as f:
        return httpx.post(f"{url}/api/models", headers=AUTH, files={"file": (model.name, f)}, timeout=120)


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


# ----------------------------------------------------------------------------- tiny trained models
# scikit-learn's digits at their own 8x8 size as PNG class folders, and linear classifiers trained
# on them with scikit-learn (a second each) written as ONNX graphs with edgeprune's metadata: real
# trained models, small enough for several stations on a loaded 2-core machine. Digits 0-4 are the
# good parts, 5-9 the defects.
DIGIT_CLASSES = [str(d) for d in range(10)]
DIGIT_OK = "0,1,2,3,4"


def digits_sets(root: Path, replay_copies: int = 3) -> dict[str, object]:
    """{"train": (images, labels), "acceptance": DIR, "replay": DIR}: disjoint parts of digits; the
    replay holds `replay_copies` noisy copies of its part (a longer stream of distinct files)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    n = len(labels)
    train, accept, replay = slice(0, n // 2), slice(n // 2, int(n * 0.7)), slice(int(n * 0.7), n)

    def write(folder: Path, imgs, labs, copies: int = 1, noise: int = 0) -> Path:
        rng = np.random.default_rng(1)
        for name in DIGIT_CLASSES:
            (folder / name).mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            for i, (img, lab) in enumerate(zip(imgs, labs)):
                pixels = img.astype(np.int16)
                if noise:
                    pixels = pixels + rng.integers(-noise, noise + 1, img.shape)
                rgb = np.repeat(np.clip(pixels, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
                Image.fromarray(rgb).save(folder / str(lab) / f"{c}-{i:04d}.png")
        return folder

    rgb_train = np.repeat(images[train][:, None], 3, axis=1)  # (N, 3, 8, 8)
    return {"train": (rgb_train, labels[train]),
            "acceptance": write(root / "acceptance", images[accept], labels[accept]),
            "replay": write(root / "replay", images[replay], labels[replay], replay_copies, noise=6)}


def train_linear(train, out: Path, *, shuffle_labels: bool = False, fraction: float = 1.0, seed: int = 0,
                 c: float = 1.0) -> Path:
    """A logistic regression on the images' normalised pixels, as an ONNX graph the station runs."""
    import warnings

    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from sklearn.linear_model import LogisticRegression

    from edgeprune.runtime import metadata as md
    from edgeprune.runtime.preprocess import normalize

    images, labels = train
    keep = np.random.default_rng(seed).permutation(len(labels))[: int(len(labels) * fraction)]
    # The three channels are equal (grey digits): fit on one, spread the weights over three.
    x = normalize(images[keep], [0.5] * 3, [0.25] * 3)[:, 0].reshape(len(keep), -1)
    y = labels[keep].copy()
    if shuffle_labels:
        np.random.default_rng(seed + 1).shuffle(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labels shuffled on purpose need not converge
        clf = LogisticRegression(max_iter=60 if shuffle_labels else 200, C=c).fit(x, y)
    weight = np.tile(clf.coef_ / 3.0, (1, 3)).astype(np.float32)
    bias = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor("weight", TensorProto.FLOAT, weight.shape, weight.flatten()),
         helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.helper.set_model_props(model, md.encode({
        md.PRODUCER: "edgeprune", md.FORMAT: "onnx", md.CLASS_NAMES: DIGIT_CLASSES, md.INPUT_SIZE: 8,
        md.MEAN: [0.5] * 3, md.STD: [0.25] * 3, md.LAYOUT: "NCHW"}))
    onnx.save(model, str(out))
    return out


def slow_copy(model: Path, out: Path, *, width: int = 1024, layers: int = 120) -> Path:
    """The same classifier with `layers` matrix-vector products of its input added to its logits
    times zero: the same decisions, many times the latency (a candidate that agrees in shadow but
    breaches the canary's latency tolerance). ONNX Runtime does not fold x * 0 away: it cannot know
    the product is finite."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load(str(model))
    graph = graph_model.graph
    rng = np.random.default_rng(0)
    graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / width, "slow_w"),
        numpy_helper.from_array(np.zeros(1, np.float32), "slow_zero"),
    ])
    # The flattened input (1 x 192) padded to `width`, then the products, reduced and zeroed.
    nodes = [helper.make_node("Pad", ["flat", "slow_pads"], ["slow_0"])]
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, width - 192], np.int64), "slow_pads"))
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"slow_{layers}"], ["slow_sum"], keepdims=1),
              helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", ["logits_raw", "slow_nothing"], ["logits"])]
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == "logits":
                node.output[k] = "logits_raw"
    graph.node.extend(nodes)
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(out))
    return out
