"""Pictures a camera could have taken of a captured HDR image.

A 360x180 degree panorama (equirectangular, width = 2 x height) is not a photo: its
top and bottom rows are stretched and it wraps around. A sample from one is a
*perspective view*: a pinhole camera at the centre with some yaw, pitch and field of
view, resampled from the map (bilinear, 2x2 supersampled so that wide views do not
alias). Any other HDR image is a photo already; a sample from it is a square crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .datasets import random_crop_box, resize_float


@dataclass(frozen=True)
class ViewSpec:
    """A perspective view: angles in degrees (yaw 0 = the map's centre column)."""

    yaw: float
    pitch: float
    fov: float  # horizontal = vertical field of view (square views)


# What a phone photo looks like: mostly near the horizon, sometimes up at the sky.
YAW_RANGE = (0.0, 360.0)
PITCH_RANGE = (-20.0, 40.0)
FOV_RANGE = (50.0, 90.0)


def is_panorama(shape: tuple[int, ...]) -> bool:
    """Equirectangular maps are exactly twice as wide as high (within a pixel)."""
    height, width = shape[:2]
    return abs(width - 2 * height) <= 1


def random_view_spec(rng: np.random.Generator) -> ViewSpec:
    return ViewSpec(float(rng.uniform(*YAW_RANGE)), float(rng.uniform(*PITCH_RANGE)),
                    float(rng.uniform(*FOV_RANGE)))


def perspective_view(pano: np.ndarray, spec: ViewSpec, size: int,
                     supersample: int = 2) -> np.ndarray:
    """Render a size x size pinhole view of an equirectangular HxWx3 map."""
    n = size * supersample
    focal = (n / 2) / math.tan(math.radians(spec.fov) / 2)
    coords = (np.arange(n, dtype=np.float64) + 0.5 - n / 2) / focal
    x, y = np.meshgrid(coords, -coords)  # camera space: x right, y up, z forward
    z = np.ones_like(x)
    pitch, yaw = math.radians(spec.pitch), math.radians(spec.yaw)
    y, z = y * math.cos(pitch) + z * math.sin(pitch), -y * math.sin(pitch) + z * math.cos(pitch)
    x, z = x * math.cos(yaw) + z * math.sin(yaw), -x * math.sin(yaw) + z * math.cos(yaw)
    longitude = np.arctan2(x, z)  # 0 = map centre
    latitude = np.arctan2(y, np.hypot(x, z))
    height, width = pano.shape[:2]
    u = (longitude / (2 * math.pi) + 0.5) * width - 0.5
    v = (0.5 - latitude / math.pi) * height - 0.5
    view = _bilinear_wrap(pano, u, v)
    if supersample > 1:
        view = view.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.maximum(view, 0.0).astype(np.float32)


def _bilinear_wrap(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample at float pixel coordinates; wrap around in u (longitude), clamp in v."""
    height, width = image.shape[:2]
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = (u - u0)[..., None], (v - v0)[..., None]
    u1 = (u0 + 1) % width
    u0 = u0 % width
    v1 = np.clip(v0 + 1, 0, height - 1)
    v0 = np.clip(v0, 0, height - 1)
    top = image[v0, u0] * (1 - fu) + image[v0, u1] * fu
    bottom = image[v1, u0] * (1 - fu) + image[v1, u1] * fu
    return top * (1 - fv) + bottom * fv


def random_sample(hdr: np.ndarray, size: int, rng: np.random.Generator,
                  scale: float = 1.0) -> np.ndarray:
    """A random perspective view of a panorama, or a random square crop of a photo,
    then a horizontal flip with probability one half (never vertical: skies are up).

    ``scale`` > 1 renders the view ``scale`` times larger and returns a random
    ``size`` x ``size`` crop of it: the same field of view at a finer pixel scale, so that
    a network trained on small crops sees lamps and windows as many pixels wide as in the
    larger photos it runs on.
    """
    if scale < 1.0:
        raise ValueError(f"scale must be >= 1, got {scale}")
    rendered = max(size, int(round(size * scale)))
    if is_panorama(hdr.shape):
        spec = random_view_spec(rng)
        # At scale 1 always 2 x 2, as before (earlier training runs stay reproducible).
        supersample = 2 if rendered == size else _supersample(hdr.shape[1], spec.fov, rendered)
        sample = perspective_view(hdr, spec, rendered, supersample=supersample)
    else:
        sample = resize_float(hdr, random_crop_box(hdr.shape[:2], rng), rendered)
    if rendered > size:
        top, left = (int(rng.integers(0, rendered - size + 1)) for _ in range(2))
        sample = np.ascontiguousarray(sample[top:top + size, left:left + size])
    if rng.random() < 0.5:
        sample = np.ascontiguousarray(sample[:, ::-1])
    return sample


def _supersample(map_width: int, fov: float, size: int) -> int:
    """2 x 2 supersampling where the view is coarser than the map (it would alias), none
    where it is finer (the view only interpolates the map: supersampling would cost 4 x
    and change nothing visible)."""
    view_density = (size / 2) / math.tan(math.radians(fov) / 2)  # pixels per radian
    return 2 if view_density < map_width / (2 * math.pi) else 1


def fixed_samples(hdr: np.ndarray, size: int, views: int, seed: int) -> list[np.ndarray]:
    """The evaluation's fixed samples of one file, seeded: for a panorama ``views``
    perspective views with stratified yaws (one per 360/views sector), for a photo
    ``views`` full-height squares evenly spaced along its longer side (one: the centre)."""
    rng = np.random.default_rng(seed)
    if is_panorama(hdr.shape):
        out = []
        for k in range(views):
            yaw = (k + float(rng.uniform(0.0, 1.0))) * 360.0 / views
            spec = ViewSpec(yaw, float(rng.uniform(-10.0, 30.0)), float(rng.uniform(60.0, 80.0)))
            out.append(perspective_view(hdr, spec, size))
        return out
    height, width = hdr.shape[:2]
    side = min(height, width)
    count = max(1, views)
    out = []
    for k in range(count):
        offset = round((max(height, width) - side) * (k + 1) / (count + 1))
        box = (offset, 0, offset + side, side) if width >= height else (0, offset, side,
                                                                         offset + side)
        out.append(resize_float(hdr, box, size))
    return out
