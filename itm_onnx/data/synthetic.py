"""Procedural HDR scenes: structured, seeded, fast training and calibration data.

No HDR photographs can be fetched here, so training and int8 calibration need scenes
made on the spot that still have what inverse tone mapping must learn: light sources
10^2-10^5 times brighter than the surfaces they light, skies and windows that clip,
shaded and textured surfaces whose highlights and shadows a tone mapper crushes.

Scenes are rendered by the small numpy ray caster in :mod:`.raycast` (shading, hard
shadows, highlights, sky reflections, haze, lens glow, slight lens blur). This module
draws what to render: spheres, rooms with window openings, ground planes and boxes
(furniture, buildings, lamp posts) with procedural textures (:mod:`.surfaces`: value noise,
checker, stripes, planks, bricks, lit window grids). Four kinds of scene:

* ``outdoor``: sky gradient with the sun (disc 10^3-10^5 x diffuse white, in view in
  about half of them), textured ground, objects with cast shadows, distant buildings.
* ``interior``: a room seen from inside, windows showing the bright outside, sunlight
  patches on the floor, furniture, sometimes a ceiling lamp.
* ``night``: a street with lamp posts and lit facades under a night sky, or a room lit
  by bulbs; bulbs 10^2-10^5 x diffuse white.
* ``studio``: glossy objects on a table under a key light, with softbox reflections.

Units: linear relative radiance with a white Lambertian surface under the scene's main
light around 1.0, then a global exposure of 2^[-2, 2] so that scenes span dark to
bright. ``render_scene(seed, h, w)`` is a pure function of its arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .raycast import (
    Box,
    Camera,
    Clouds,
    Lamp,
    Material,
    Noise,
    Opening,
    Rect,
    Scene,
    Sky,
    Sphere,
    Spot,
    Sun,
    normalise,
    render,
    vec,
)
from .surfaces import (
    bricks,
    checker,
    constant,
    grainy,
    ground_material,
    hsv,
    object_material,
    planks,
    random_colour,
    stripes,
    window_grid,
)

SPLITS = ("train", "val", "test", "calib")
SCENE_KINDS = ("outdoor", "interior", "night", "studio")
_KIND_WEIGHTS = (0.3, 0.3, 0.2, 0.2)
_EXPOSURE_STOPS = 2.0


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene ``index`` of ``split``.

    Splits are the residue classes modulo ``len(SPLITS)``, so for one ``seed`` no two
    splits can ever share a scene, and any index up to 2**32 gives a distinct scene.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if seed < 0 or not 0 <= index < 2**32:
        raise ValueError(f"need seed >= 0 and 0 <= index < 2**32, got {seed}, {index}")
    return (seed * 2**32 + index) * len(SPLITS) + SPLITS.index(split)


def render_scene(seed: int, height: int, width: int) -> np.ndarray:
    """Render scene ``seed`` as HxWx3 float32 linear radiance (>= 0, finite)."""
    return render(build_scene(seed), height, width)


def _direction(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Unit vector from elevation above the horizon and azimuth from +Z towards +X."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return vec(math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))


# --- scene builders -------------------------------------------------------------------


def build_scene(seed: int) -> Scene:
    """Draw a scene description from ``seed`` (cheap: no pixels are computed)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    kind = SCENE_KINDS[int(rng.choice(len(SCENE_KINDS), p=_KIND_WEIGHTS))]
    scene = _BUILDERS[kind](rng)
    scene.scale *= 2.0 ** rng.uniform(-_EXPOSURE_STOPS, _EXPOSURE_STOPS)
    return scene


def _daylight_sky(
    rng: np.random.Generator, sun_direction: np.ndarray, level: float, noise: Noise
) -> Sky:
    """Blue-to-white gradient, a sun disc 10^3-10^5 x diffuse white and its aureole, clouds."""
    haziness = rng.random()
    zenith = hsv(rng.uniform(0.55, 0.64), rng.uniform(0.35, 0.75) * (1 - 0.6 * haziness), level)
    horizon = hsv(rng.uniform(0.5, 0.62), rng.uniform(0.05, 0.3), level * rng.uniform(1.3, 2.2))
    ground = hsv(rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.5), level * rng.uniform(0.2, 0.5))
    sun_colour = hsv(rng.uniform(0.07, 0.14), rng.uniform(0.0, 0.35), 1.0)
    radius = math.radians(rng.uniform(0.5, 1.3))
    sun = Spot(
        sun_direction,
        math.cos(radius),
        sun_colour * 10.0 ** rng.uniform(3.0, 5.0),
        sun_colour * level * rng.uniform(2.0, 12.0) * (1 + 2 * haziness),
        1 - math.cos(math.radians(rng.uniform(3, 10))),
    )
    clouds = None
    if rng.random() < 0.6:
        clouds = Clouds(
            noise,
            rng.uniform(0.0, 1.0),
            rng.uniform(1.0, 4.0),
            vec(1, 1, 1) * level * rng.uniform(1.5, 4.0),
        )
    return Sky(zenith, horizon, ground, (sun,), clouds)


