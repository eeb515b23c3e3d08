"""Input-pipeline benchmark: training throughput of edgeprune's decoded-once tensor pipeline
(load_data + BatchLoader) against torchvision's ImageFolder + DataLoader + PIL transforms.

Both pipelines train the same MobileNetV2 (10 classes, same initial weights) for one epoch of
CIFAR-10 JPEG at 32x32 with SGD, in the same process and thread setting; images/s counts
training images per second of epoch wall time. edgeprune's decode is timed separately: first run
(empty cache: PIL decode + writing the disk cache) and second run (read from the disk cache).

    python benchmarks/input_pipeline.py [--data PATH] [--limit-per-class N] [--threads 2]

Writes benchmarks/results/input_pipeline_<device_label>_<software_label>.csv.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from edgeprune.data import CIFAR_MEAN, CIFAR_STD, BatchLoader, load_data
from edgeprune.data.splits import first_n_per_class
from edgeprune.hardware import device_label, seed_everything, set_threads, software_label

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    shared = os.environ.get("EDGEPRUNE_SHARED")
    return (Path(shared) if shared else PROJECT_ROOT.parent / "shared") / "datasets" / "cifar10-jpeg"


def train_epoch(model: torch.nn.Module, batches, lr: float, name: str) -> tuple[int, float]:
    """One epoch of SGD steps; returns (images, seconds), the loader's own start-up included."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    images = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches, 1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        images += len(y)
        if step % 50 == 0:
            elapsed = time.perf_counter() - start
            print(f"  {name}: {step}/{len(batches)} batches, {images / elapsed:.1f} images/s", flush=True)
    return images, time.perf_counter() - start


def iterate_only(batches) -> float:
    """Images per second the pipeline delivers with no model attached."""
    start = time.perf_counter()
    images = sum(len(y) for _, y in batches)
    return images / (time.perf_counter() - start)


def torchvision_loader(train_dir: Path, limit: int | None, batch_size: int, workers: int, seed: int) -> DataLoader:
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(str(train_dir), transform=transform)
    if limit is not None:
        dataset = Subset(dataset, first_n_per_class(torch.tensor(dataset.targets).numpy(), limit).tolist())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="CIFAR-10 JPEG ImageFolder tree")
    parser.add_argument("--limit-per-class", type=int, default=None, help="first N training images per class")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both pipelines)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (torchvision)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    seed_everything(args.seed)
    initial_model = torchvision.models.mobilenet_v2(num_classes=10)
    label = device_label("cpu")
    limit = args.limit_per_class
    print(f"device {label}, {software_label()}, {threads} threads, data {args.data}, limit/class {limit}")

    # edgeprune: decode into an empty cache (first run), then again from the disk cache.
    cache = tempfile.mkdtemp(prefix="edgeprune-bench-cache-")
    os.environ["EDGEPRUNE_CACHE"] = cache
    try:
        common = dict(image_size=32, val_fraction=0.0, max_per_class=limit, log=print)
        start = time.perf_counter()
        load_data(str(args.data), **common)
        decode_first = time.perf_counter() - start
        start = time.perf_counter()
        bundle = load_data(str(args.data), **common)
        decode_cached = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"edgeprune decode: first run {decode_first:.1f} s, from disk cache {decode_cached:.1f} s")

    def edgeprune_batches():
        return BatchLoader(bundle.train, args.batch_size, mean=bundle.mean, std=bundle.std, train=True, seed=args.seed)

    def torchvision_batches():
        return torchvision_loader(args.data / "train", limit, args.batch_size, args.workers, args.seed)

    rows = []
    for pipeline, make_batches in (("torchvision", torchvision_batches), ("edgeprune", edgeprune_batches)):
        model = copy.deepcopy(initial_model)
        # The machine may be shared: the load average before and after says how much.
        load_before = os.getloadavg()[0]
        images, seconds = train_epoch(model, make_batches(), args.lr, pipeline)
        load_after = os.getloadavg()[0]
        data_only = iterate_only(make_batches())
        print(f"{pipeline}: {images} images in {seconds:.1f} s = {images / seconds:.1f} images/s "
              f"(pipeline alone {data_only:.0f} images/s; "
              f"load average {load_before:.1f} -> {load_after:.1f})")
        rows.append(
            {
                "pipeline": pipeline,
                "device": label,
                "software": software_label(),
                "threads": threads,
                "workers": args.workers if pipeline == "torchvision" else 0,
                "batch_size": args.batch_size,
                "limit_per_class": limit or "",
                "images": images,
                "epoch_s": round(seconds, 2),
                "images_per_s": round(images / seconds, 1),
                "pipeline_only_images_per_s": round(data_only, 1),
                "decode_first_s": round(decode_first, 2) if pipeline == "edgeprune" else "",
                "decode_cached_s": round(decode_cached, 2) if pipeline == "edgeprune" else "",
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(load_after, 2),
            }
        )
    baseline = rows[0]["images_per_s"]
    for row in rows:
        row["speedup_vs_torchvision"] = round(row["images_per_s"] / baseline, 2)
    print(f"edgeprune / torchvision training throughput: {rows[1]['speedup_vs_torchvision']:.2f}x")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"input_pipeline_{label}_{software_label()}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
