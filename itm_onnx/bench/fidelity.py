"""Held-out inputs for the fidelity columns: synthetic LDR photos the models never saw.

Calibration images are not held out (the quantizer fitted its ranges to them), so these
come from the ``"test"`` split of :mod:`itm_onnx.data.synthetic` (a residue class no
training, validation or calibration scene can fall in), rendered directly at the
benchmark size and tone-mapped to 8 bit by the same random operators as the training
inputs, with sensor noise.
"""

from __future__ import annotations

import numpy as np

from ..data import SPLITS, random_tmo, render_scene, scene_seed, to_8bit


def heldout_images(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` NCHW float32 images in [0, 1] (8-bit values / 255), reproducible from seed."""
    images = []
    for index in range(count):
        hdr = render_scene(scene_seed(seed, "test", index), height, width)
        rng = np.random.default_rng([seed, SPLITS.index("test"), index])
        ldr, _ = random_tmo(hdr, rng)
        codes = to_8bit(ldr, rng, noise=True)
        images.append(np.ascontiguousarray(codes.transpose(2, 0, 1)[None], np.float32) / 255.0)
    return images
