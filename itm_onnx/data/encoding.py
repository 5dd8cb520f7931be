"""Target encodings: how linear radiance maps to the network's [0, 1] output and back.

``mulaw-clip`` (the default) encodes radiance relative to the input photo's clip level,
which is what an integrator can map to display light; ``minmax`` and ``mulaw`` (the
paper's and the first models', relative to each image's own extremes) encode radiance
up to an unknown per-image scale; ``display`` is for
targets that are themselves display images (image enhancement, e.g. DPED's DSLR
photos): the [0, 1] output *is* the image, and decoding leaves it as it is.

The network's sigmoid output must be stored as 10-bit codes, so what a value in
[0, 1] *means* is part of the model's contract with integrators: each
:class:`Encoding` carries a one-sentence ``description`` to put in the model's
metadata, and an exact ``decode``.

The formulas are written once and work on numpy arrays (HxWx3 or NxHxWx3) and on
torch tensors (3xHxW or Bx3xHxW) alike: the per-image statistics reduce over the last
three axes, which is the whole image in every one of these layouts.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MU = 5000.0
_EPS = 1e-12
_IMAGE_AXES = (-3, -2, -1)

Array = Any  # numpy.ndarray or torch.Tensor: encodings are written for both


@dataclass(frozen=True)
class Encoding:
    """A named map between the target (HDR radiance, or a display image) and the [0, 1] output."""

    name: str
    description: str
    encode: Callable[[Array], Array]
    decode: Callable[[Array], Array]


def _is_torch(x: Array) -> bool:
    """True for torch tensors; checked without importing torch for numpy-only callers."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _image_max(x: Array) -> Array:
    """Per-image maximum, shaped to broadcast back over the image."""
    if _is_torch(x):
        return x.amax(dim=_IMAGE_AXES, keepdim=True)
    return x.max(axis=_IMAGE_AXES, keepdims=True)


def _image_min(x: Array) -> Array:
    """Per-image minimum, shaped to broadcast back over the image."""
    if _is_torch(x):
        return x.amin(dim=_IMAGE_AXES, keepdim=True)
    return x.min(axis=_IMAGE_AXES, keepdims=True)


def _as_float(x: Array) -> Array:
    """Float32 for numpy input (torch tensors keep their dtype, device and graph)."""
    return x if _is_torch(x) else np.asarray(x, dtype=np.float32)


def _clip01(x: Array) -> Array:
    """Clamp to [0, 1] in the input's own library."""
    return x.clamp(0.0, 1.0) if _is_torch(x) else np.clip(x, 0.0, 1.0)


def minmax_encode(hdr: Array) -> Array:
    """(hdr - min) / (max - min) per image; a constant image maps to all zeros."""
    hdr = _as_float(hdr)
    low = _image_min(hdr)
    span = _image_max(hdr) - low
    return (hdr - low) / (span + _EPS)


def minmax_decode(y: Array) -> Array:
    """Identity: the scale and offset removed by the encoding are not recoverable."""
    return _as_float(y)


def mulaw_encode(hdr: Array, mu: float = MU) -> Array:
    """log(1 + mu x) / log(1 + mu) with x = hdr / max(hdr) per image."""
    hdr = _as_float(hdr)
    x = hdr / (_image_max(hdr) + _EPS)
    compressed = (mu * x).log1p() if _is_torch(x) else np.log1p(mu * x)
    return _clip01(compressed / math.log1p(mu))


def mulaw_decode(y: Array, mu: float = MU) -> Array:
    """((1 + mu)**y - 1) / mu: radiance relative to the image maximum (1.0 = brightest)."""
    y = _clip01(_as_float(y))
    scaled = y * math.log1p(mu)
    return (scaled.expm1() if _is_torch(scaled) else np.expm1(scaled)) / mu


# mulaw-clip: radiance x relative to the clip level (1.0 = where the 8-bit input clips),
# y = log(1 + MU_CLIP x) / log(1 + MU_CLIP PEAK_CLIP). 10-bit steps are
# log(1 + 512 * 32) / 1023 * (1 + 1 / (512 x)) relative: below 1 % from x = 1/28 (4.8 stops
# under the clip level) up to PEAK_CLIP, 1.1 % at 1/100 and 2.8 % at 1/1000, where the 8-bit
# input's own steps are 7x coarser still.
MU_CLIP = 512.0
PEAK_CLIP = 32.0  # 5 stops above the clip level; brighter radiance is stored as 32
_LOG_SPAN_CLIP = math.log1p(MU_CLIP * PEAK_CLIP)


def mulaw_clip_encode(hdr: Array) -> Array:
    """log(1 + 512 x) / log(1 + 512 * 32), x = radiance relative to the clip level."""
    x = _as_float(hdr)
    x = x.clamp(0.0, PEAK_CLIP) if _is_torch(x) else np.clip(x, 0.0, PEAK_CLIP)
    compressed = (MU_CLIP * x).log1p() if _is_torch(x) else np.log1p(MU_CLIP * x)
    return compressed / _LOG_SPAN_CLIP


def mulaw_clip_decode(y: Array) -> Array:
    """(exp(y log(1 + 512 * 32)) - 1) / 512: radiance relative to the clip level."""
    y = _clip01(_as_float(y))
    scaled = y * _LOG_SPAN_CLIP
    return (scaled.expm1() if _is_torch(scaled) else np.expm1(scaled)) / MU_CLIP


def display_encode(image: Array) -> Array:
    """Identity on a display image in [0, 1]; values outside are clipped (a screen's range)."""
    return _clip01(_as_float(image))


def display_decode(y: Array) -> Array:
    """Identity: the output is the display image itself, not radiance."""
    return _as_float(y)


ENCODINGS: dict[str, Encoding] = {
    "mulaw-clip": Encoding(
        name="mulaw-clip",
        description=(
            "mu-law of linear radiance relative to the input's clip level (1.0 = the level "
            "at which the 8-bit input saturates): y = log(1 + 512 x) / log(1 + 16384); "
            "decode x = (16385**y - 1) / 512, so 0..1 decodes to 0..32 x the clip level. "
            "Map x = 1 to SDR reference white to show it."
        ),
        encode=mulaw_clip_encode,
        decode=mulaw_clip_decode,
    ),
    "minmax": Encoding(
        name="minmax",
        description=(
            "Per-image min-max normalised linear HDR (the paper's target): output is linear "
            "in radiance, 0 = the image's darkest and 1 = its brightest value; decode = "
            "identity, true radiance is a*y + b with a, b unknown."
        ),
        encode=minmax_encode,
        decode=minmax_decode,
    ),
    "mulaw": Encoding(
        name="mulaw",
        description=(
            "mu-law (mu=5000) of radiance relative to the image maximum: y = log(1 + 5000 x) "
            "/ log(1 + 5000); decode x = (5001**y - 1) / 5000, radiance relative to the "
            "brightest pixel (1.0)."
        ),
        encode=mulaw_encode,
        decode=mulaw_decode,
    ),
    "display": Encoding(
        name="display",
        description=(
            "Display-referred image (image enhancement, not HDR): output is the enhanced "
            "picture itself, non-linear sRGB-like values in [0, 1] (x 255 = 8-bit codes); "
            "decode = identity, it carries no radiance."
        ),
        encode=display_encode,
        decode=display_decode,
    ),
}


def get_encoding(name: str) -> Encoding:
    """Look an encoding up by name, with a message listing the valid names."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise KeyError(
            f"unknown output encoding {name!r}; choose one of {sorted(ENCODINGS)}"
        ) from None
