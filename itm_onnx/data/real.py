"""Samples of captured HDR, photographed by the camera model: what the network learns and
is judged on.

* :class:`RealViews` (training): item i is a random sample of file i (a perspective
  view of a panorama or a crop of a photo, :mod:`.views`) shot by the random camera
  (:mod:`.camera`); with probability ``synthetic_mix`` a procedural scene
  (:mod:`.synthetic`) is shot instead, so the mix is one number. ``view_scale`` > 1
  renders each view up to that many times larger before the crop (log-uniform), so
  that training crops show light sources at the pixel sizes of full-size photos.
* :class:`RealViewSet` (validation and evaluation): fixed, seeded views of every file
  (``views`` per file), shot by the evaluation camera: ~3 % of pixels clipped, curves
  gamma 2.2 / sRGB / gamma 1.8 / filmic cycled over the views, no noise, no JPEG.

Targets are linear radiance relative to the clip level through the model's encoding
(``mulaw-clip``). Decoded files stay in memory (a few hundred MB for a folder of 1k
panoramas): decoding a Radiance file costs more than a whole training sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .camera import CLEAN_CAMERA, EVAL_CLIP_FRACTION, EVAL_CURVES, CameraModel, shoot
from .datasets import (
    Pair,
    _existing_folder,
    _FolderDataset,
    _is_hdr_file,
    _readable_headers,
    _to_tensor,
)
from .encoding import get_encoding
from .hdr_io import read_hdr
from .images import DEFAULT_MAX_PIXELS, ImageError
from .synthetic import render_scene
from .views import fixed_samples, is_panorama, random_sample


def _shot_pair(ldr: np.ndarray, linear: np.ndarray, encoding) -> Pair:
    """(8-bit input / 255, encoded clip-relative radiance) as 3xHxW tensors."""
    return _to_tensor(ldr.astype(np.float32) / 255.0), _to_tensor(encoding.encode(linear))


def hdr_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every readable .hdr/.exr under ``root``, sorted (ImageError if there is none)."""
    folder = _existing_folder(root)
    candidates = sorted(p for p in folder.rglob("*") if _is_hdr_file(p))
    if not candidates:
        raise ImageError("no .hdr or .exr files in this folder", folder)
    return _readable_headers(candidates, folder)


class RealViews(_FolderDataset):
    """Random camera shots of the HDR files under ``root`` (see module doc)."""

    def __init__(self, root: str | os.PathLike[str], size: int = 128, seed: int = 0,
                 encoding: str = "mulaw-clip", camera: CameraModel | None = None,
                 synthetic_mix: float = 0.0, max_pixels: int = DEFAULT_MAX_PIXELS,
                 view_scale: float = 1.0) -> None:
        if not 0.0 <= synthetic_mix <= 1.0:
            raise ValueError(f"synthetic_mix must be in [0, 1], got {synthetic_mix}")
        if view_scale < 1.0:
            raise ValueError(f"view_scale must be >= 1, got {view_scale}")
        self.root = Path(root)
        self.files = hdr_files(root)
        super().__init__(len(self.files), size, seed, encoding)
        self.camera = camera or CameraModel()
        self.synthetic_mix, self.max_pixels = synthetic_mix, max_pixels
        self.view_scale = view_scale
        self._cache: dict[int, np.ndarray] = {}

    def load(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = read_hdr(self.files[index], max_pixels=self.max_pixels)
        return self._cache[index]

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        if self.synthetic_mix > 0 and rng.random() < self.synthetic_mix:
            hdr = render_scene(int(rng.integers(2**31)), self.size, self.size)
        else:
            # Pixel scale log-uniform in [1, view_scale] (views.random_sample).
            scale = (float(np.exp(rng.uniform(0.0, np.log(self.view_scale))))
                     if self.view_scale > 1 else 1.0)
            hdr = random_sample(self.load(index), self.size, rng, scale)
        shot = shoot(hdr, rng, self.camera)
        return _shot_pair(shot.ldr, shot.linear, self.encoding)


@dataclass(frozen=True)
class ViewSample:
    """One evaluation sample: the 8-bit input and the radiance it was shot from."""

    name: str  # "<file stem>#<view>"
    ldr: np.ndarray  # HxWx3 uint8
    linear: np.ndarray  # HxWx3 float32, relative to the clip level
    curve: str
    clip_fraction: float
    panorama: bool


class RealViewSet(Dataset[Pair]):
    """Fixed evaluation shots of every HDR file in ``files`` (see module doc)."""

    def __init__(self, files: list[Path], size: int = 384, views: int = 3, seed: int = 0,
                 encoding: str = "mulaw-clip", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if size <= 0 or views <= 0:
            raise ValueError(f"size and views must be positive, got {size}, {views}")
        self.files, self.size, self.views, self.seed = list(files), size, views, seed
        self.encoding = get_encoding(encoding)
        self.max_pixels = max_pixels
        self._samples: list[ViewSample] | None = None

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str], **kwargs) -> RealViewSet:
        return cls(hdr_files(root), **kwargs)

    def samples(self) -> list[ViewSample]:
        """Every view, rendered once (deterministic: seeded by file position and seed)."""
        if self._samples is None:
            out: list[ViewSample] = []
            for f, path in enumerate(self.files):
                hdr = read_hdr(path, max_pixels=self.max_pixels)
                pano = is_panorama(hdr.shape)
                for v, view in enumerate(fixed_samples(hdr, self.size, self.views,
                                                       seed=self.seed * 1000 + f)):
                    curve = EVAL_CURVES[(f + v) % len(EVAL_CURVES)]
                    shot = shoot(view, np.random.default_rng([self.seed, f, v]), CLEAN_CAMERA,
                                 clip_fraction=EVAL_CLIP_FRACTION, curve=curve)
                    out.append(ViewSample(f"{path.stem}#{v}", shot.ldr, shot.linear,
                                          shot.curve, shot.clip_fraction, pano))
            self._samples = out
        return self._samples

    def __len__(self) -> int:
        return len(self.samples())

    def __getitem__(self, index: int) -> Pair:
        s = self.samples()[index]
        return _shot_pair(s.ldr, s.linear, self.encoding)


