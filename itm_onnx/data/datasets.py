"""torch Datasets of (ldr, target) training pairs, made the way MQNet's authors made them.

Each item is two float32 tensors of shape 3xHxW in [0, 1]: ``ldr`` is an 8-bit LDR
image divided by 255 (what the deployed network receives), ``target`` the HDR image
through one of the :mod:`.encoding` maps (what the network learns to output), or, for
image enhancement, a display image (the ``display`` encoding: the image itself).

* :class:`SyntheticPairs`: procedural scenes (:mod:`.synthetic`); needs no files.
* :class:`HdrFolder`: a folder of .hdr/.exr images (HDR-Eye, HDR-Real, Funt, ...);
  LDR inputs are tone-mapped on the fly by a random operator, as released.
* :class:`PairedFolder`: LDR photos with their HDR ground truth, matched by file stem.
* :class:`EnhanceFolder`: LDR photos with LDR target photos, matched by file stem
  (image enhancement, e.g. DPED: phone photo -> DSLR photo).

Randomness is always drawn from a generator seeded by the item's coordinates (never
from global state), so a run is reproducible whatever the number of DataLoader workers
and whatever order the items are fetched in. The folder datasets also take the epoch
(:meth:`set_epoch`, call it before each epoch) so crops and operators change from one
epoch to the next; the synthetic set has endless scenes instead, so its item i is fixed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .encoding import Encoding, get_encoding
from .hdr_io import HDR_SUFFIXES, probe_hdr, read_hdr
from .images import DEFAULT_MAX_PIXELS, ImageError, load_ldr
from .synthetic import SPLITS, render_scene, scene_seed
from .tonemap import random_tmo, to_8bit

log = logging.getLogger(__name__)

JpegQuality = int | tuple[int, int] | None
Pair = tuple[torch.Tensor, torch.Tensor]


def make_pair(
    hdr: np.ndarray, rng: np.random.Generator, encoding: Encoding, *, noise: bool, jpeg: JpegQuality
) -> Pair:
    """Tone-map ``hdr`` with a random operator into an 8-bit input; encode the target."""
    ldr, _ = random_tmo(hdr, rng)
    codes = to_8bit(ldr, rng, noise=noise, jpeg_quality=jpeg)
    return _to_tensor(codes.astype(np.float32) / 255.0), _to_tensor(encoding.encode(hdr))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 numpy to a contiguous 3xHxW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class SyntheticPairs(Dataset[Pair]):
    """``length`` procedural scenes rendered at ``size`` x ``size``.

    Item i is fully determined by (seed, split, i): scene ``scene_seed(seed, split,
    i)`` (splits never share a scene), tone-mapped with a generator seeded by
    (seed, split, i). ``noise`` adds camera-like sensor noise to the LDR input;
    ``jpeg`` a JPEG round trip (a quality, or an inclusive range to draw one from).
    """

    def __init__(
        self,
        length: int,
        size: int = 256,
        seed: int = 0,
        split: str = "train",
        encoding: str = "mulaw",
        noise: bool = True,
        jpeg: JpegQuality = None,
    ) -> None:
        if length <= 0 or size <= 0:
            raise ValueError(f"length and size must be positive, got {length}, {size}")
        scene_seed(seed, split, length - 1)  # validates seed, split and length up front
        self.length, self.size, self.seed, self.split = length, size, seed, split
        self.encoding = get_encoding(encoding)
        self.noise, self.jpeg = noise, jpeg

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Pair:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        hdr = render_scene(scene_seed(self.seed, self.split, index), self.size, self.size)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        return make_pair(hdr, rng, self.encoding, noise=self.noise, jpeg=self.jpeg)


class _FolderDataset(Dataset[Pair]):
    """Shared machinery: per-(seed, index, epoch) randomness and skipping bad files.

    A file that fails to decode is logged once, remembered, and replaced by the next
    readable one, so one damaged image does not end a training run.
    """

    def __init__(self, count: int, size: int, seed: int, encoding: str) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self._count, self.size, self.seed, self.epoch = count, size, seed, 0
        self.encoding = get_encoding(encoding)
        self._unreadable: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops, flips and operators items are drawn with."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Pair:
        if not 0 <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} files")
        rng = np.random.default_rng([self.seed, index, self.epoch])
        for offset in range(self._count):
            candidate = (index + offset) % self._count
            if candidate in self._unreadable:
                continue
            try:
                return self._make_item(candidate, rng)
            except ImageError as exc:
                self._unreadable.add(candidate)
                log.warning("skipping unreadable file (%d of %d so far): %s",
                            len(self._unreadable), self._count, exc)
        raise ImageError(f"no readable file left in the dataset (all {self._count} unreadable)")

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        """Build the pair from file ``index``; raise ImageError if the file is unusable."""
        raise NotImplementedError


class HdrFolder(_FolderDataset):
    """Every .hdr/.exr under ``root`` (recursively), as random crops with made-up LDR inputs.

    Each item: a random square crop (side 50-100 % of the shorter image side) resized
    to ``size`` x ``size``, random horizontal and vertical flips, then a random tone
    mapping operator and 8-bit quantisation for the input. Files whose header cannot
    be read are left out at construction, with one warning giving the count.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        size: int = 256,
        seed: int = 0,
        encoding: str = "mulaw",
        noise: bool = True,
        jpeg: JpegQuality = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = _existing_folder(root)
        candidates = sorted(p for p in self.root.rglob("*") if _is_hdr_file(p))
        if not candidates:
            raise ImageError("no .hdr or .exr files in this folder", self.root)
        self.files = _readable_headers(candidates, self.root)
        super().__init__(len(self.files), size, seed, encoding)
        self.noise, self.jpeg, self.max_pixels = noise, jpeg, max_pixels

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        hdr = read_hdr(self.files[index], max_pixels=self.max_pixels)
        crop = random_crop_box(hdr.shape[:2], rng)
        hdr = random_flips(resize_float(hdr, crop, self.size), rng)
        return make_pair(hdr, rng, self.encoding, noise=self.noise, jpeg=self.jpeg)


