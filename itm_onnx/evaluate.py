"""Score a model (PyTorch checkpoint or ONNX artifact) against ground-truth HDR and baselines.

``evaluate(source, dataset)`` runs the model on every (LDR, HDR) pair, decodes its
output to linear radiance with the model's own output encoding, and reports the
figures of :mod:`itm_onnx.metrics` (linear scale-aligned PSNR, mu-law PSNR, mu-law
SSIM), averaged over images, for the model and for two baselines computed on the same
inputs:

- ``identity``: the LDR input itself, linearised by gamma 2.2;
- ``akyuz``: the classical expansion operator of Akyuz et al. 2007 (parameters in
  :func:`itm_onnx.metrics.akyuz_itm`).

The same code path scores a checkpoint, an fp32 ONNX export or a quantized ONNX model
(through ONNX Runtime), so their numbers are directly comparable. The default data is
the held-out synthetic *test* split (64 scenes at 256x256, seed 0: no training or
validation scene is ever in it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import metrics
from .errors import ItmOnnxError, UsageError
from .utils.atomic import atomic_output

TARGET_ENCODING = "mulaw"  # the dataset's targets; decoded to radiance / max exactly
DATA_SOURCES = ("synthetic", "real", "hdr-folder", "paired")
SYNTHETIC_SPLITS = ("test", "val")  # never "train": those scenes were seen in training
FIGURES = ("psnr_linear", "psnr_mulaw", "ssim_mulaw", "chroma_error")


@dataclass
class EvalConfig:
    """What to evaluate on what; the defaults are the CLI's defaults."""

    model: str = "mqnet"  # an ONNX artifact (path ending in .onnx), or a registry name ...
    checkpoint: Path | None = None  # ... with this checkpoint (None: the shipped model)
    data: str = "synthetic"  # one of DATA_SOURCES
    hdr_dir: Path | None = None
    ldr_dir: Path | None = None
    split: str = "test"  # synthetic split: "test" (report figures) or "val" (select models)
    images: int = 64  # synthetic test scenes (folders: all images, or the first N)
    size: int | None = None  # None: 256, or the fixed input size of an ONNX model
    seed: int = 0
    grid: Path | None = None  # write a picture grid PNG here
    grid_images: int = 4
    threads: int | None = None
    views: int = 3  # data="real": fixed views per HDR file (itm_onnx.evaluate_real)
    flip: bool = True  # data="real": also HDR-FLIP (when flip-evaluator is installed)


@dataclass
class EvalReport:
    model: dict[str, Any]
    data: str
    images: int
    size: int
    figures: dict[str, dict[str, float]]  # predictor -> figure -> mean over images
    gains_db: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    grid: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- predictors: one interface for PyTorch and ONNX Runtime ----------------------------------

@dataclass
class Predictor:
    """``run(batch NCHW float32 [0, 1]) -> NCHW [0, 1]`` plus what the output encodes."""

    run: Callable[[np.ndarray], np.ndarray]
    encoding: str
    description: dict[str, Any]
    fixed_size: tuple[int, int] | None = None
    multiple: int = 32


def torch_predictor(model: nn.Module, description: dict[str, Any] | None = None) -> Predictor:
    model = model.eval()
    device = next(model.parameters()).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(device)).cpu().numpy()

    return Predictor(run, model.config.output_encoding,
                     description or {"kind": "pytorch", "model": getattr(model, "variant", None)},
                     multiple=getattr(model, "required_multiple", 32))


def checkpoint_predictor(path: Path, model_name: str) -> Predictor:
    from .models import create_model

    model = create_model(model_name, checkpoint=path)
    return torch_predictor(model, {"kind": "pytorch", "checkpoint": str(path),
                                   "model": model_name,
                                   "qat": bool(getattr(model.config, "qat", False))})


