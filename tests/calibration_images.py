"""Small structured 8-bit photos for the quantization tests' calibration folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_structured_images(folder: Path, count: int, height: int, width: int,
                            seed: int) -> None:
    """``img_0.png`` ...: sine/cosine patterns at random frequencies, gain and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / float(height)
    for i in range(count):
        base = np.stack([np.sin(xx * rng.uniform(1, 9) + i), np.cos(yy * rng.uniform(1, 9)),
                         xx * yy], -1) * 0.5 + 0.5
        noisy = np.clip(base * rng.uniform(0.5, 2.0) + rng.normal(0, 0.03, base.shape), 0, 1)
        Image.fromarray((noisy * 255).astype(np.uint8)).save(folder / f"img_{i}.png")
