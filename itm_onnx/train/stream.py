"""The training data as a stream addressed by (seed, step), and the fixed validation set.

``build_datasets(config)`` turns a :class:`~.config.TrainConfig` into the training
stream and the validation set for its ``--data`` source. Position p of the stream is a
pure function of (seed, p) (:class:`StepStream`), so a resumed run sees exactly the
batches the uninterrupted run would have seen, and under torchrun each rank takes its
stride of the same global batch (:func:`batch_positions`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import UsageError
from .runtime import Dist

if TYPE_CHECKING:
    from .config import TrainConfig

DATA_SOURCES = ("synthetic", "real", "hdr-folder", "paired", "enhance")


def build_datasets(config: TrainConfig, world: int = 1) -> tuple[Dataset, Dataset, str]:
    """(training stream, fixed validation set, one-line description of the data)."""
    from ..data import datasets as data  # deferred: pulls in the HDR readers
    from ..data.images import ImageError

    c = config
    encoding = c.resolved_encoding()
    try:
        if c.data == "synthetic":
            total = c.steps * c.batch_size * world
            train = data.SyntheticPairs(length=total, size=c.crop, seed=c.seed, split="train",
                                        encoding=encoding)
            val = data.SyntheticPairs(length=c.val_images, size=c.val_size, seed=c.seed,
                                      split="val", encoding=encoding)
            return StepStream(train, shuffle=False), val, (
                f"synthetic scenes (train split, seed {c.seed}, {c.crop}x{c.crop}, a new scene "
                f"per sample); val: {c.val_images} val-split scenes at {c.val_size}x{c.val_size}")
        if c.data == "real":
            return _real_datasets(c, encoding)
        if c.data == "hdr-folder":
            if c.hdr_dir is None:
                raise UsageError("--data hdr-folder needs --hdr-dir PATH")

            def make(size: int) -> Dataset:
                return data.HdrFolder(c.hdr_dir, size=size, seed=c.seed, encoding=encoding)

            described = f"HDR folder {c.hdr_dir}"
        elif c.data == "paired":
            if c.hdr_dir is None or c.ldr_dir is None:
                raise UsageError("--data paired needs --ldr-dir PATH and --hdr-dir PATH")

            def make(size: int) -> Dataset:
                return data.PairedFolder(c.ldr_dir, c.hdr_dir, size=size, seed=c.seed,
                                         encoding=encoding)

            described = f"paired folders {c.ldr_dir} + {c.hdr_dir}"
        elif c.data == "enhance":
            if c.input_dir is None or c.target_dir is None:
                raise UsageError("--data enhance needs --input-dir PATH and --target-dir PATH")

            def make(size: int) -> Dataset:
                return data.EnhanceFolder(c.input_dir, c.target_dir, size=size, seed=c.seed)

            described = f"enhancement pairs {c.input_dir} -> {c.target_dir}"
        else:
            raise UsageError(f"unknown data source {c.data!r}; choose one of {DATA_SOURCES}")
        # Two instances: training moves its copy from epoch to epoch, validation stays put.
        train_base, val_base = make(c.crop), make(c.val_size)
    except ImageError as exc:
        raise UsageError(f"training data: {exc}") from None
    return _split_folder(train_base, val_base, c, described)


def _real_datasets(c: TrainConfig, encoding: str) -> tuple[Dataset, Dataset, str]:
    """Camera shots of captured HDR (itm_onnx.data.real); validation on fixed views."""
    from ..data.real import RealViews, RealViewSet, hdr_files

    if c.hdr_dir is None:
        raise UsageError("--data real needs --hdr-dir PATH (a folder of .hdr/.exr files)")
    train = RealViews(c.hdr_dir, size=c.crop, seed=c.seed, encoding=encoding,
                      synthetic_mix=c.synthetic_mix, view_scale=c.view_scale)
    indices = None
    if c.val_dir is not None:
        val_files = hdr_files(c.val_dir)
        held = f"{len(val_files)} files of {c.val_dir}"
    else:
        order = np.random.default_rng(c.seed).permutation(len(train.files))
        n_val = max(1, len(train.files) // 10) if len(train.files) > 1 else 0
        val_idx = sorted(order[:n_val].tolist()) or [0]
        indices = sorted(order[n_val:].tolist()) or [0]
        val_files = [train.files[i] for i in val_idx]
        held = f"{len(val_files)} held-out files (seed {c.seed})"
    # The views do not follow --seed: runs with other seeds are selected on the same views.
    val = RealViewSet(val_files, size=c.val_size, views=c.val_views, seed=0,
                      encoding=encoding)
    described = (f"real HDR views of {c.hdr_dir} ({len(indices or train.files)} files, "
                 f"{c.crop}x{c.crop} crops of views up to {c.view_scale:g} x larger, random "
                 f"camera, synthetic mix {c.synthetic_mix:g}); "
                 f"val: {c.val_views} fixed views of each of {held} at "
                 f"{c.val_size}x{c.val_size}, evaluation camera")
    return StepStream(train, indices, seed=c.seed), val, described


def _split_folder(train_base: Dataset, val_base: Dataset, config: TrainConfig,
                  described: str) -> tuple[Dataset, Dataset, str]:
    """Hold out a fixed, seeded subset of a folder for validation (at least one image)."""
    count = len(train_base)
    described += f" ({count} images)"
    if count == 1:
        return (StepStream(train_base, seed=config.seed), val_base,
                described + "; val: the same single image (too few to hold out)")
    n_val = min(config.val_images, max(1, count // 10))
    order = np.random.default_rng(config.seed).permutation(count)
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return (StepStream(train_base, train_idx, seed=config.seed), Subset(val_base, val_idx),
            described + f"; val: {n_val} held-out images (seed {config.seed})")


class StepStream(Dataset):
    """Training samples addressed by their position in an endless, seeded stream.

    Position p is item ``perm_e[p mod n]`` of epoch ``e = p div n``, where ``perm_e`` is
    a permutation drawn from (seed, e) (or the identity without ``shuffle``: synthetic
    data, where every index is a new scene). The base dataset is told the epoch
    (``set_epoch``) before each item, in whichever process fetches it, so its crops and
    operators also depend on (seed, position) alone.
    """

    def __init__(self, base: Dataset, indices: list[int] | None = None, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.base, self.indices, self.seed, self.shuffle = base, indices, seed, shuffle
        self.count = len(indices) if indices is not None else len(base)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, position: int):
        epoch, offset = divmod(position, self.count)
        item = int(_permutation(self.count, self.seed, epoch)[offset]) if self.shuffle else offset
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        return self.base[self.indices[item] if self.indices is not None else item]


@functools.lru_cache(maxsize=4)
def _permutation(length: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(length)


def batch_positions(step: int, batch: int, env: Dist) -> list[int]:
    """This rank's stream positions for ``step``: its stride of the global batch."""
    global_batch = batch * env.world
    return list(range(step * global_batch + env.rank, (step + 1) * global_batch, env.world))


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """Batch sampler from ``start_step`` (resume) to ``steps``."""

    def __init__(self, start_step: int, steps: int, batch: int, env: Dist) -> None:
        self.start, self.steps, self.batch, self.env = start_step, steps, batch, env

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield batch_positions(step, self.batch, self.env)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)
