"""A tiny vectorised ray caster in numpy, the engine behind :mod:`.synthetic`.

One primary ray per pixel, rays stored as (3, N) float32 arrays so every operation is
a whole-array numpy call. Scenes are spheres, axis-aligned rectangles (with window
openings) and boxes turned about the vertical; surfaces are textured Lambertian with
an optional Blinn-Phong lobe, mirror reflection of the sky and emission; lights are a
sun and point lamps with hard shadows; rays that escape see a sky with a gradient,
clouds and bright spots (sun, moon, softboxes).

Speed matters (training renders a scene per sample), hence two tricks: rays are sorted
by the primitive they hit so each primitive shades a contiguous slice, and every
object's bounding sphere culls rays before the exact intersection test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) in metres -> (3, M)
_RAY_EPS = 1e-3
_INF = np.float32(np.inf)


def vec(x: float, y: float, z: float) -> np.ndarray:
    """One 3-vector, float32 (so arithmetic with ray arrays stays float32)."""
    return np.array([x, y, z], dtype=F32)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-ray dot product of (3, M) arrays (either may be a (3, 1) column)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def normalise(a: np.ndarray) -> np.ndarray:
    """Unit vectors along the columns of a (3, M) array."""
    return a / np.sqrt(dot(a, a))


def fraction(x: np.ndarray) -> np.ndarray:
    """x mod 1 (several times faster than numpy's float ``%``)."""
    return x - np.floor(x)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below edge0, 1 above edge1, a smooth cubic between: soft edges without aliasing."""
    s = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


class Noise:
    """Smooth value noise on a wrapped 64x64 lattice of random values in [0, 1]."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.lattice = rng.random(64 * 64, dtype=F32)

    def cell(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """A random value per integer cell (i, j): a cheap hash for per-tile variation."""
        return self.lattice[(j.astype(np.int32) & 63) * 64 + (i.astype(np.int32) & 63)]

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        fu, fv = np.floor(u), np.floor(v)
        su, sv = smoothstep(0.0, 1.0, u - fu), smoothstep(0.0, 1.0, v - fv)
        a, b = self.cell(fu, fv), self.cell(fu + 1, fv)
        c, d = self.cell(fu, fv + 1), self.cell(fu + 1, fv + 1)
        top = a + (b - a) * su
        return top + (c + (d - c) * su - top) * sv

    def fbm(self, u: np.ndarray, v: np.ndarray, octaves: int = 3) -> np.ndarray:
        """Fractal sum of octaves, still in [0, 1]: coarse shapes plus finer grain."""
        total, weight, norm = np.zeros_like(u), 1.0, 0.0
        for octave in range(octaves):
            scale = 2.0**octave
            total += weight * self(u * scale + 17.3 * octave, v * scale - 9.1 * octave)
            norm += weight
            weight *= 0.5
        return total / norm


# --- materials and primitives ---------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """Surface response: textured Lambertian albedo, Blinn-Phong lobe, mirror, emission."""

    albedo: Texture
    specular: float = 0.0
    shininess: float = 40.0
    mirror: float = 0.0
    emission: Texture | None = None


@dataclass(eq=False)
class Sphere:
    """A sphere. Every primitive offers the same three methods:

    ``intersect(origin, d)``: distance along each ray to its first hit in front of the
    origin, inf on a miss (origin (3, 1) or (3, M), d (3, M)); ``bounds()``: a bounding
    sphere (centre, radius) for culling, or None; ``surface(p, d)``: normals (facing
    the ray) and texture coordinates u, v in metres at hit points p.
    """

    centre: np.ndarray
    radius: float
    material: Material
    casts_shadow: bool = True

    def intersect(self, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = origin - self.centre[:, None]
        b = dot(oc, d)
        disc = b * b - (dot(oc, oc) - self.radius**2)
        t = np.full(d.shape[1], _INF, dtype=F32)
        hit = np.flatnonzero(disc > 0)
        if hit.size:
            root = np.sqrt(disc[hit])
            near, far = -b[hit] - root, -b[hit] + root
            first = np.where(near > _RAY_EPS, near, far)
            t[hit] = np.where(first > _RAY_EPS, first, _INF)
        return t

    def bounds(self) -> tuple[np.ndarray, float]:
        return self.centre, self.radius

    def surface(self, p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outward normals; u, v are longitude and latitude as arc lengths."""
        n = (p - self.centre[:, None]) / self.radius
        u = np.arctan2(n[0], n[2]) * self.radius
        v = np.arcsin(np.clip(n[1], -1.0, 1.0)) * self.radius
        return n, u, v


@dataclass(frozen=True)
class Opening:
    """A window hole in a Rect: (u0, u1, v0, v1) with a frame and glazing bars."""

    extent: tuple[float, float, float, float]
    columns: int = 2
    rows: int = 2
    bar: float = 0.06

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """True where (u, v) looks through a pane (inside the frame, between the bars)."""
        u0, u1, v0, v1 = self.extent
        cell_u, cell_v = (u1 - u0) / self.columns, (v1 - v0) / self.rows
        fu, fv = fraction((u - u0) / cell_u) * cell_u, fraction((v - v0) / cell_v) * cell_v
        half = self.bar / 2.0
        clear = (fu > half) & (fu < cell_u - half) & (fv > half) & (fv < cell_v - half)
        return (u > u0) & (u < u1) & (v > v0) & (v < v1) & clear


@dataclass(eq=False)
class Rect:
    """An axis-aligned rectangle (two-sided) at ``position`` on axis ``axis``, with holes."""

    axis: int
    position: float
    extent: tuple[float, float, float, float]  # (u0, u1, v0, v1) on the other two axes
    material: Material
    openings: tuple[Opening, ...] = ()
    casts_shadow: bool = True

    @property
    def _uv_axes(self) -> tuple[int, int]:
        """The world axes that u and v run along (v is height on walls)."""
        return {0: (2, 1), 1: (0, 2), 2: (0, 1)}[self.axis]

    def bounds(self) -> None:
        """Rectangles are floors, walls and grounds: too large to be worth culling."""
        return None

    def intersect(self, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
        ua, va = self._uv_axes
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.position - origin[self.axis]) / d[self.axis]
        u = origin[ua] + t * d[ua]
        v = origin[va] + t * d[va]
        u0, u1, v0, v1 = self.extent
        inside = (t > _RAY_EPS) & (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        for opening in self.openings:
            inside &= ~opening.contains(u, v)
        return np.where(inside, t, _INF)

    def surface(self, p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two-sided: the normal faces whichever side the ray came from."""
        n = np.zeros_like(p)
        n[self.axis] = -np.sign(d[self.axis])
        ua, va = self._uv_axes
        return n, p[ua], p[va]


@dataclass(eq=False)
class Box:
    """A box resting on its base, turned by ``yaw`` radians about the vertical axis."""

    centre: np.ndarray
    half: np.ndarray
    yaw: float
    material: Material
    casts_shadow: bool = True

    def _to_local(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotate horizontal components into the box's own frame."""
        if self.yaw == 0.0:
            return x, z
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return c * x - s * z, s * x + c * z

    def bounds(self) -> tuple[np.ndarray, float]:
        return self.centre, float(np.sqrt(self.half @ self.half))

    def intersect(self, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
        rel = origin - self.centre[:, None]
        ox, oz = self._to_local(rel[0], rel[2])
        dx, dz = self._to_local(d[0], d[2])
        slabs = ((ox, dx, self.half[0]), (rel[1], d[1], self.half[1]), (oz, dz, self.half[2]))
        near = far = None
        # Rays parallel to a slab divide by zero: +-inf is the right answer there.
        with np.errstate(divide="ignore", invalid="ignore"):
            for o_axis, d_axis, half in slabs:
                inv = 1.0 / d_axis
                t1, t2 = (-half - o_axis) * inv, (half - o_axis) * inv
                entry, leave = np.minimum(t1, t2), np.maximum(t1, t2)
                near = entry if near is None else np.maximum(near, entry)
                far = leave if far is None else np.minimum(far, leave)
        t = np.where(near > _RAY_EPS, near, far)
        return np.where((far >= near) & (t > _RAY_EPS), t, _INF)

    def surface(self, p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The face hit is the axis where the point is furthest out relative to the size."""
        rel = p - self.centre[:, None]
        lx, lz = self._to_local(rel[0], rel[2])
        local = np.stack([lx, rel[1], lz])
        face = np.argmax(np.abs(local) / self.half[:, None], axis=0)
        sign = np.sign(local[face, np.arange(p.shape[1])])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        n = np.zeros_like(p)
        n[0] = np.where(face == 0, sign * c, np.where(face == 2, sign * s, 0.0))
        n[1] = np.where(face == 1, sign, 0.0)
        n[2] = np.where(face == 0, -sign * s, np.where(face == 2, sign * c, 0.0))
        u = np.where(face == 0, lz, lx) + self.half[0]
        v = np.where(face == 1, lz, rel[1] + self.half[1])
        return n, u, v


Primitive = Sphere | Rect | Box


# --- lights, sky, camera, scene --------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """A bright patch of the sky or environment (sun, moon, softbox) with a soft glow."""

    direction: np.ndarray
    cos_radius: float
    radiance: np.ndarray
    glow: np.ndarray
    glow_width: float  # 1 - cos of the glow's angular scale


@dataclass(frozen=True)
class Clouds:
    """A cloud layer: fractal noise projected on a plane above the camera."""

    noise: Noise
    coverage: float  # 0: clear, 1: overcast
    scale: float  # cloud features per unit of tan(zenith angle)
    radiance: np.ndarray

    def cover(self, d: np.ndarray, colour: np.ndarray) -> np.ndarray:
        """Blend cloud radiance over the sky colour along directions d."""
        height = np.maximum(d[1], 0.02)
        u, v = d[0] / height * self.scale, d[2] / height * self.scale
        threshold = 0.75 - 0.4 * self.coverage
        density = smoothstep(threshold, threshold + 0.15, self.noise.fbm(u, v))
        density = density * smoothstep(0.0, 0.12, d[1])  # thin out towards the horizon
        shade = 0.55 + 0.45 * self.noise(u * 3.0 + 5.0, v * 3.0)
        return colour * (1.0 - density) + self.radiance[:, None] * (density * shade)


@dataclass(frozen=True)
class Sky:
    """Radiance arriving from each direction that hits nothing (and seen in mirrors)."""

    zenith: np.ndarray
    horizon: np.ndarray
    ground: np.ndarray
    spots: tuple[Spot, ...] = ()
    clouds: Clouds | None = None

    def __call__(self, d: np.ndarray) -> np.ndarray:
        up = np.sqrt(np.clip(d[1], 0.0, 1.0))
        colour = self.horizon[:, None] + (self.zenith - self.horizon)[:, None] * up
        colour = np.where(d[1] < 0, self.ground[:, None], colour)
        if self.clouds is not None:
            colour = self.clouds.cover(d, colour)
        for spot in self.spots:
            cos = dot(d, spot.direction[:, None])
            colour = colour + spot.glow[:, None] * np.exp((cos - 1.0) / spot.glow_width)
            edge = (1.0 - spot.cos_radius) * 0.15
            disc = smoothstep(spot.cos_radius - edge, spot.cos_radius + edge, cos)
            colour = colour + spot.radiance[:, None] * disc
        return colour.astype(F32, copy=False)


@dataclass(frozen=True)
class Sun:
    """A directional light; irradiance on a surface facing it, before shadows."""

    direction: np.ndarray  # unit vector towards the sun
    irradiance: np.ndarray


@dataclass(frozen=True)
class Lamp:
    """A point light; without shadows it stands in for broad sources (window light)."""

    position: np.ndarray
    intensity: np.ndarray  # irradiance = intensity / distance^2
    shadows: bool = True


@dataclass(frozen=True)
class Camera:
    """A pinhole camera; square pixels, field of view measured across the width."""

    position: np.ndarray
    yaw: float  # radians, positive turns from +Z towards +X
    pitch: float  # radians, positive looks up
    fov: float  # horizontal field of view, radians

    def rays(self, height: int, width: int) -> np.ndarray:
        """Unit directions (3, H*W), row-major from the top-left pixel."""
        focal = (width / 2.0) / math.tan(self.fov / 2.0)
        x = (np.arange(width, dtype=F32) + 0.5 - width / 2.0) / focal
        y = -(np.arange(height, dtype=F32) + 0.5 - height / 2.0) / focal
        x, y = np.broadcast_to(x[None, :], (height, width)).ravel(), np.repeat(y, width)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        y_up, z_fwd = y * cp + sp, -y * sp + cp
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        d = np.stack([x * cy + z_fwd * sy, y_up, -x * sy + z_fwd * cy])
        return normalise(d)


@dataclass
class Scene:
    """Everything ``render`` needs; built by one of the per-kind builders."""

    kind: str
    camera: Camera
    sky: Sky
    ambient: np.ndarray
    primitives: list[Primitive] = field(default_factory=list)
    sun: Sun | None = None
    lamps: list[Lamp] = field(default_factory=list)
    glares: list[Spot] = field(default_factory=list)  # lens glow around bright sources
    haze: tuple[np.ndarray, float] | None = None  # (colour, distance)
    scale: float = 1.0  # 1 / diffuse-white level, times the global exposure
    bright_source_in_view: bool = False


# --- rendering ------------------------------------------------------------------------


def render(scene: Scene, height: int, width: int) -> np.ndarray:
    """Ray-cast ``scene`` into an HxWx3 float32 image of linear radiance (>= 0)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    origin = scene.camera.position[:, None]
    d = scene.camera.rays(height, width)
    t, hit = _nearest_hits(scene.primitives, origin, d)
    # Group the rays by what they hit, so each primitive shades one contiguous slice
    # (a view) instead of gathering scattered columns, which is slow in numpy.
    order = np.argsort(hit, kind="stable")
    d, t = np.take(d, order, axis=1), t[order]
    starts = np.searchsorted(hit[order], np.arange(-1, len(scene.primitives) + 1))
    radiance = np.empty_like(d)
    radiance[:, : starts[1]] = scene.sky(d[:, : starts[1]])
    for index, primitive in enumerate(scene.primitives):
        rays = slice(starts[index + 1], starts[index + 2])
        if rays.start < rays.stop:
            p = origin + d[:, rays] * t[rays]
            radiance[:, rays] = _shade(scene, primitive, p, d[:, rays])
    if scene.haze is not None:
        colour, distance = scene.haze
        keep = np.exp(-np.minimum(t[starts[1] :], 1e4) / distance)
        radiance[:, starts[1] :] = radiance[:, starts[1] :] * keep + colour[:, None] * (1.0 - keep)
    for glare in scene.glares:
        cos = dot(d, glare.direction[:, None])
        radiance += glare.glow[:, None] * np.exp((cos - 1.0) / glare.glow_width)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    image = np.take(radiance, inverse, axis=1).reshape(3, height, width)
    image = _lens_blur(image) * F32(scene.scale)
    return np.ascontiguousarray(np.maximum(image, 0.0).transpose(1, 2, 0), dtype=F32)


def _nearest_hits(
    primitives: list[Primitive], origin: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the nearest primitive along each camera ray (-1: none)."""
    best = np.full(d.shape[1], _INF, dtype=F32)
    index = np.full(d.shape[1], -1, dtype=np.int16)  # int16 sorts by radix sort, fast
    for k, primitive in enumerate(primitives):
        rays = _cone_candidates(primitive, origin, d)
        t = primitive.intersect(origin, d if rays is None else np.take(d, rays, axis=1))
        closer = t < (best if rays is None else best[rays])
        hits = np.flatnonzero(closer) if rays is None else rays[closer]
        best[hits] = t[closer]
        index[hits] = k
    return best, index


def _cone_candidates(primitive: Primitive, origin: np.ndarray, d: np.ndarray) -> np.ndarray | None:
    """Indices of the rays from one ``origin`` that can hit ``primitive`` (None: all of them).

    A cheap test against the primitive's bounding sphere (one dot product per ray)
    spares the exact intersection for the many rays that pass far from small objects.
    """
    bounds = primitive.bounds()
    if bounds is None:
        return None
    centre, radius = bounds
    to_centre = centre - origin[:, 0]
    distance = float(np.sqrt(to_centre @ to_centre))
    if distance <= radius * 1.01:
        return None
    cos_limit = math.sqrt(1.0 - (radius / distance) ** 2)
    return np.flatnonzero(dot(d, (to_centre / distance)[:, None]) >= cos_limit)


def _shade(scene: Scene, primitive: Primitive, p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Radiance leaving surface points ``p`` of one primitive along ``-d``."""
    n, u, v = primitive.surface(p, d)
    material = primitive.material
    irradiance = scene.ambient[:, None] * (0.6 + 0.4 * n[1])
    highlight = np.zeros_like(p)
    for to_light, power, visible in _light_samples(scene, p + n * _RAY_EPS):
        cos = np.maximum(dot(n, to_light), 0.0) * visible
        irradiance += power * cos
        if material.specular:
            half = normalise(to_light - d)
            lobe = np.maximum(dot(n, half), 0.0) ** material.shininess * (cos > 0)
            highlight += power * (
                material.specular * (material.shininess + 8.0) / (8.0 * math.pi) * lobe
            )
    radiance = material.albedo(u, v) * irradiance + highlight
    if material.mirror:
        radiance += material.mirror * scene.sky(d - 2.0 * dot(d, n) * n)
    if material.emission is not None:
        radiance += material.emission(u, v)
    return radiance


def _light_samples(
    scene: Scene, points: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | float]]:
    """(unit direction to the light, irradiance it brings, visibility) for each light."""
    if scene.sun is not None:
        towards = scene.sun.direction[:, None]
        yield (
            towards,
            scene.sun.irradiance[:, None],
            ~_sun_blocked(scene.primitives, points, towards),
        )
    for lamp in scene.lamps:
        to_lamp = lamp.position[:, None] - points
        distance = np.sqrt(dot(to_lamp, to_lamp))
        towards = to_lamp / distance
        visible = ~_lamp_blocked(scene.primitives, lamp, towards, distance) if lamp.shadows else 1.0
        yield towards, lamp.intensity[:, None] / (distance * distance), visible


def _sun_blocked(
    primitives: list[Primitive], points: np.ndarray, towards: np.ndarray
) -> np.ndarray:
    """Whether the sun is hidden from each point (walls, ceilings and objects cast shadows).

    Bounded objects are first tested as a disc in the plane across the sun direction,
    so the exact test runs only for points whose shadow ray passes near them.
    """
    blocked = np.zeros(points.shape[1], dtype=bool)
    s = towards[:, 0]
    side = np.cross(s, vec(0.0, 0.0, 1.0) if abs(s[1]) > 0.9 else vec(0.0, 1.0, 0.0))
    side /= np.linalg.norm(side)
    up = np.cross(side, s)
    across_a, across_b, along = side @ points, up @ points, s @ points
    for primitive in primitives:
        if not primitive.casts_shadow:
            continue
        bounds = primitive.bounds()
        if bounds is None:
            blocked |= primitive.intersect(points, np.broadcast_to(towards, points.shape)) < _INF
            continue
        centre, radius = bounds
        near = ((across_a - side @ centre) ** 2 + (across_b - up @ centre) ** 2 <= radius**2) & (
            along < s @ centre + radius
        )
        rays = np.flatnonzero(near & ~blocked)
        if rays.size:
            sub = np.take(points, rays, axis=1)
            blocked[rays] = primitive.intersect(sub, np.broadcast_to(towards, sub.shape)) < _INF
    return blocked


def _lamp_blocked(
    primitives: list[Primitive], lamp: Lamp, towards: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """Whether an object stands between the lamp and each point.

    Traced from the lamp towards the points, so all rays share an origin and the
    bounding-sphere cone test applies. Rectangles are skipped: lamps always sit inside
    a scene's rooms, above its ground and in front of its backdrops.
    """
    blocked = np.zeros(distance.shape, dtype=bool)
    origin = lamp.position[:, None]
    backwards = -towards
    for primitive in primitives:
        if not primitive.casts_shadow or isinstance(primitive, Rect):
            continue
        rays = _cone_candidates(primitive, origin, backwards)
        if rays is None:
            rays = np.arange(distance.size)
        if rays.size:
            t = primitive.intersect(origin, np.take(backwards, rays, axis=1))
            blocked[rays] |= t < distance[rays] * (1.0 - 1e-4) - _RAY_EPS
    return blocked


def _lens_blur(image: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur in each direction: the softness of a real lens and sensor."""
    p = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]
    return 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]