def _outdoor(rng: np.random.Generator) -> Scene:
    """Sunlit ground with objects and distant buildings; the sun is in view half the time."""
    noise = Noise(rng)
    fov = math.radians(rng.uniform(50, 75))
    vfov_half = math.degrees(fov) / 2 * 0.75
    sun_visible = rng.random() < 0.5
    if sun_visible:
        elevation = rng.uniform(3, 25)
        azimuth = rng.uniform(-0.35, 0.35) * math.degrees(fov)
        pitch = elevation - rng.uniform(0.3, 0.8) * vfov_half
    else:
        elevation = rng.uniform(15, 65)
        azimuth = rng.uniform(60, 300)
        pitch = rng.uniform(-15, 5)
    camera = Camera(
        vec(0, rng.uniform(1.2, 2.5) if rng.random() < 0.7 else rng.uniform(3, 10), 0),
        0.0,
        math.radians(pitch),
        fov,
    )
    sun_dir = _direction(elevation, azimuth)
    sky_level = rng.uniform(0.25, 1.0)
    sky = _daylight_sky(rng, sun_dir, sky_level, noise)
    sun_colour = hsv(
        rng.uniform(0.07, 0.12), rng.uniform(0.05, 0.3) * (1.5 if elevation < 15 else 1.0), 1.0
    )
    scene = Scene(
        "outdoor",
        camera,
        sky,
        ambient=sky.zenith * 0.6 + sky.horizon * 0.2,
        sun=Sun(sun_dir, sun_colour),
        haze=(sky.horizon * 0.9, rng.uniform(150, 800)),
        bright_source_in_view=sun_visible,
    )
    scene.primitives.append(
        Rect(1, 0.0, (-1e4, 1e4, -1e4, 1e4), ground_material(rng, noise), casts_shadow=False)
    )
    _add_ground_objects(
        rng, scene, noise, count=int(rng.integers(2, 8)), depth=(2.5, 18), mirror=True
    )
    _add_buildings(rng, scene, noise, count=int(rng.integers(0, 6)), depth=(40, 160), night=False)
    scene.scale = 1.0 / (max(math.sin(math.radians(elevation)), 0.3) + float(scene.ambient.mean()))
    return scene


def _add_ground_objects(
    rng: np.random.Generator,
    scene: Scene,
    noise: Noise,
    count: int,
    depth: tuple[float, float],
    mirror: bool,
) -> None:
    """Spheres, boxes and posts standing on y=0 inside the camera's view."""
    half_width = math.tan(scene.camera.fov / 2) * 0.9
    for _ in range(count):
        z = rng.uniform(*depth)
        x = rng.uniform(-half_width, half_width) * z
        material = object_material(rng, noise, glossy=0.5, mirror=mirror)
        shape = rng.integers(3)
        if shape == 0:
            radius = rng.uniform(0.2, 0.12 * z + 0.3)
            scene.primitives.append(Sphere(vec(x, radius, z), radius, material))
        else:
            size = vec(rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.5), rng.uniform(0.3, 2.0))
            if shape == 2:
                size = vec(rng.uniform(0.1, 0.3), rng.uniform(1.5, 4.0), rng.uniform(0.1, 0.3))
            scene.primitives.append(
                Box(vec(x, size[1] / 2, z), size / 2, rng.uniform(0, math.pi), material)
            )


