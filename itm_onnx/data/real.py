"""Samples of captured HDR, photographed by the camera model: what the network learns and
is judged on.

* :class:`RealViews` (training): item i is a random sample of file i (a perspective
  view of a panorama or a crop of a photo, :mod:`.views`) shot by the random camera
  (:mod:`.camera`); with probability ``synthetic_mix`` a procedural scene
  (:mod:`.synthetic`) is shot instead, so the mix is one number.
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
import torch
from torch.utils.data import Dataset

from .camera import CLEAN_CAMERA, EVAL_CLIP_FRACTION, EVAL_CURVES, CameraModel, shoot
from .datasets import Pair, _existing_folder, _FolderDataset, _is_hdr_file, _readable_headers
from .encoding import get_encoding
from .hdr_io import read_hdr
from .images import DEFAULT_MAX_PIXELS, ImageError
from .synthetic import render_scene
from .views import fixed_samples, is_panorama, random_sample


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


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
                 synthetic_mix: float = 0.0, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not 0.0 <= synthetic_mix <= 1.0:
            raise ValueError(f"synthetic_mix must be in [0, 1], got {synthetic_mix}")
        self.root = Path(root)
        self.files = hdr_files(root)
        super().__init__(len(self.files), size, seed, encoding)
        self.camera = camera or CameraModel()
        self.synthetic_mix, self.max_pixels = synthetic_mix, max_pixels
        self._cache: dict[int, np.ndarray] = {}

    def load(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = read_hdr(self.files[index], max_pixels=self.max_pixels)
        return self._cache[index]

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        if self.synthetic_mix > 0 and rng.random() < self.synthetic_mix:
            hdr = render_scene(int(rng.integers(2**31)), self.size, self.size)
        else:
            hdr = random_sample(self.load(index), self.size, rng)
        shot = shoot(hdr, rng, self.camera)
        return (_to_tensor(shot.ldr.astype(np.float32) / 255.0),
                _to_tensor(self.encoding.encode(shot.linear)))


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
        return (_to_tensor(s.ldr.astype(np.float32) / 255.0),
                _to_tensor(self.encoding.encode(s.linear)))