def onnx_predictor(path: Path, threads: int | None = None) -> Predictor:
    """An ONNX Runtime CPU session; the output encoding comes from the model's metadata."""
    import onnx
    import onnxruntime as ort

    from .onnx_meta import read_model_metadata

    if not Path(path).is_file():
        raise UsageError(f"{path}: ONNX model not found")
    try:
        meta = read_model_metadata(onnx.load(str(path), load_external_data=False))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx/ORT raise many types; one line for all
        raise ItmOnnxError(f"{path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None
    encoding = meta.get("output_encoding")
    if encoding is None:
        raise UsageError(f"{path}: no itm_onnx.output_encoding metadata; export it with "
                         "`itm-onnx export` so that its output can be decoded")
    graph_input = session.get_inputs()[0]
    height, width = graph_input.shape[2], graph_input.shape[3]
    fixed = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    batch_fixed = isinstance(graph_input.shape[0], int)

    def run(batch: np.ndarray) -> np.ndarray:
        if batch_fixed:  # exported with batch 1: one image at a time
            return np.concatenate([session.run(None, {graph_input.name: batch[i:i + 1]})[0]
                                   for i in range(len(batch))])
        return session.run(None, {graph_input.name: batch})[0]

    return Predictor(run, encoding, {"kind": "onnx", "path": str(path),
                                     "model": meta.get("model"),
                                     "model_version": meta.get("model_version")},
                     fixed_size=fixed, multiple=int(meta.get("required_multiple", 32)))


def load_predictor(source: nn.Module | Predictor | str | Path, model_name: str = "mqnet",
                   threads: int | None = None) -> Predictor:
    """A Predictor from a model, a checkpoint path (.safetensors) or an ONNX path (.onnx)."""
    if isinstance(source, Predictor):
        return source
    if isinstance(source, nn.Module):
        return torch_predictor(source)
    path = Path(source)
    if path.suffix == ".onnx":
        return onnx_predictor(path, threads)
    return checkpoint_predictor(path, model_name)


# --- data -------------------------------------------------------------------------------------

def build_dataset(config: EvalConfig, size: int) -> tuple[Any, str]:
    """The evaluation set (targets mu-law encoded, decoded back to radiance here)."""
    from .data import datasets as data
    from .data.images import ImageError

    try:
        if config.data == "synthetic":
            if config.split not in SYNTHETIC_SPLITS:
                raise UsageError(f"--split must be one of {SYNTHETIC_SPLITS}")
            dataset = data.SyntheticPairs(length=config.images, size=size, seed=config.seed,
                                          split=config.split, encoding=TARGET_ENCODING)
            return dataset, (f"synthetic {config.split} split: {config.images} scenes at "
                             f"{size}x{size}, seed {config.seed}")
        if config.data == "hdr-folder":
            if config.hdr_dir is None:
                raise UsageError("--data hdr-folder needs --hdr-dir PATH")
            dataset = data.HdrFolder(config.hdr_dir, size=size, seed=config.seed,
                                     encoding=TARGET_ENCODING)
            described = f"HDR folder {config.hdr_dir}, random operator inputs (seed {config.seed})"
        elif config.data == "paired":
            if config.hdr_dir is None or config.ldr_dir is None:
                raise UsageError("--data paired needs --ldr-dir PATH and --hdr-dir PATH")
            dataset = data.PairedFolder(config.ldr_dir, config.hdr_dir, size=size,
                                        seed=config.seed, encoding=TARGET_ENCODING)
            described = f"paired folders {config.ldr_dir} + {config.hdr_dir}"
        else:
            raise UsageError(f"unknown data source {config.data!r}; choose one of {DATA_SOURCES}")
    except ImageError as exc:
        raise UsageError(f"evaluation data: {exc}") from None
    count = min(len(dataset), config.images)
    subset = torch.utils.data.Subset(dataset, range(count))
    return subset, described + f": {count} images at {size}x{size}"


# --- evaluation -------------------------------------------------------------------------------

def _to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32).transpose(1, 2, 0)