def _add_buildings(
    rng: np.random.Generator,
    scene: Scene,
    noise: Noise,
    count: int,
    depth: tuple[float, float],
    night: bool,
) -> None:
    """Distant boxes with brick or plaster facades; lit window grids at night."""
    half_width = math.tan(scene.camera.fov / 2)
    for _ in range(count):
        z = rng.uniform(*depth)
        size = vec(rng.uniform(8, 40), rng.uniform(8, 60), rng.uniform(8, 30))
        x = rng.uniform(-half_width, half_width) * z
        wall = random_colour(rng, (0.0, 0.4), (0.15, 0.6))
        if rng.random() < 0.5:
            albedo = bricks(
                wall, vec(0.5, 0.5, 0.48), (rng.uniform(1.5, 3), rng.uniform(0.8, 1.5)), noise
            )
        else:
            albedo = grainy(wall, noise, 0.3, 0.2)
        emission, casts_shadow = None, not night
        if night:
            warmth = hsv(rng.uniform(0.08, 0.15), rng.uniform(0.3, 0.7), rng.uniform(1.0, 8.0))
            emission = window_grid(
                warmth, (rng.uniform(2.5, 4), rng.uniform(3, 3.6)), rng.uniform(0.15, 0.6), noise
            )
        material = Material(albedo, emission=emission)
        # At night the street lamps stand in front of the facades: skip their shadow tests.
        scene.primitives.append(
            Box(vec(x, size[1] / 2, z), size / 2, rng.uniform(-0.4, 0.4), material, casts_shadow)
        )


def _room(
    rng: np.random.Generator,
    scene: Scene,
    noise: Noise,
    size: tuple[float, float, float],
    windows: list[tuple[int, Opening]],
) -> None:
    """Floor, ceiling and four walls of a room x in [-W/2, W/2], y in [0, H], z in [0, D].

    ``windows`` lists (wall, opening) with wall 0 = back (z = D), 1 = left, 2 = right.
    """
    width, height, depth = size
    wood = hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.15, 0.5))
    if rng.random() < 0.6:
        floor = planks(wood, rng.uniform(0.1, 0.25), rng.uniform(0.8, 2.0), noise)
    else:
        tile = random_colour(rng, (0.0, 0.3), (0.2, 0.7))
        floor = checker(tile, tile * rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.6), noise)
    paint = hsv(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.85))
    if rng.random() < 0.3:
        wall = stripes(paint, paint * rng.uniform(0.75, 0.95), rng.uniform(0.1, 0.4), 0.5, True)
    else:
        wall = grainy(paint, noise, 2.0, 0.05)
    wall_material = Material(wall)
    openings = {k: tuple(o for w, o in windows if w == k) for k in range(3)}
    scene.primitives += [
        Rect(
            1,
            0.0,
            (-width / 2, width / 2, 0, depth),
            Material(floor, specular=rng.uniform(0, 0.3), shininess=60),
            casts_shadow=False,
        ),
        Rect(
            1,
            height,
            (-width / 2, width / 2, 0, depth),
            Material(grainy(vec(0.8, 0.8, 0.78), noise, 1.0, 0.03)),
        ),
        Rect(2, depth, (-width / 2, width / 2, 0, height), wall_material, openings[0]),
        Rect(0, -width / 2, (0, depth, 0, height), wall_material, openings[1]),
        Rect(0, width / 2, (0, depth, 0, height), wall_material, openings[2]),
        Rect(2, 0.0, (-width / 2, width / 2, 0, height), wall_material),
    ]


def _random_window(
    rng: np.random.Generator, wall_span: tuple[float, float], height: float
) -> Opening:
    """A window opening somewhere on a wall: 0.8-3 m wide, sill at 0.3-1 m."""
    low, high = wall_span
    width = rng.uniform(0.8, min(3.0, high - low - 0.6))
    start = rng.uniform(low + 0.3, high - 0.3 - width)
    sill = rng.uniform(0.3, 1.0)
    top = min(height - 0.2, sill + rng.uniform(1.0, 2.0))
    return Opening(
        (start, start + width, sill, top),
        int(rng.integers(1, 4)),
        int(rng.integers(1, 3)),
        rng.uniform(0.04, 0.08),
    )


def _furnish(
    rng: np.random.Generator,
    scene: Scene,
    noise: Noise,
    size: tuple[float, float, float],
    count: int,
) -> None:
    """Boxes (tables, cabinets) and the odd sphere on the floor of a room."""
    width, _, depth = size
    for _ in range(count):
        material = object_material(rng, noise, glossy=0.3, mirror=False)
        if rng.random() < 0.25:
            radius = rng.uniform(0.1, 0.4)
            centre = vec(
                rng.uniform(-width / 2 + 0.5, width / 2 - 0.5),
                radius,
                rng.uniform(2.0, depth - 0.5),
            )
            scene.primitives.append(Sphere(centre, radius, material))
            continue
        half = vec(rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6))
        centre = vec(
            rng.uniform(-width / 2 + 1, width / 2 - 1), half[1], rng.uniform(2.0, depth - 0.7)
        )
        scene.primitives.append(Box(centre, half, rng.uniform(-0.5, 0.5), material))


