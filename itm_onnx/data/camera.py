"""A phone-camera model: how an 8-bit photo is made from captured HDR radiance.

Training inputs and evaluation inputs are both made here, so that what the network
learns to undo is what it is judged on. A shot is

1. **exposure**: radiance is scaled so that a chosen share of pixels (by their
   brightest channel) reaches the sensor's white point; that level is *the clip level*,
   and the linear target is radiance relative to it (1.0 = where the LDR clips);
2. **sensor noise** (optional): Poisson-Gaussian in linear light (Foi et al. 2008);
3. **clipping** to [0, 1] and a **display curve** f with f(0) = 0, f(1) = 1: a gamma
   (1.8-2.4), sRGB, a filmic shoulder (Hable's curve with its white at the clip level),
   a Reinhard shoulder (white at the clip level), or a Drago-style logarithm;
4. **8-bit quantisation** and an optional **JPEG** round trip (4:2:0, as phones store).

Every curve maps the clip level to code 255, so "clipped" always means the same
radiance (1.0). Local tone mapping (``tonemap.local_contrast``) and the percentile
operator are not used here: neither has a clip level, so their targets could not be
expressed relative to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .tonemap import jpeg_round_trip

CURVES = ("gamma", "srgb", "filmic", "reinhard", "log")
# The evaluation camera of the real-light benchmark: four curves, cycled over views.
EVAL_CURVES = ("gamma2.2", "srgb", "gamma1.8", "filmic")
EVAL_CLIP_FRACTION = 0.03


@dataclass(frozen=True)
class CameraModel:
    """Ranges the random camera draws from; defaults are the training camera."""

    clip_fraction: tuple[float, float] = (0.0, 0.15)
    curves: tuple[str, ...] = CURVES
    # How often each curve is drawn: mostly what phones apply (gammas, sRGB, a filmic
    # shoulder), sometimes an editor's global operator.
    curve_weights: tuple[float, ...] = (0.3, 0.3, 0.24, 0.08, 0.08)
    gamma: tuple[float, float] = (1.8, 2.4)
    noise: bool = True
    noise_probability: float = 0.5
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (70, 98)

    def __post_init__(self) -> None:
        low, high = self.clip_fraction
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"clip_fraction must satisfy 0 <= low <= high < 1, got {low, high}")
        unknown = set(self.curves) - set(CURVES)
        if unknown or not self.curves:
            raise ValueError(f"curves must be a non-empty subset of {CURVES}, got {self.curves}")
        if len(self.curve_weights) != len(self.curves) or min(self.curve_weights) < 0:
            raise ValueError("curve_weights needs one non-negative weight per curve")


@dataclass(frozen=True)
class Shot:
    """One photo: the 8-bit input and the linear radiance it was made from."""

    ldr: np.ndarray  # HxWx3 uint8
    linear: np.ndarray  # HxWx3 float32, radiance relative to the clip level (1.0 = clips)
    curve: str
    clip_fraction: float  # share of pixels whose brightest channel reaches the clip level


def exposure_for_clipping(hdr: np.ndarray, fraction: float) -> float:
    """The scale that makes at most ``fraction`` of pixels (brightest channel) reach 1.0.

    ``fraction`` 0 puts the brightest pixel exactly at the clip level (nothing clips).
    A black image gets scale 1.
    """
    peak = np.sort(hdr.max(axis=-1), axis=None)
    level = float(peak[-1])
    if fraction > 0:
        level = float(peak[min(int(np.ceil((1.0 - fraction) * peak.size)), peak.size - 1)])
        # A flat region (a sky, a wall) sharing the level would all clip at once: then
        # clip at the next brighter value instead, never more than asked for.
        if (peak >= level).mean() > fraction:
            brighter = peak[peak > level]
            level = float(brighter[0]) if brighter.size else level
    if level <= 0:
        level = float(peak[-1])
    return 1.0 / level if level > 0 else 1.0


def srgb_oetf(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear [0, 1]."""
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _hable(x: np.ndarray) -> np.ndarray:
    """Hable's filmic curve (Uncharted 2), before white normalisation."""
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f) - e / f


