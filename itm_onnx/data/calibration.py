"""The shipped int8 calibration images: synthetic LDR photos made reproducibly.

Post-training quantization needs inputs that look like what the deployed network
will see; the released model was calibrated on validation photos, which cannot be
redistributed here. These images are rendered procedurally (:mod:`.synthetic`),
tone-mapped by the same random operators as the training inputs, pushed up or down
in exposure so that some are under- and some over-exposed, given sensor noise and
(half of them) JPEG compression, and saved as 8-bit PNG. They contain no third-party
content, and re-running :func:`make_calibration_set` gives byte-identical files.

256x256 is the default size: the training resolution and the exported model's
default input (a multiple of 32), so activation ranges match what the network saw
in training; 64 such PNGs take about 7 MB.

Calibration runs at the images' native pixel scale (``itm_onnx.quantize.calibration``),
so an image should show content at the pixel scale of the deployed input. With
``render_size`` the scene is rendered (and tone-mapped, degraded) as a full frame of
that size and a ``size`` window of it at a seeded position is saved: a crop at the
deployed scale, as small on disk as a whole scene rendered at ``size``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_output
from .images import save_png8
from .synthetic import SPLITS, build_scene, render, scene_seed
from .tonemap import expose, random_tmo, to_8bit

CALIBRATION_SEED = 2021
CALIBRATION_SIZE = (256, 256)  # (height, width)
EXPOSURE_STOPS = 1.5
JPEG_SHARE = 0.5
JPEG_QUALITY = (70, 95)


@dataclass(frozen=True)
class CalibrationImage:
    """How one calibration image was made (one row of the folder's manifest)."""

    path: Path
    scene_seed: int
    scene_kind: str
    operator: str
    exposure_stops: float
    jpeg_quality: int | None


def make_calibration_set(
    out_dir: str | os.PathLike[str],
    count: int = 64,
    size: tuple[int, int] = CALIBRATION_SIZE,
    seed: int = CALIBRATION_SEED,
    render_size: tuple[int, int] | None = None,
) -> list[CalibrationImage]:
    """Write ``calib_000.png`` ... and ``manifest.tsv`` into ``out_dir`` (created if needed).

    Image i shows scene ``scene_seed(seed, "calib", i)`` (a split no training, validation
    or test set draws from), ``size`` = (height, width). Its random choices come from a
    generator seeded by (seed, i): the tone mapping operator, an exposure shift of
    +-1.5 stops in linear light, sensor noise, and for half the images a JPEG round
    trip at quality 70-95. ``render_size`` (height, width; at least ``size``): render
    that frame and keep a ``size`` window of it (see the module doc).
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if render_size is not None and (render_size[0] < size[0] or render_size[1] < size[1]):
        raise ValueError(f"render_size {render_size} is smaller than size {size}")
    records = [_make_one(folder, index, size, seed, render_size) for index in range(count)]
    _write_manifest(folder / "manifest.tsv", records)
    return records


def _make_one(folder: Path, index: int, size: tuple[int, int], seed: int,
              render_size: tuple[int, int] | None = None) -> CalibrationImage:
    """Render, tone-map, re-expose, degrade and save calibration image ``index``."""
    scene_id = scene_seed(seed, "calib", index)
    scene = build_scene(scene_id)
    hdr = render(scene, *(render_size or size))
    rng = np.random.default_rng([seed, SPLITS.index("calib"), index])
    ldr, operator = random_tmo(hdr, rng)
    stops = float(rng.uniform(-EXPOSURE_STOPS, EXPOSURE_STOPS))
    quality = (
        int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        if rng.random() < JPEG_SHARE
        else None
    )
    rgb = to_8bit(expose(ldr, stops), rng, noise=True, jpeg_quality=quality)
    if render_size is not None:  # own generator: the draws above stay those of a full frame
        crop = np.random.default_rng([seed, SPLITS.index("calib"), index, 1])
        top = int(crop.integers(render_size[0] - size[0] + 1))
        left = int(crop.integers(render_size[1] - size[1] + 1))
        rgb = np.ascontiguousarray(rgb[top:top + size[0], left:left + size[1]])
    path = folder / f"calib_{index:03d}.png"
    save_png8(path, rgb)
    return CalibrationImage(path, scene_id, scene.kind, operator, stops, quality)


def _write_manifest(path: Path, records: list[CalibrationImage]) -> None:
    """One tab-separated line per image: how it was made, for provenance."""
    lines = ["file\tscene_seed\tscene_kind\toperator\texposure_stops\tjpeg_quality"]
    for r in records:
        quality = "" if r.jpeg_quality is None else str(r.jpeg_quality)
        lines.append(
            f"{r.path.name}\t{r.scene_seed}\t{r.scene_kind}\t{r.operator}\t{r.exposure_stops:+.3f}\t{quality}"
        )
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