class PairedFolder(_FolderDataset):
    """LDR photos in ``ldr_dir`` with HDR ground truth in ``hdr_dir``, matched by stem.

    ``photo.jpg`` pairs with ``photo.hdr`` or ``photo.exr``. Both get the same random
    square crop, resize and flips. Files without a partner, and stems that appear more
    than once on one side, are left out with one warning giving the counts; a pair
    whose two images differ in size is skipped when it is read.
    """

    def __init__(
        self,
        ldr_dir: str | os.PathLike[str],
        hdr_dir: str | os.PathLike[str],
        size: int = 256,
        seed: int = 0,
        encoding: str = "mulaw",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pairs = _pairs_by_stem(ldr_dir, hdr_dir, _is_hdr_file, "LDR/HDR", "HDR")
        super().__init__(len(self.pairs), size, seed, encoding)
        self.max_pixels = max_pixels

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        ldr_path, hdr_path = self.pairs[index]
        ldr = load_ldr(ldr_path, max_pixels=self.max_pixels).rgb
        hdr = read_hdr(hdr_path, max_pixels=self.max_pixels)
        if ldr.shape != hdr.shape:
            raise ImageError(
                f"LDR is {ldr.shape[1]}x{ldr.shape[0]} but its HDR {hdr_path.name} is "
                f"{hdr.shape[1]}x{hdr.shape[0]}",
                ldr_path,
            )
        crop = random_crop_box(hdr.shape[:2], rng)
        flips = (rng.random() < 0.5, rng.random() < 0.5)
        ldr = _flip(resize_uint8(ldr, crop, self.size), flips).astype(np.float32) / 255.0
        hdr = _flip(resize_float(hdr, crop, self.size), flips)
        return _to_tensor(ldr), _to_tensor(self.encoding.encode(hdr))


class EnhanceFolder(_FolderDataset):
    """LDR input photos in ``input_dir`` with LDR target photos in ``target_dir``, by stem.

    Image enhancement pairs as in DPED (phone photo -> DSLR photo of the same scene):
    ``0.jpg`` pairs with ``0.png``, ``0.tif``, ... Any format :func:`.images.load_ldr`
    reads (8-bit, or 16-bit reduced to 8); the target is a display image, so its
    encoding is ``display`` (the [0, 1] image itself). Unpartnered files and ambiguous
    stems are left out with one warning giving the counts; a file that fails to decode
    is skipped (with a warning and a running count) when it is read.

    Crops are at native scale, as enhancement is learnt at the deployed resolution: a
    random ``size`` x ``size`` square (the largest square, resized to ``size``, when the
    image is smaller), with random flips, the same for input and target. A target whose
    size differs from its input's is resized to the input's size (area average when
    shrinking, bilinear when enlarging): the pair is taken to show the same framing at
    two resolutions. A pair whose aspect ratios differ by more than 2 % is not the same
    framing; it is skipped when read.
    """

    def __init__(
        self,
        input_dir: str | os.PathLike[str],
        target_dir: str | os.PathLike[str],
        size: int = 256,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pairs = _pairs_by_stem(input_dir, target_dir, _is_ldr_file, "input/target", "target")
        super().__init__(len(self.pairs), size, seed, "display")
        self.max_pixels = max_pixels

    def _make_item(self, index: int, rng: np.random.Generator) -> Pair:
        input_path, target_path = self.pairs[index]
        image = load_ldr(input_path, max_pixels=self.max_pixels).rgb
        target = _match_size(load_ldr(target_path, max_pixels=self.max_pixels).rgb,
                             image.shape[:2], input_path, target_path)
        crop = native_crop_box(image.shape[:2], self.size, rng)
        flips = (rng.random() < 0.5, rng.random() < 0.5)
        image = _flip(resize_uint8(image, crop, self.size), flips).astype(np.float32) / 255.0
        target = _flip(resize_uint8(target, crop, self.size), flips).astype(np.float32) / 255.0
        return _to_tensor(image), _to_tensor(self.encoding.encode(target))


def _match_size(target: np.ndarray, shape: tuple[int, int], input_path: Path,
                target_path: Path) -> np.ndarray:
    """The target resized to the input's (height, width); ImageError if not the same framing."""
    height, width = shape
    if target.shape[:2] == (height, width):
        return target
    t_height, t_width = target.shape[:2]
    if abs((t_width / t_height) / (width / height) - 1.0) > 0.02:
        raise ImageError(
            f"input is {width}x{height} but its target {target_path.name} is "
            f"{t_width}x{t_height}: different aspect ratios, not the same framing",
            input_path,
        )
    shrinking = t_width >= width and t_height >= height
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(target).resize((width, height), resample))


def native_crop_box(shape: tuple[int, int], size: int,
                    rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random ``size`` x ``size`` square (left, top, right, bottom) at native scale.

    When the image is smaller than ``size``, the largest square that fits (to be
    resized up to ``size``).
    """
    height, width = shape
    side = min(size, height, width)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return left, top, left + side, top + side


def random_crop_box(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random square (left, top, right, bottom), side 50-100 % of the shorter side."""
    height, width = shape
    shorter = min(height, width)
    side = int(rng.integers(max(1, shorter // 2), shorter + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return left, top, left + side, top + side


def resize_float(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` from float HxWx3 and resize to size x size.

    Box filtering when shrinking (area average: no ringing, so no negative radiance
    and no halo around a sun), bilinear when enlarging. Pillow resizes float images
    one channel at a time in its "F" mode.
    """
    resample = _resample(box, size)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize((size, size), resample, box)
        )
        for c in range(3)
    ]
    return np.maximum(np.stack(channels, axis=-1), 0.0).astype(np.float32)


def resize_uint8(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` from uint8 HxWx3 and resize to size x size (same filters as floats).

    A box of side ``size`` is copied exactly (Pillow's filters are the identity at scale 1).
    """
    return np.asarray(Image.fromarray(image).resize((size, size), _resample(box, size), box))


def random_flips(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip left-right and up-down, each with probability one half."""
    return _flip(image, (rng.random() < 0.5, rng.random() < 0.5))


def _flip(image: np.ndarray, flips: tuple[bool, bool]) -> np.ndarray:
    """Apply (left-right, up-down) flips; contiguous so torch.from_numpy accepts it."""
    horizontal, vertical = flips
    if horizontal:
        image = image[:, ::-1]
    if vertical:
        image = image[::-1]
    return np.ascontiguousarray(image)


def _resample(box: tuple[int, int, int, int], size: int) -> Image.Resampling:
    """Area averaging to shrink, bilinear to enlarge."""
    side = box[2] - box[0]
    return Image.Resampling.BOX if side >= size else Image.Resampling.BILINEAR


def _existing_folder(path: str | os.PathLike[str]) -> Path:
    """The folder as a Path, or an ImageError saying why it cannot be used."""
    folder = Path(path)
    if not folder.exists():
        raise ImageError("folder not found", folder)
    if not folder.is_dir():
        raise ImageError("not a folder", folder)
    return folder


def _listing(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_hdr_file(path: Path) -> bool:
    """A visible regular file with an HDR suffix (.hdr, .pic, .rgbe, .exr)."""
    return path.suffix.lower() in HDR_SUFFIXES and path.is_file() and not path.name.startswith(".")


def _is_ldr_file(path: Path) -> bool:
    """Any file but an HDR one: a photo, or something load_ldr will refuse when read."""
    return not _is_hdr_file(path)


def _pairs_by_stem(
    first_dir: str | os.PathLike[str],
    second_dir: str | os.PathLike[str],
    second_kind: Callable[[Path], bool],
    what: str,
    second_name: str,
) -> list[tuple[Path, Path]]:
    """(first, second) file pairs with the same stem, sorted by stem.

    Files of ``first_dir`` that are not HDR files pair with the files of ``second_dir``
    that ``second_kind`` accepts. Files without a partner and stems that appear more
    than once on one side are left out with one warning giving the counts; no pair at
    all is an ImageError naming both folders (``what``: "LDR/HDR", ...).
    """
    first = _by_stem(p for p in _listing(_existing_folder(first_dir)) if not _is_hdr_file(p))
    second = _by_stem(p for p in _listing(_existing_folder(second_dir)) if second_kind(p))
    stems = sorted(set(first) & set(second))
    unmatched = len(set(first) ^ set(second))
    ambiguous = [s for s in stems if len(first[s]) > 1 or len(second[s]) > 1]
    pairs = [(first[s][0], second[s][0]) for s in stems if s not in ambiguous]
    if unmatched or ambiguous:
        log.warning(
            "%s + %s: left out %d files without a partner and %d ambiguous stems",
            first_dir,
            second_dir,
            unmatched,
            len(ambiguous),
        )
    if not pairs:
        raise ImageError(
            f"no {what} pairs with matching file stems ({second_name} folder {second_dir})",
            first_dir,
        )
    return pairs


def _by_stem(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Group files by stem; more than one file per stem makes the stem ambiguous."""
    stems: dict[str, list[Path]] = {}
    for path in paths:
        stems.setdefault(path.stem, []).append(path)
    return stems


def _readable_headers(paths: list[Path], root: Path) -> list[Path]:
    """The files whose header reads; one warning with the count of the others."""
    readable, failures = [], []
    for path in paths:
        try:
            probe_hdr(path)
        except ImageError as exc:
            failures.append(str(exc))
        else:
            readable.append(path)
    if failures:
        log.warning(
            "%s: skipped %d of %d HDR files that cannot be read (first: %s)",
            root,
            len(failures),
            len(paths),
            failures[0],
        )
    if not readable:
        raise ImageError(
            f"none of the {len(paths)} HDR files can be read (first: {failures[0]})", root
        )
    return readable
