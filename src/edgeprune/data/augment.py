"""Photometric training augmentations for uint8 batches, as named presets.

A camera beside a conveyor does not keep seeing the training images: a lamp ages, the gain
drifts, the lens slips out of focus, the stream is re-encoded. `edgeprune.metrics.robustness`
measures a model under those shifts; the `line` preset trains against the same ones, each image
with its own random strength, so a model (and the pruned model fine-tuned with the same preset)
keeps its accuracy when the line changes:

    brightness   x U(0.4, 1.6)                         with probability 0.5 (lamp, exposure)
    contrast     blend with the mean grey, U(0.4, 1)   with probability 0.3 (haze, dirty cover)
    noise        Gaussian, sigma U(0, 0.1) x 255       with probability 0.3 (sensor gain)
    blur         Gaussian, sigma U(0.2, 2)/64 x side   with probability 0.25 (defocus)
    jpeg         quality U(20, 90)                     with probability 0.2 (compressed stream)

The strengths reach the robustness benchmark's severity 2 (brightness 1.6, darkness 0.4,
contrast 0.4, noise 0.10, blur 1/32 of the side, JPEG 20), so severity 3 stays unseen in
training. The operations are torchvision's `transforms.v2.functional` (adjust_brightness,
adjust_contrast, gaussian_noise, gaussian_blur) and Pillow's JPEG encoder, as in the robustness
shifts; only the random draws are ours, from the loader's seeded generator, so a training run is
reproducible. Brightness, contrast and noise run on the whole batch at once with per-image
factors (one broadcast multiply-add, which is what those functionals compute); blur and JPEG,
whose kernels differ per image, run per selected image.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class LinePreset:
    brightness: tuple[float, float, float] = (0.5, 0.4, 1.6)  # (probability, low, high)
    contrast: tuple[float, float, float] = (0.3, 0.4, 1.0)
    noise: tuple[float, float, float] = (0.3, 0.0, 0.1)  # sigma as a fraction of 255
    blur: tuple[float, float, float] = (0.25, 0.2 / 64, 2 / 64)  # sigma as a fraction of the side
    jpeg: tuple[float, float, float] = (0.2, 20, 90)  # quality


AUGMENTS = {"none": None, "line": LinePreset()}


def check_augment(name: str) -> str:
    if name not in AUGMENTS:
        raise EdgepruneError(f"unknown augment preset {name!r}: choose one of {', '.join(AUGMENTS)}")
    return name


def _draw(generator: torch.Generator, batch: int, spec: tuple[float, float, float]):
    """(which images, their strengths) for one operation."""
    probability, low, high = spec
    chosen = torch.rand(batch, generator=generator) < probability
    strength = low + (high - low) * torch.rand(batch, generator=generator)
    return chosen, strength


def augment_batch(images: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
    """The augmented copy of a uint8 batch (B, C, H, W) under a named preset ("none": unchanged)."""
    spec = AUGMENTS[check_augment(preset)]
    if spec is None or images.shape[0] == 0:
        return images
    from torchvision.transforms.v2 import functional as F

    batch = images.shape[0]
    device = images.device
    bright, bright_f = _draw(generator, batch, spec.brightness)
    contrast, contrast_f = _draw(generator, batch, spec.contrast)
    noisy, noise_s = _draw(generator, batch, spec.noise)
    blurred, blur_s = _draw(generator, batch, spec.blur)
    jpeg, quality = _draw(generator, batch, spec.jpeg)
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    out = images.float()
    # adjust_brightness(x, f) = clamp(x * f); adjust_contrast(x, f) = clamp(f * x + (1 - f) * grey
    # mean): with one factor per image they are one broadcast each (factor 1 = unchanged).
    factor = torch.where(bright, bright_f, torch.ones(batch)).to(device).view(-1, 1, 1, 1)
    out = (out * factor).clamp_(0, 255)
    c = torch.where(contrast, contrast_f, torch.ones(batch)).to(device).view(-1, 1, 1, 1)
    grey = F.rgb_to_grayscale(out) if out.shape[1] == 3 else out
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    out = (c * out + (1 - c) * mean).clamp_(0, 255)
    if bool(noisy.any()):
        sigma = torch.where(noisy, noise_s, torch.zeros(batch)).to(device).view(-1, 1, 1, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(noise_seed)
            unit = F.gaussian_noise(torch.zeros_like(out), mean=0.0, sigma=1.0, clip=False)
        out = (out + unit * sigma * 255).clamp_(0, 255)
    out = out.round_().to(torch.uint8)

    side = images.shape[-1]
    for i in torch.nonzero(blurred).flatten().tolist():
        sigma = float(blur_s[i]) * side
        kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * ((side - 1) // 2) + 1)
        out[i] = F.gaussian_blur(out[i], kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    if bool(jpeg.any()):
        from PIL import Image

        for i in torch.nonzero(jpeg).flatten().tolist():
            image = out[i].permute(1, 2, 0).cpu().numpy()
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality[i]))
            decoded = np.asarray(Image.open(buffer).convert("RGB"))
            out[i] = torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(device)
    return out