def _add_bulb(
    rng: np.random.Generator, scene: Scene, position: np.ndarray, intensity: float, in_view: bool
) -> None:
    """A visible bulb (10^2-10^5 x diffuse white), the light it casts, and its lens glow."""
    colour = hsv(rng.uniform(0.06, 0.14), rng.uniform(0.1, 0.6), 1.0)
    radiance = colour * 10.0 ** rng.uniform(2.0, 5.0)
    radius = rng.uniform(0.04, 0.12)
    scene.primitives.append(
        Sphere(
            position,
            radius,
            Material(constant(vec(0, 0, 0)), emission=constant(radiance)),
            casts_shadow=False,
        )
    )
    scene.lamps.append(Lamp(position, colour * intensity))
    towards = normalise((position - scene.camera.position)[:, None])[:, 0]
    scene.glares.append(
        Spot(
            towards,
            1.0,
            vec(0, 0, 0),
            radiance * rng.uniform(1e-4, 1e-3),
            1 - math.cos(math.radians(rng.uniform(1, 4))),
        )
    )
    scene.bright_source_in_view |= in_view


def _interior(rng: np.random.Generator) -> Scene:
    """A room seen from near its front wall, windows on the back and side walls.

    The outside (sky, sun) is 10-50 times brighter than the walls; each window also
    lights the room as a shadowless point light just inside it, and the sun shines
    through the window openings (walls cast its shadows).
    """
    noise = Noise(rng)
    size = (rng.uniform(4, 8), rng.uniform(2.5, 3.4), rng.uniform(5, 10))
    width, height, depth = size
    camera = Camera(
        vec(rng.uniform(-width / 4, width / 4), rng.uniform(1.2, 1.7), rng.uniform(0.2, 0.8)),
        math.radians(rng.uniform(-30, 30)),
        math.radians(rng.uniform(-12, 8)),
        math.radians(rng.uniform(60, 80)),
    )
    windows = [(0, _random_window(rng, (-width / 2, width / 2), height))]
    for _ in range(int(rng.integers(0, 3))):
        windows.append((int(rng.integers(1, 3)), _random_window(rng, (0.5, depth), height)))
    sun_dir = _direction(rng.uniform(10, 50), rng.uniform(-50, 50))
    outside = _daylight_sky(rng, sun_dir, rng.uniform(0.3, 1.0), noise)
    interior = rng.uniform(0.02, 0.12)  # ambient bounce light, relative to sunlit white
    scene = Scene(
        "interior",
        camera,
        outside,
        ambient=vec(1.0, 0.97, 0.92) * interior,
        sun=Sun(sun_dir, hsv(0.1, rng.uniform(0.05, 0.3), 1.0)) if rng.random() < 0.7 else None,
    )
    _room(rng, scene, noise, size, windows)
    for wall, opening in windows:
        u0, u1, v0, v1 = opening.extent
        u, v = (u0 + u1) / 2, (v0 + v1) / 2
        position = [
            vec(u, v, depth - 0.4),
            vec(-width / 2 + 0.4, v, u),
            vec(width / 2 - 0.4, v, u),
        ][wall]
        area = (u1 - u0) * (v1 - v0)
        scene.lamps.append(
            Lamp(position, vec(1.0, 1.0, 1.05) * area * rng.uniform(0.05, 0.3), shadows=False)
        )
    _furnish(rng, scene, noise, size, int(rng.integers(1, 5)))
    if rng.random() < 0.4:
        _add_bulb(
            rng,
            scene,
            vec(rng.uniform(-1, 1), height - 0.35, rng.uniform(2, depth - 1)),
            rng.uniform(0.2, 2.0),
            in_view=False,
        )
    scene.scale = 1.0 / (interior * 2.5)
    return scene