def evaluate(source: nn.Module | Predictor | str | Path, dataset: Iterable,
             *, target_encoding: str = TARGET_ENCODING, grid: Path | None = None,
             grid_images: int = 4, batch_size: int = 4,
             log: Callable[[str], None] = lambda _: None) -> EvalReport:
    """Score ``source`` on ``dataset`` ((ldr, encoded target) pairs); see the module doc."""
    from .data.encoding import ENCODINGS
    from .data.images import ImageError

    started = time.perf_counter()
    predictor = load_predictor(source)
    decode_pred = ENCODINGS[predictor.encoding].decode
    decode_target = ENCODINGS[target_encoding].decode
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    per_image: list[dict[str, Any]] = []
    grid_rows: list[tuple[np.ndarray, ...]] = []
    size = None
    try:
        for ldr_batch, target_batch in loader:
            size = _check_size(predictor, ldr_batch.shape[2:])
            prediction = predictor.run(ldr_batch.numpy().astype(np.float32))
            for ldr, pred, target in zip(ldr_batch.numpy(), prediction, target_batch.numpy(),
                                         strict=True):
                row = _score_image(_to_hwc(ldr), _to_hwc(decode_pred(pred)),
                                   _to_hwc(decode_target(target)))
                per_image.append(row["figures"])
                if len(grid_rows) < grid_images:
                    grid_rows.append(row["pictures"])
            log(f"evaluated {len(per_image)} images")
    except ImageError as exc:
        raise ItmOnnxError(f"evaluation data: {exc}") from None
    if not per_image:
        raise UsageError("the evaluation set is empty")
    figures = {name: {f: _mean([img[name][f] for img in per_image]) for f in FIGURES}
               for name in ("model", *metrics.BASELINES)}
    report = EvalReport(
        model=predictor.description | {"output_encoding": predictor.encoding},
        data=type(dataset).__name__, images=len(per_image), size=int(size[0]) if size else 0,
        figures=figures, gains_db=_gains(figures), per_image=per_image)
    if grid is not None:
        write_grid(grid, grid_rows)
        report.grid = str(grid)
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def _check_size(predictor: Predictor, shape: torch.Size) -> tuple[int, int]:
    height, width = int(shape[0]), int(shape[1])
    if predictor.fixed_size and predictor.fixed_size != (height, width):
        fh, fw = predictor.fixed_size
        raise UsageError(f"the ONNX model takes {fh}x{fw} inputs but the data is "
                         f"{height}x{width}; evaluate with --size {fh} (square) or export "
                         "with --dynamic")
    if height % predictor.multiple or width % predictor.multiple:
        raise UsageError(f"image size {height}x{width} is not a multiple of "
                         f"{predictor.multiple}")
    return height, width


def _score_image(ldr: np.ndarray, prediction: np.ndarray,
                 target: np.ndarray) -> dict[str, Any]:
    """Figures for the model and each baseline on one image, and the grid pictures."""
    figures = {"model": metrics.hdr_figures(prediction, target)}
    for name, baseline in metrics.BASELINES.items():
        figures[name] = metrics.hdr_figures(baseline(ldr), target)
    pictures = (ldr, metrics.mulaw(prediction), metrics.mulaw(target))
    return {"figures": figures, "pictures": pictures}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if len(finite) == len(values) else math.inf