# --- calibration photos -----------------------------------------------------------------

CALIBRATION_CAMERA = CameraModel(clip_fraction=(0.0, 0.1), jpeg_probability=0.3)


@dataclass(frozen=True)
class CalibrationShot:
    """How one real-light calibration image was made (a row of its manifest)."""

    path: Path
    source: str  # the HDR file's name
    licence: str
    view: str  # "yaw=..,pitch=..,fov=.." for panoramas, "crop" for photos
    curve: str
    clip_fraction: float


def read_licences(manifest: str | os.PathLike[str] | None) -> dict[str, str]:
    """``file name -> licence`` from a tab-separated manifest with ``file`` and ``licence``
    columns (the captured-HDR collection's ``manifest.tsv``); empty when absent."""
    if manifest is None or not Path(manifest).is_file():
        return {}
    lines = Path(manifest).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    file_col, licence_col = header.index("file"), header.index("licence")
    out = {}
    for line in lines[1:]:
        cols = line.split("\t")
        out[Path(cols[file_col]).name] = cols[licence_col]
    return out


def make_real_calibration_set(hdr_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                              count: int = 64, size: int = 384, seed: int = 2026,
                              manifest: str | os.PathLike[str] | None = None
                              ) -> list[CalibrationShot]:
    """Write ``calib_000.png`` ... and ``manifest.tsv``: camera shots of captured HDR.

    Image i is a random sample (:func:`.views.random_sample`: a perspective view or a
    crop) of file ``i mod n`` of ``hdr_dir``, shot by :data:`CALIBRATION_CAMERA` (0-10 %
    clipped, phone curves, sensor noise half the time, JPEG 30 %), all drawn from a
    generator seeded by (seed, i): the same call writes byte-identical files.
    """
    from ..utils.atomic import atomic_output
    from .images import save_png8

    files = hdr_files(hdr_dir)
    licences = read_licences(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[int, np.ndarray] = {}
    shots: list[CalibrationShot] = []
    for i in range(count):
        index = i % len(files)
        if index not in cache:
            cache[index] = read_hdr(files[index])
        rng = np.random.default_rng([seed, i])
        hdr = cache[index]
        sample = random_sample(hdr, size, rng)
        shot = shoot(sample, rng, CALIBRATION_CAMERA)
        path = out / f"calib_{i:03d}.png"
        save_png8(path, shot.ldr)
        view = "perspective view" if is_panorama(hdr.shape) else "crop"
        shots.append(CalibrationShot(path, files[index].name,
                                     licences.get(files[index].name, "unknown"), view,
                                     shot.curve, round(shot.clip_fraction, 4)))
    rows = ["file\tsource\tlicence\tsample\tcurve\tclip_fraction"]
    rows += [f"{s.path.name}\t{s.source}\t{s.licence}\t{s.view}\t{s.curve}\t{s.clip_fraction}"
             for s in shots]
    with atomic_output(out / "manifest.tsv") as tmp:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return shots
