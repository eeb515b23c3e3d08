"""Accuracy under shifted images: what a compressed model risks when the factory line changes.

A camera next to a conveyor does not keep seeing the test set: a lamp ages or the sun comes in
(brightness, darkness), the lens drifts out of focus (blur), the sensor gets noisier in the dark
(noise), a hazy cover flattens the image (contrast), the stream is re-encoded to save bandwidth
(JPEG). Pruning can cost more accuracy on such images than on clean ones, so a study compares the
models under them too.

Each shift is applied to the uint8 test images (N, 3, H, W) exactly as `edgeprune.data` holds
them, at the model's input size, BEFORE normalisation; the shifted images then go through
`evaluate()`, the same normalisation and batching as the clean figure. Severity 0 is the clean
image for every shift; severities 1-3 (mild, clear, strong) use the parameters in `SHIFTS`:

    brightness      pixel values x 1.3, 1.6, 2.0, clipped at 255 (over-exposure, sunlight)
    darkness        pixel values x 0.6, 0.4, 0.25 (a dim or aged lamp)
    contrast        blend with the image's mean grey, factor 0.6, 0.4, 0.25 (haze, a dirty cover)
    gaussian_noise  additive Gaussian noise, sigma 0.05, 0.10, 0.20 of full scale (255), per pixel
                    and channel, clipped (sensor noise; seeded, so the same images every run)
    gaussian_blur   Gaussian blur, sigma 1/64, 1/32, 1/16 of the image side (0.5, 1, 2 px at 32 px;
                    kernel 2*ceil(3 sigma)+1, reflected edges) (defocus)
    jpeg            JPEG re-encoding at quality 40, 20, 10 (a compressed camera stream)

The operations are torchvision's (`transforms.v2.functional`: adjust_brightness, adjust_contrast,
gaussian_noise, gaussian_blur) and Pillow's JPEG encoder (torchvision's is deprecated). Blur and
JPEG act on the already resized images, so their strength is relative to the model's input, not
the camera's resolution.

    result = evaluate_shifted(model, data)          # a Model and a DataBundle: its test split
    result.accuracy("gaussian_noise", 3), result.mean_accuracy_by_shift(), result.mean_relative_drop
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError

SEVERITIES = (1, 2, 3)  # the default: mild, clear, strong (0 = the clean image)
SHIFT_CHUNK = 256  # images shifted at once: bounds the float copies, and fixes the noise per chunk
ApplyFn = Callable[[torch.Tensor, float, int], torch.Tensor]  # (uint8 images, parameter, seed) -> uint8


@dataclass(frozen=True)
class ImageShift:
    """One kind of shift: its parameter at severities 1, 2, 3 and the operation on uint8 images."""

    name: str
    what: str  # the cause on a factory line
    parameter: str  # what the numbers in `levels` are
    levels: tuple[float, ...]  # the parameter at severity 1, 2, 3, ...
    apply_fn: ApplyFn = field(repr=False, compare=False)
    labels: tuple[str, ...] | None = None  # how to print `levels` where the number reads badly

    def describe_levels(self) -> str:
        """E.g. "JPEG quality: 40, 20, 10" (severity 1, 2, 3)."""
        return f"{self.parameter}: " + ", ".join(self.labels or (f"{v:.3g}" for v in self.levels))

    def parameter_at(self, severity: int) -> float | None:
        """The parameter applied at `severity` (None at 0: the clean image)."""
        check_severity(severity, self)
        return None if severity == 0 else self.levels[severity - 1]

    def apply(self, images: torch.Tensor, severity: int, *, seed: int = 0) -> torch.Tensor:
        """The shifted copy of uint8 images (N, 3, H, W); the same images, seed and severity give
        the same result on every run and machine (noise drawn from a seeded generator per chunk
        of SHIFT_CHUNK images, independent of any batch size)."""
        _check_images(images)
        value = self.parameter_at(severity)
        if value is None:
            return images.clone()
        chunks = []
        for index, start in enumerate(range(0, images.shape[0], SHIFT_CHUNK)):
            chunk_seed = int(np.random.SeedSequence(
                [seed, zlib.crc32(self.name.encode()), severity, index]).generate_state(1)[0])
            chunks.append(self.apply_fn(images[start:start + SHIFT_CHUNK], value, chunk_seed))
        if not chunks:
            return images.clone()
        out = torch.cat(chunks)
        if out.dtype != torch.uint8 or out.shape != images.shape:
            raise EdgepruneError(f"internal: shift {self.name} returned {out.dtype} {tuple(out.shape)}")
        return out


def _brightness(images: torch.Tensor, factor: float, _seed: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return F.adjust_brightness(images, factor)


def _contrast(images: torch.Tensor, factor: float, _seed: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return F.adjust_contrast(images, factor)


def _noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    # torchvision draws from the global generator: fork it (the caller's random state is left as
    # it was) and seed it, so the noise is the same on every run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return F.gaussian_noise(images, mean=0.0, sigma=sigma, clip=True)


def _blur(images: torch.Tensor, sigma_fraction: float, _seed: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    sigma = sigma_fraction * images.shape[-1]
    kernel = 2 * math.ceil(3 * sigma) + 1
    # reflect padding (torchvision's) needs the kernel's half-width below the image side
    kernel = min(kernel, 2 * ((images.shape[-1] - 1) // 2) + 1)
    return F.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def _jpeg(images: torch.Tensor, quality: float, _seed: int) -> torch.Tensor:
    # Pillow, not torchvision's F.jpeg: torchvision deprecated its JPEG encoder in 0.29 (it warns
    # once per image and will be removed). Pillow's libjpeg with 4:2:0 subsampling is what a
    # camera stream usually is.
    import io

    from PIL import Image

    out = []
    for image in images.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(buffer).convert("L" if image.shape[-1] == 1 else "RGB"))
        out.append(decoded.reshape(image.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


SHIFTS: dict[str, ImageShift] = {}


def register_shift(shift: ImageShift) -> ImageShift:
    """Add a shift to the registry (its name becomes valid wherever shifts are named)."""
    if not shift.levels:
        raise EdgepruneError(f"shift {shift.name!r} has no severity levels")
    SHIFTS[shift.name] = shift
    return shift


for _shift in (
    ImageShift("brightness", "over-exposure, sunlight", "pixel factor", (1.3, 1.6, 2.0), _brightness),
    ImageShift("darkness", "a dim or aged lamp", "pixel factor", (0.6, 0.4, 0.25), _brightness),
    ImageShift("contrast", "haze, a dirty cover", "contrast factor", (0.6, 0.4, 0.25), _contrast),
    ImageShift("gaussian_noise", "sensor noise", "sigma / 255", (0.05, 0.10, 0.20), _noise),
    ImageShift("gaussian_blur", "defocus", "sigma / image side", (1 / 64, 1 / 32, 1 / 16), _blur,
               labels=("1/64", "1/32", "1/16")),
    ImageShift("jpeg", "a compressed camera stream", "JPEG quality", (40, 20, 10), _jpeg),
):
    register_shift(_shift)


def get_shift(name: str) -> ImageShift:
    shift = SHIFTS.get(name)
    if shift is None:
        raise EdgepruneError(f"unknown shift {name!r}: one of {', '.join(SHIFTS)}")
    return shift


def parse_shifts(names: str | Iterable[str] | None) -> list[ImageShift]:
    """Shift objects from names (a comma-separated string or a list); None or "all": every shift."""
    if names is None:
        return list(SHIFTS.values())
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if names == ["all"]:
        return list(SHIFTS.values())
    if not names:
        raise EdgepruneError("no shift named: give one or more of " + ", ".join(SHIFTS))
    return [get_shift(n) for n in dict.fromkeys(names)]


def check_severity(severity: int, shift: ImageShift | None = None) -> int:
    top = len(shift.levels) if shift is not None else len(SEVERITIES)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= top:
        raise EdgepruneError(f"severity must be an integer from 0 (clean) to {top}, got {severity!r}")
    return severity


def parse_severities(values: str | Iterable[int] | None) -> tuple[int, ...]:
    """Severities from "1,2,3" or a list; None: SEVERITIES."""
    if values is None:
        return SEVERITIES
    if isinstance(values, str):
        try:
            values = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise EdgepruneError(f"severities must be integers like 1,2,3, got {values!r}") from None
    out = tuple(sorted(set(check_severity(v) for v in values)))
    if not out:
        raise EdgepruneError("no severity given: use 0 (clean) to 3")
    return out


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] not in (1, 3):
        what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise EdgepruneError(
            f"shifts apply to uint8 images (N, 3, H, W) before normalisation, got {what}: pass the "
            "DataBundle, its Split, or the uint8 images with their labels")


@dataclass
class ShiftAccuracy:
    shift: str
    severity: int
    parameter: float | None  # the value applied (None at severity 0)
    accuracy: float
    balanced_accuracy: float


@dataclass
class RobustnessResult:
    """Accuracy on the clean test images and under each shift and severity."""

    clean_accuracy: float
    clean_balanced_accuracy: float
    n: int  # test images
    seed: int
    severities: tuple[int, ...]
    rows: list[ShiftAccuracy]

    @property
    def shifts(self) -> list[str]:
        return list(dict.fromkeys(r.shift for r in self.rows))

    def accuracy(self, shift: str, severity: int) -> float:
        for r in self.rows:
            if r.shift == shift and r.severity == severity:
                return r.accuracy
        raise EdgepruneError(f"{shift} at severity {severity} was not evaluated")

    def mean_accuracy_by_shift(self) -> dict[str, float]:
        """Mean accuracy of each shift over its evaluated severities above 0 (the clean accuracy
        when only severity 0 was evaluated)."""
        out = {}
        for name in self.shifts:
            shifted = [r.accuracy for r in self.rows if r.shift == name and r.severity > 0]
            out[name] = sum(shifted) / len(shifted) if shifted else self.clean_accuracy
        return out

    @property
    def mean_relative_drop(self) -> float | None:
        """Mean over every (shift, severity > 0) of (clean - shifted) / clean accuracy: 0.25 means
        a quarter of the clean accuracy lost on average (negative: better than clean). None when
        the clean accuracy is 0 or no severity above 0 was evaluated."""
        shifted = [r.accuracy for r in self.rows if r.severity > 0]
        if not shifted or self.clean_accuracy == 0:
            return None
        return sum((self.clean_accuracy - a) / self.clean_accuracy for a in shifted) / len(shifted)

    def to_dict(self) -> dict:
        return {**asdict(self), "severities": list(self.severities),
                "mean_accuracy_by_shift": self.mean_accuracy_by_shift(),
                "mean_relative_drop": self.mean_relative_drop}


def _as_split(data):
    from edgeprune.data import DataBundle, Split

    if isinstance(data, DataBundle):
        return data.test
    if isinstance(data, Split):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        _check_images(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images.shape[0],):
            raise EdgepruneError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        return Split(images, labels, None)
    raise EdgepruneError(f"evaluate_shifted needs a DataBundle, a Split or (uint8 images, labels), "
                         f"got {type(data).__name__}")


def evaluate_shifted(
    model,
    data,
    *,
    shifts: str | Iterable[str] | None = None,
    severities: str | Iterable[int] | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    clean=None,
) -> RobustnessResult:
    """Accuracy and balanced accuracy of `model` on the clean test images and under each shift at
    each severity. `model`: an `edgeprune.Model` (its normalisation and classes are used) or an
    nn.Module with `mean`, `std` and `class_names` given. `data`: a DataBundle (its test split),
    a Split, or (uint8 images (N, 3, H, W), labels). `shifts`: names (default all of SHIFTS);
    `severities`: 0-3 (default 1, 2, 3); `seed` fixes the noise. `clean`: the EvalResult of this model on these
    images when the caller already has it (a study evaluates every model anyway), not computed again."""
    from edgeprune.metrics.evaluate import evaluate
    from edgeprune.models import Model

    if isinstance(model, Model):
        mean = mean if mean is not None else model.mean
        std = std if std is not None else model.std
        class_names = class_names if class_names is not None else model.class_names
        module: nn.Module = model.module
    else:
        module = model
        if mean is None or std is None or class_names is None:
            raise EdgepruneError("an nn.Module needs mean, std and class_names (an edgeprune Model "
                                 "carries them)")
    chosen = parse_shifts(shifts)
    levels = parse_severities(severities)
    split = _as_split(data)
    _check_images(split.images)
    say = log or (lambda _m: None)

    def score(images: torch.Tensor):
        from edgeprune.data import Split

        return evaluate(module, Split(images, split.labels, split.paths), mean=mean, std=std,
                        class_names=class_names, device=device, batch_size=batch_size)

    clean = clean if clean is not None else score(split.images)
    rows = []
    for shift in chosen:
        for severity in levels:
            check_severity(severity, shift)
            result = score(shift.apply(split.images, severity, seed=seed))
            rows.append(ShiftAccuracy(shift.name, severity, shift.parameter_at(severity),
                                      result.accuracy, result.balanced_accuracy))
        say(f"{shift.name}: " + ", ".join(f"severity {r.severity} {r.accuracy:.2%}"
                                           for r in rows if r.shift == shift.name))
    return RobustnessResult(clean.accuracy, clean.balanced_accuracy, clean.n, seed, levels, rows)