def _night_sky(rng: np.random.Generator) -> Sky:
    """Dark blue gradient, sometimes with city glow at the horizon and a moon."""
    level = rng.uniform(0.002, 0.02)
    horizon_hue = rng.uniform(0.05, 0.1) if rng.random() < 0.5 else rng.uniform(0.58, 0.66)
    spots = ()
    if rng.random() < 0.3:
        moon_dir = _direction(rng.uniform(10, 40), rng.uniform(-25, 25))
        spots = (
            Spot(
                moon_dir,
                math.cos(math.radians(rng.uniform(0.6, 1.2))),
                vec(0.9, 0.93, 1.0) * rng.uniform(20, 300),
                vec(0.3, 0.35, 0.45) * level * 5,
                1 - math.cos(math.radians(6)),
            ),
        )
    return Sky(
        hsv(0.62, 0.7, level),
        hsv(horizon_hue, 0.5, level * rng.uniform(2, 6)),
        vec(0.3, 0.3, 0.3) * level,
        spots,
    )


def _night(rng: np.random.Generator) -> Scene:
    """A street under lamp posts (60 %) or a room lit by bulbs, under a night sky."""
    noise = Noise(rng)
    sky = _night_sky(rng)
    ambient = vec(0.6, 0.7, 1.0) * rng.uniform(0.002, 0.02)
    if rng.random() < 0.6:
        return _night_street(rng, noise, sky, ambient)
    return _night_room(rng, noise, sky, ambient)


def _night_street(rng: np.random.Generator, noise: Noise, sky: Sky, ambient: np.ndarray) -> Scene:
    """Lamp posts along a street in front of lit facades."""
    camera = Camera(
        vec(0, rng.uniform(1.4, 2.2), 0),
        math.radians(rng.uniform(-20, 20)),
        math.radians(rng.uniform(-5, 12)),
        math.radians(rng.uniform(50, 75)),
    )
    scene = Scene("night", camera, sky, ambient, haze=(sky.horizon, rng.uniform(80, 300)))
    scene.primitives.append(
        Rect(1, 0.0, (-1e4, 1e4, -1e4, 1e4), ground_material(rng, noise), casts_shadow=False)
    )
    _add_buildings(rng, scene, noise, count=int(rng.integers(2, 7)), depth=(20, 90), night=True)
    _add_ground_objects(
        rng, scene, noise, count=int(rng.integers(0, 4)), depth=(4, 15), mirror=False
    )
    side = 1 if rng.random() < 0.5 else -1
    z = rng.uniform(9, 14)
    for k in range(int(rng.integers(1, 5))):
        # The first post stands well inside the view, so its bulb is always in the picture.
        bearing = (
            camera.yaw + side * rng.uniform(0.1, 0.3) * camera.fov
            if k == 0
            else side * rng.uniform(0.2, 0.6)
        )
        _add_street_lamp(
            rng, scene, z * math.tan(bearing), z, arm=-side * rng.uniform(0.6, 1.5), in_view=k == 0
        )
        z += rng.uniform(6, 12)
    return scene


def _add_street_lamp(
    rng: np.random.Generator, scene: Scene, x: float, z: float, arm: float, in_view: bool
) -> None:
    """A dark post with an arm; the bulb hangs under the arm's end."""
    height = rng.uniform(3.5, 6.0)
    metal = Material(constant(vec(0.08, 0.08, 0.08)), specular=0.3)
    scene.primitives.append(Box(vec(x, height / 2, z), vec(0.06, height / 2, 0.06), 0.0, metal))
    scene.primitives.append(
        Box(vec(x + arm / 2, height, z), vec(abs(arm) / 2, 0.04, 0.05), 0.0, metal)
    )
    _add_bulb(rng, scene, vec(x + arm, height - 0.25, z), rng.uniform(10, 40), in_view)


def _night_room(rng: np.random.Generator, noise: Noise, sky: Sky, ambient: np.ndarray) -> Scene:
    """A furnished room lit by one to three bare bulbs, the first one in view."""
    size = (rng.uniform(3.5, 7), rng.uniform(2.4, 3.2), rng.uniform(4, 8))
    width, height, depth = size
    camera = Camera(
        vec(rng.uniform(-width / 4, width / 4), rng.uniform(1.2, 1.7), rng.uniform(0.2, 0.6)),
        math.radians(rng.uniform(-15, 15)),
        math.radians(rng.uniform(-12, 5)),
        math.radians(rng.uniform(60, 80)),
    )
    scene = Scene("night", camera, sky, ambient)
    windows = (
        [(0, _random_window(rng, (-width / 2, width / 2), height))] if rng.random() < 0.5 else []
    )
    _room(rng, scene, noise, size, windows)
    _furnish(rng, scene, noise, size, int(rng.integers(1, 5)))
    for k in range(int(rng.integers(1, 4))):
        z = rng.uniform(2.5, depth - 0.5)
        if k == 0:  # inside the view, so at least one bulb is in the picture
            distance = z - camera.position[2]
            yaw = camera.yaw + rng.uniform(-0.3, 0.3) * camera.fov
            pitch = camera.pitch + rng.uniform(-0.25, 0.25) * camera.fov
            position = camera.position + distance * vec(
                math.sin(yaw), math.tan(pitch), math.cos(yaw)
            )
            position[0] = np.clip(position[0], -width / 2 + 0.3, width / 2 - 0.3)
            position[1] = np.clip(position[1], 0.4, height - 0.3)
        else:
            position = vec(
                rng.uniform(-width / 2 + 0.4, width / 2 - 0.4), rng.uniform(0.8, height - 0.3), z
            )
        _add_bulb(rng, scene, position, rng.uniform(0.5, 4.0), in_view=k == 0)
    return scene


