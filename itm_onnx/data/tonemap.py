"""Tone-mapping operators that turn linear HDR into LDR training inputs.

MQNet's authors made each LDR input on the fly from its HDR target with a randomly
chosen operator (percentile exposure, Reinhard, Mantiuk, Drago), so the network sees
many ways a camera or editor could have clipped and compressed a scene. These are
numpy versions of those operator families, each with its parameters drawn from the
caller's ``np.random.Generator`` (so a seeded generator gives a reproducible input):

* ``percentile``: exposure set by a low/high percentile, then gamma (the authors'
  operator; the main source of clipped highlights and crushed shadows).
* ``reinhard``: Reinhard et al. 2002 global operator with random key and white point.
* ``drago``: Drago et al. 2003 adaptive logarithmic mapping with random bias.
* ``local``: a Mantiuk-style *local* contrast operator. It is not Mantiuk '06 (which
  solves an optimisation over a contrast pyramid); it is the base/detail split of
  Durand & Dorsey 2002 on log luminance, with a Gaussian base in place of the
  bilateral one: the base layer is compressed to a random target contrast, detail is
  kept or boosted, and colour saturation is reduced, which reproduces what such
  operators do to an image (local adaptation, mild halos, desaturation).

All operators take HxWx3 float radiance (>= 0) and return float32 in [0, 1],
display-referred (gamma-encoded). :func:`to_8bit` then quantises, optionally with
camera-like noise and a JPEG round trip.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

_EPS = 1e-6
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 / sRGB primaries

ToneMapper = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of linear RGB, HxW."""
    return (rgb @ _LUMA).astype(np.float32)