def _gains(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    model = figures["model"]
    return {f"{figure}_vs_{name}": model[figure] - figures[name][figure]
            for name in metrics.BASELINES for figure in ("psnr_mulaw", "psnr_linear")}


# --- picture grid ------------------------------------------------------------------------------

GRID_COLUMNS = ("input", "prediction", "target", "error x4")


def error_map(prediction_tm: np.ndarray, target_tm: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """Per-pixel |error| of the tone-mapped images (mean over RGB), x gain, as a heat map."""
    error = np.clip(np.abs(prediction_tm - target_tm).mean(axis=-1) * gain, 0.0, 1.0)
    # black -> red -> yellow -> white
    return np.stack([np.clip(3 * error, 0, 1), np.clip(3 * error - 1, 0, 1),
                     np.clip(3 * error - 2, 0, 1)], axis=-1)


def write_grid(path: Path, rows: list[tuple[np.ndarray, ...]]) -> None:
    """One row per image: LDR input; prediction and target mu-law tone-mapped; error map."""
    write_tile_grid(path, GRID_COLUMNS, [[ldr, pred, target, error_map(pred, target)]
                                         for ldr, pred, target in rows])


def write_tile_grid(path: Path, columns: Sequence[str], rows: list[list[np.ndarray]]) -> None:
    """A labelled PNG of HxWx3 tiles in [0, 1], one list of tiles per row (atomic)."""
    from PIL import Image, ImageDraw

    if not rows:
        raise UsageError("no images for the picture grid")
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"grid folder {path.parent} does not exist")
    height, width = rows[0][0].shape[:2]
    label_height, gap = 14, 2
    canvas = Image.new("RGB", (len(columns) * (width + gap) - gap,
                               label_height + len(rows) * (height + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for col, label in enumerate(columns):
        draw.text((col * (width + gap) + 2, 1), label, fill="black")
    for r, row in enumerate(rows):
        for col, tile in enumerate(row):
            pixels = (np.clip(tile, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            canvas.paste(Image.fromarray(pixels), (col * (width + gap),
                                                   label_height + r * (height + gap)))
    with atomic_output(path) as tmp:
        canvas.save(tmp, format="PNG")


# --- entry point for the CLI ----------------------------------------------------------------------

def resolve_predictor(config: EvalConfig) -> Predictor:
    """``--model X.onnx``, or ``--model NAME`` with ``--checkpoint`` (default: shipped)."""
    from .paths import default_checkpoint

    if config.model.endswith(".onnx"):
        if config.checkpoint is not None:
            raise UsageError("--checkpoint goes with a registered model, not an ONNX file")
        return onnx_predictor(Path(config.model), config.threads)
    from .models import get_entry

    get_entry(config.model)  # unknown names fail here, listing the known ones
    checkpoint = config.checkpoint or default_checkpoint(config.model)
    if checkpoint is None:
        raise UsageError(f"no shipped checkpoint for model {config.model!r}: pass "
                         "--checkpoint X.safetensors or --model X.onnx")
    return checkpoint_predictor(Path(checkpoint), config.model)


def run_evaluation(config: EvalConfig, log: Callable[[str], None] = lambda _: None) -> Any:
    """Resolve the model and the data from ``config``, then :func:`evaluate` (an
    :class:`EvalReport`), or with ``data="real"`` :func:`itm_onnx.evaluate_real.evaluate_real`
    (a :class:`~itm_onnx.evaluate_real.RealEvalReport`)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    predictor = resolve_predictor(config)
    default_size = 384 if config.data == "real" else 256
    size = config.size or (predictor.fixed_size[0] if predictor.fixed_size else default_size)
    if predictor.fixed_size and predictor.fixed_size[0] != predictor.fixed_size[1]:
        raise UsageError(f"the ONNX model has a non-square fixed input {predictor.fixed_size}; "
                         "evaluate a square or dynamic export")
    if size <= 0 or size % predictor.multiple:
        raise UsageError(f"--size {size} is not a positive multiple of {predictor.multiple}")
    if config.data == "real":
        from .evaluate_real import run_real_evaluation

        if config.hdr_dir is None:
            raise UsageError("--data real needs --hdr-dir PATH (a folder of .hdr/.exr files)")
        if config.views <= 0:
            raise UsageError("--views must be positive")
        return run_real_evaluation(predictor, config.hdr_dir, size=size, views=config.views,
                                   seed=config.seed, grid=config.grid,
                                   grid_views=config.grid_images, use_flip=config.flip, log=log)
    dataset, described = build_dataset(config, size)
    report = evaluate(predictor, dataset, grid=config.grid, grid_images=config.grid_images,
                      log=log)
    report.data = described
    return report


def report_json(report: EvalReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)
