"""Procedural surfaces for :mod:`.synthetic`'s scenes: textures (value noise, checker,
stripes, planks, bricks, lit window grids) and the random materials of objects and
ground built from them."""

from __future__ import annotations

import math

import numpy as np

from .raycast import F32, Material, Noise, Texture, fraction, vec


def hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB (3,) from hue in [0, 1), saturation and value in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return (value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(F32)



def grainy(colour: np.ndarray, noise: Noise, scale: float, amount: float) -> Texture:
    """A colour modulated by fractal noise: plaster, grass, asphalt, sand, cloth."""

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        shade = 1.0 + amount * (2.0 * noise.fbm(u * scale, v * scale) - 1.0)
        return colour[:, None] * shade

    return texture


def checker(a: np.ndarray, b: np.ndarray, size: float, noise: Noise) -> Texture:
    """Checkerboard tiles with slight per-tile variation."""

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        iu, iv = np.floor(u / size), np.floor(v / size)
        odd = (2.0 * fraction((iu + iv) / 2.0))[None]
        tone = 0.85 + 0.3 * noise.cell(iu, iv)
        return (a[:, None] * (1.0 - odd) + b[:, None] * odd) * tone

    return texture


def stripes(a: np.ndarray, b: np.ndarray, period: float, duty: float, along_u: bool) -> Texture:
    """Parallel stripes (wallpaper, road markings, awnings)."""

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        coord = u if along_u else v
        in_b = (fraction(coord / period) < duty)[None]
        return np.where(in_b, b[:, None], a[:, None])

    return texture


def planks(colour: np.ndarray, width: float, length: float, noise: Noise) -> Texture:
    """Wood floor or table: staggered planks, each its own tone, with grain along it."""

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        row = np.floor(v / width)
        column = np.floor(u / length + 0.5 * noise.cell(row, row))
        tone = 0.7 + 0.6 * noise.cell(column, row)
        grain = 0.8 + 0.4 * noise(u * 0.8, v * 40.0)
        seam = (fraction(v / width) > 0.04) & (
            fraction(u / length + 0.5 * noise.cell(row, row)) > 0.01
        )
        return colour[:, None] * (tone * grain * np.where(seam, 1.0, 0.35))

    return texture


def bricks(
    brick: np.ndarray, mortar: np.ndarray, size: tuple[float, float], noise: Noise
) -> Texture:
    """Running-bond brick wall with per-brick tone and light mortar joints."""
    brick_w, brick_h = size

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        row = np.floor(v / brick_h)
        shifted = u / brick_w + fraction(row / 2.0)
        is_mortar = (fraction(v / brick_h) < 0.12) | (fraction(shifted) < 0.06)
        tone = 0.75 + 0.5 * noise.cell(np.floor(shifted), row)
        return np.where(is_mortar[None], mortar[:, None], brick[:, None] * tone)

    return texture


def constant(colour: np.ndarray) -> Texture:
    """One colour everywhere (bulbs, lamp posts)."""

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(colour[:, None], (3, u.shape[0]))

    return texture


def window_grid(
    radiance: np.ndarray, cell: tuple[float, float], lit_fraction: float, noise: Noise
) -> Texture:
    """Emission of a facade at night: a grid of windows, some lit, each its own brightness."""
    cell_w, cell_h = cell

    def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        iu, iv = np.floor(u / cell_w), np.floor(v / cell_h)
        fu, fv = fraction(u / cell_w), fraction(v / cell_h)
        pane = (fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8) & (v > 0.5)
        draw = noise.cell(iu, iv + 31.0)
        lit = pane & (draw < lit_fraction)
        level = 0.3 + 1.4 * noise.cell(iu + 7.0, iv)
        return radiance[:, None] * (lit * level)[None]

    return texture


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value whose logarithm is uniform: for quantities spanning decades."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_colour(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> np.ndarray:
    """A random hue with saturation and value drawn from the given ranges."""
    return hsv(rng.random(), rng.uniform(*saturation), rng.uniform(*value))


def object_material(
    rng: np.random.Generator, noise: Noise, glossy: float, mirror: bool
) -> Material:
    """A random object surface: plain, checkered or striped; sometimes glossy."""
    colour = random_colour(rng, (0.0, 0.8), (0.1, 0.85))
    pattern = rng.integers(4)
    if pattern == 0:
        albedo = checker(
            colour, random_colour(rng, (0.0, 0.6), (0.1, 0.85)), rng.uniform(0.1, 0.4), noise
        )
    elif pattern == 1:
        albedo = stripes(
            colour,
            random_colour(rng, (0.0, 0.6), (0.1, 0.85)),
            rng.uniform(0.1, 0.5),
            rng.uniform(0.2, 0.6),
            bool(rng.integers(2)),
        )
    else:
        albedo = grainy(colour, noise, rng.uniform(1.0, 8.0), rng.uniform(0.05, 0.4))
    if rng.random() >= glossy:
        return Material(albedo)
    return Material(
        albedo,
        specular=rng.uniform(0.1, 0.8),
        shininess=log_uniform(rng, 10, 400),
        mirror=rng.uniform(0.02, 0.25) if mirror else 0.0,
    )


def ground_material(rng: np.random.Generator, noise: Noise) -> Material:
    """Grass, asphalt, paving, sand or snow."""
    surface = rng.integers(5)
    if surface == 0:
        return _grainy_hsv(rng, noise, (0.2, 0.33), (0.4, 0.7), (0.08, 0.2), (0.5, 3.0), 0.4)
    if surface == 1:
        return Material(grainy(vec(1, 1, 1) * rng.uniform(0.05, 0.12), noise, 6.0, 0.3))
    if surface == 2:
        tile = hsv(rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.4), rng.uniform(0.2, 0.45))
        return Material(checker(tile, tile * rng.uniform(0.6, 0.9), rng.uniform(0.3, 1.0), noise))
    if surface == 3:
        return _grainy_hsv(rng, noise, (0.08, 0.12), (0.25, 0.45), (0.3, 0.5), (1.0, 4.0), 0.25)
    return Material(grainy(vec(0.8, 0.82, 0.85) * rng.uniform(0.8, 1.0), noise, 1.0, 0.08))


def _grainy_hsv(rng: np.random.Generator, noise: Noise, hue: tuple[float, float],
                saturation: tuple[float, float], value: tuple[float, float],
                scale: tuple[float, float], amount: float) -> Material:
    """A grainy surface of a random colour (ranges of hue, saturation, value, grain scale);
    draws from ``rng`` in that order."""
    colour = hsv(rng.uniform(*hue), rng.uniform(*saturation), rng.uniform(*value))
    return Material(grainy(colour, noise, rng.uniform(*scale), amount))