def display_curve(name: str, rng: np.random.Generator | None = None,
                  camera: CameraModel | None = None) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                              str]:
    """A curve [0, 1] -> [0, 1] with f(1) = 1, and its description.

    Names of :data:`CURVES` draw their parameters from ``rng``; ``"gammaG"`` (e.g.
    ``"gamma2.2"``) is a fixed gamma, as the evaluation camera uses.
    """
    camera = camera or CameraModel()
    if name.startswith("gamma") and name != "gamma":
        gamma = float(name[len("gamma"):])
        return (lambda x: np.power(x, 1.0 / gamma)), name
    if name == "srgb":
        return srgb_oetf, "srgb"
    if rng is None:
        rng = np.random.default_rng(0)
    if name == "gamma":
        gamma = float(rng.uniform(*camera.gamma))
        return (lambda x: np.power(x, 1.0 / gamma)), f"gamma{gamma:.2f}"
    if name == "filmic":
        white = float(rng.uniform(2.0, 11.2))  # scene white, in Hable's units, at clip
        norm = _hable(np.float32(white))
        return (lambda x: np.power(np.maximum(_hable(x * white) / norm, 0.0), 1 / 2.2)), \
            f"filmic(w={white:.1f})"
    if name == "reinhard":
        k = float(rng.uniform(0.5, 4.0))
        return (lambda x: np.power(x * (1 + k) / (1 + k * x), 1 / 2.2)), f"reinhard(k={k:.2f})"
    if name == "log":
        b = float(rng.uniform(4.0, 40.0))
        return (lambda x: np.log1p(b * x) / np.log1p(b)), f"log(b={b:.1f})"
    raise ValueError(f"unknown display curve {name!r}; choose one of {CURVES} or gammaG")


def sensor_noise(linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (200-4000 photons at the clip level) and read noise (0.1-1 %), linear."""
    photons = float(np.exp(rng.uniform(np.log(200.0), np.log(4000.0))))
    read = float(np.exp(rng.uniform(np.log(0.001), np.log(0.01))))
    std = np.sqrt(np.clip(linear, 0.0, 1.0) / photons + read**2)
    return linear + (std * rng.standard_normal(linear.shape)).astype(np.float32)


def shoot(hdr: np.ndarray, rng: np.random.Generator, camera: CameraModel | None = None,
          *, clip_fraction: float | None = None, curve: str | None = None) -> Shot:
    """Take a photo of ``hdr`` (HxWx3 linear radiance) with a random (or fixed) camera.

    ``clip_fraction`` and ``curve`` fix those choices (the evaluation camera); noise and
    JPEG follow ``camera`` (pass ``CameraModel(noise=False, jpeg_probability=0)`` for a
    clean shot).
    """
    camera = camera or CameraModel()
    if clip_fraction is None:
        clip_fraction = float(rng.uniform(*camera.clip_fraction))
    linear = (np.asarray(hdr, dtype=np.float32)
              * np.float32(exposure_for_clipping(hdr, clip_fraction)))
    if curve is None:
        weights = np.asarray(camera.curve_weights, np.float64)
        curve = camera.curves[int(rng.choice(len(camera.curves), p=weights / weights.sum()))]
    apply_curve, described = display_curve(curve, rng, camera)
    noisy = camera.noise and rng.random() < camera.noise_probability
    sensed = sensor_noise(linear, rng) if noisy else linear
    display = apply_curve(np.clip(sensed, 0.0, 1.0))
    codes = np.round(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    if camera.jpeg_probability > 0 and rng.random() < camera.jpeg_probability:
        low, high = camera.jpeg_quality
        codes = jpeg_round_trip(codes, int(rng.integers(low, high + 1)))
    clipped = float((linear.max(axis=-1) >= 1.0).mean())
    return Shot(ldr=codes, linear=linear, curve=described, clip_fraction=clipped)


CLEAN_CAMERA = CameraModel(noise=False, jpeg_probability=0.0)