def _studio(rng: np.random.Generator) -> Scene:
    """Glossy objects on a table before a backdrop, a key and a fill light, softboxes."""
    noise = Noise(rng)
    level = rng.uniform(0.01, 0.08)
    softboxes = tuple(
        Spot(
            _direction(rng.uniform(20, 70), rng.uniform(-120, 120)),
            math.cos(math.radians(rng.uniform(5, 15))),
            vec(1, 1, 1) * rng.uniform(20, 300),
            vec(1, 1, 1) * level,
            1 - math.cos(math.radians(20)),
        )
        for _ in range(int(rng.integers(1, 3)))
    )
    environment = Sky(
        vec(1, 1, 1) * level, vec(1, 1, 1) * level * 1.5, vec(1, 1, 1) * level * 0.5, softboxes
    )
    camera = Camera(
        vec(0, rng.uniform(0.5, 1.6), 0),
        math.radians(rng.uniform(-15, 15)),
        math.radians(rng.uniform(-40, -12)),
        math.radians(rng.uniform(40, 65)),
    )
    scene = Scene("studio", camera, environment, ambient=vec(1, 1, 1) * rng.uniform(0.03, 0.12))
    table = (
        ground_material(rng, noise)
        if rng.random() < 0.3
        else Material(
            planks(
                hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6)),
                rng.uniform(0.1, 0.3),
                3.0,
                noise,
            ),
            specular=rng.uniform(0.0, 0.4),
            shininess=80,
        )
    )
    backdrop = Material(grainy(random_colour(rng, (0.0, 0.5), (0.2, 0.8)), noise, 1.5, 0.1))
    wall_z = rng.uniform(3.0, 6.0)
    scene.primitives += [
        Rect(1, 0.0, (-50, 50, -50, wall_z), table, casts_shadow=False),
        Rect(2, wall_z, (-50, 50, -1, 50), backdrop, casts_shadow=False),
    ]
    for _ in range(int(rng.integers(3, 8))):
        z = rng.uniform(1.0, 3.0) * (camera.position[1] + 0.3)
        x = rng.uniform(-0.8, 0.8) * math.tan(camera.fov / 2) * z
        material = object_material(rng, noise, glossy=0.8, mirror=True)
        if rng.random() < 0.6:
            radius = rng.uniform(0.05, 0.3)
            scene.primitives.append(Sphere(vec(x, radius, z), radius, material))
        else:
            half = vec(rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3))
            scene.primitives.append(
                Box(vec(x, half[1], z), half, rng.uniform(0, math.pi), material)
            )
    key = vec(rng.uniform(-2, 2), rng.uniform(1.5, 3.0), rng.uniform(-0.5, 2.0))
    key_distance = float(np.linalg.norm(key - vec(0, 0, 1.5)))
    scene.lamps.append(
        Lamp(key, hsv(rng.uniform(0.05, 0.15), rng.uniform(0, 0.2), key_distance**2))
    )
    scene.lamps.append(
        Lamp(
            vec(-key[0], key[1], key[2]),
            vec(1, 1, 1) * key_distance**2 * rng.uniform(0.05, 0.3),
            shadows=False,
        )
    )
    if rng.random() < 0.35:
        _add_bulb(
            rng,
            scene,
            vec(rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.8), wall_z - 0.3),
            rng.uniform(0.1, 1.0),
            in_view=True,
        )
    return scene


_BUILDERS: dict[str, Callable[[np.random.Generator], Scene]] = {
    "outdoor": _outdoor,
    "interior": _interior,
    "night": _night,
    "studio": _studio,
}