def percentile_exposure(hdr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map the [low, high] percentiles of all values to [0, 1], clip, apply 1/gamma.

    low in [0, 15], high in [85, 100], gamma in [1.8, 2.2], as in the released training.
    """
    low_q, high_q = rng.uniform(0.0, 15.0), rng.uniform(85.0, 100.0)
    gamma = rng.uniform(1.8, 2.2)
    low, high = np.percentile(hdr, [low_q, high_q])
    exposed = np.clip((hdr - low) / max(high - low, _EPS), 0.0, 1.0)
    return (exposed ** (1.0 / gamma)).astype(np.float32)


def reinhard(hdr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reinhard 2002 global operator: key a in [0.09, 0.36], white point in [0.5, 2] x max.

    A white point below the scaled maximum clips the brightest parts, as photos do.
    """
    key = np.exp(rng.uniform(np.log(0.09), np.log(0.36)))
    white_factor = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    lum = luminance(hdr)
    log_average = np.exp(np.mean(np.log(lum + _EPS)))
    scaled = key / log_average * lum
    white = max(white_factor * float(scaled.max()), _EPS)
    display = scaled * (1.0 + scaled / white**2) / (1.0 + scaled)
    return _display_encode(_recolour(hdr, lum, display, saturation=1.0), rng)


def drago(hdr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drago 2003 adaptive logarithmic mapping, bias in [0.7, 0.95], exposure +-1 stop.

    The log base varies from 2 for dark pixels to 10 for the brightest, per Drago et al.;
    ``L_dmax`` is the usual 100 cd/m^2 display.
    """
    bias = rng.uniform(0.7, 0.95)
    exposure = 2.0 ** rng.uniform(-1.0, 1.0)
    lum = luminance(hdr)
    world = exposure * lum / np.exp(np.mean(np.log(lum + _EPS)))
    world_max = float(world.max()) + _EPS
    log_base = np.log(2.0 + 8.0 * (world / world_max) ** (np.log(bias) / np.log(0.5)))
    display = 1.0 / np.log10(world_max + 1.0) * np.log(world + 1.0) / log_base
    return _display_encode(_recolour(hdr, lum, display, saturation=1.0), rng)


def local_contrast(hdr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mantiuk-style local operator: compress a blurred log-luminance base, keep detail.

    Target base contrast 10**[1.4, 2.2], detail gain [1, 1.4], Gaussian sigma 2-6 % of
    the image size, saturation [0.55, 0.9].
    """
    target_contrast = rng.uniform(1.4, 2.2)  # log10 of output dynamic range of the base
    detail_gain = rng.uniform(1.0, 1.4)
    sigma = rng.uniform(0.02, 0.06) * max(hdr.shape[:2])
    saturation = rng.uniform(0.55, 0.9)
    lum = luminance(hdr)
    log_lum = np.log10(lum + _EPS)
    base = gaussian_blur(log_lum, sigma)
    base_top = float(np.percentile(base, 99.5))
    base_range = max(base_top - float(base.min()), _EPS)
    compression = min(1.0, target_contrast / base_range)
    log_display = compression * (base - base_top) + detail_gain * (log_lum - base)
    return _display_encode(_recolour(hdr, lum, 10.0**log_display, saturation), rng)


OPERATORS: dict[str, ToneMapper] = {
    "percentile": percentile_exposure,
    "reinhard": reinhard,
    "drago": drago,
    "local": local_contrast,
}


def random_tmo(hdr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Tone-map with an operator chosen uniformly at random; return (LDR float, its name)."""
    name = list(OPERATORS)[int(rng.integers(len(OPERATORS)))]
    return OPERATORS[name](np.asarray(hdr, dtype=np.float32), rng), name


def to_8bit(
    ldr: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: bool = False,
    jpeg_quality: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Quantise display-referred [0, 1] RGB to uint8, as a camera would deliver it.

    ``noise`` adds Poisson-Gaussian sensor noise (in its usual heteroscedastic Gaussian
    form, Foi et al. 2008) in linear light before quantisation, with random photon
    count at white (200-4000) and read noise (0.1-1 % of white). ``jpeg_quality`` (a
    quality, or an inclusive (low, high) range to draw it from) adds a JPEG round trip
    through Pillow with 4:2:0 chroma subsampling.
    """
    ldr = np.clip(np.asarray(ldr, dtype=np.float32), 0.0, 1.0)
    if noise:
        ldr = _sensor_noise(ldr, rng)
    codes = np.round(ldr * 255.0).astype(np.uint8)
    if jpeg_quality is not None:
        codes = jpeg_round_trip(codes, _draw_quality(jpeg_quality, rng))
    return codes


def expose(ldr: np.ndarray, stops: float, gamma: float = 2.2) -> np.ndarray:
    """Re-expose a display-referred image by ``stops`` (in linear light) and re-clip.

    Used to push tone-mapped images into under- or over-exposure.
    """
    linear = np.clip(ldr, 0.0, 1.0) ** gamma * 2.0**stops
    return (np.clip(linear, 0.0, 1.0) ** (1.0 / gamma)).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur of an HxW array: three box passes per axis, edges extended.

    Box filters run in constant time per pixel whatever ``sigma`` (running sums), so
    large blurs of large images stay cheap. Three passes give a close Gaussian shape
    (Wells 1986); the integer box width makes the effective sigma approximate, which
    is plenty for a base layer.
    """
    radius = max(0, round((np.sqrt(4.0 * sigma**2 + 1.0) - 1.0) / 2.0))  # 3 boxes: var = sigma^2
    blurred = image.astype(np.float64)
    for _ in range(3):
        blurred = _box_blur_axis(_box_blur_axis(blurred, radius, axis=0), radius, axis=1)
    return blurred.astype(np.float32)


def _box_blur_axis(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over a window of 2 * radius + 1 along one axis, via a running sum."""
    if radius == 0:
        return image
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius + 1, radius)
    sums = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
    size = image.shape[axis]
    upper = np.take(sums, np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
    lower = np.take(sums, np.arange(size), axis=axis)
    return (upper - lower) / (2 * radius + 1)


def _recolour(
    hdr: np.ndarray, lum: np.ndarray, display_lum: np.ndarray, saturation: float
) -> np.ndarray:
    """Give the mapped luminance the input's colour: (rgb / lum)**s * display_lum."""
    ratio = hdr / (lum[..., None] + _EPS)
    return ratio**saturation * display_lum[..., None]


def _display_encode(linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clip and gamma-encode (gamma in [1.8, 2.2]) a display-linear image."""
    gamma = rng.uniform(1.8, 2.2)
    return (np.clip(linear, 0.0, 1.0) ** (1.0 / gamma)).astype(np.float32)


def _sensor_noise(ldr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add signal-dependent shot noise and constant read noise in linear light."""
    photons_at_white = np.exp(rng.uniform(np.log(200.0), np.log(4000.0)))
    read_noise = np.exp(rng.uniform(np.log(0.001), np.log(0.01)))
    linear = ldr**2.2
    std = np.sqrt(linear / photons_at_white + read_noise**2)
    noisy = linear + std * rng.standard_normal(ldr.shape, dtype=np.float32)
    return (np.clip(noisy, 0.0, 1.0) ** (1.0 / 2.2)).astype(np.float32)


def _draw_quality(jpeg_quality: int | tuple[int, int], rng: np.random.Generator) -> int:
    """A fixed quality, or one drawn uniformly from an inclusive range."""
    if isinstance(jpeg_quality, tuple):
        low, high = jpeg_quality
        return int(rng.integers(low, high + 1))
    return int(jpeg_quality)


def jpeg_round_trip(codes: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode through Pillow's JPEG codec, in memory."""
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    buffer.seek(0)
    with Image.open(buffer) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)
