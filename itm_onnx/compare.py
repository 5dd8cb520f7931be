"""Score several models on the same held-out data and put their figures in one table.

Made for claims such as "QAT int8 recovers the PSNR that post-training int8 loses
against float": evaluate float, PTQ int8 and QAT int8 on identical images and read
the table. Each model is scored by :func:`itm_onnx.evaluate.evaluate` (same figures,
same baselines); this module adds the comparison columns:

- ``delta_psnr_mulaw``: mu-law PSNR minus the first model's (the reference);
- ``recovered_share`` (third row on): ``(psnr_row - psnr_second) / (psnr_first -
  psnr_second)`` on mu-law PSNR, i.e. the share of the second model's loss against the
  first that this row wins back (1.0 = all of it, 0 = none, < 0 = worse still). None
  when the second model loses nothing (denominator <= 0) or a PSNR is infinite.

The baselines (identity, akyuz) depend only on the data, so they are reported once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import evaluate, metrics
from .errors import UsageError
from .evaluate import EvalConfig, Predictor

# EvalConfig fields that define the data: every compared model must agree on them.
DATA_FIELDS = ("data", "hdr_dir", "ldr_dir", "split", "images", "size", "seed", "views")
SPEC_HELP = ("[LABEL=]MODEL.onnx, [LABEL=]NAME:CHECKPOINT.safetensors, or a registered "
             "NAME (its shipped checkpoint)")


@dataclass
class CompareRow:
    label: str
    source: str  # the ONNX path, or NAME:CHECKPOINT
    psnr_mulaw: float
    psnr_linear: float
    ssim_mulaw: float
    chroma_error: float  # mean CIELAB chroma difference, lower is better
    delta_psnr_mulaw: float  # vs the first row (the reference)
    recovered_share: float | None = None  # third row on; see the module doc


@dataclass
class CompareReport:
    data: str
    images: int
    size: int
    rows: list[CompareRow]
    baselines: dict[str, dict[str, float]]  # baseline -> figure -> mean over images
    grid: str | None = None
    seconds: float = 0.0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> description

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- model specs ---------------------------------------------------------------------------------

def parse_model_spec(spec: str, base: EvalConfig | None = None) -> tuple[str, EvalConfig]:
    """``[LABEL=]PATH.onnx`` or ``[LABEL=]NAME:CHECKPOINT`` -> (label, EvalConfig).

    The data settings come from ``base``. A bare registered ``NAME`` means its shipped
    checkpoint. The default label is the file stem (or the bare name).
    """
    base = base or EvalConfig()
    label, rest = None, spec.strip()
    if "=" in rest and not Path(rest).exists():
        label, rest = (part.strip() for part in rest.split("=", 1))
        if not label:
            raise UsageError(f"--model {spec!r}: empty label before '='; expected {SPEC_HELP}")
    if not rest:
        raise UsageError(f"--model {spec!r}: no model given; expected {SPEC_HELP}")
    if rest.endswith(".onnx"):
        config = dataclasses.replace(base, model=rest, checkpoint=None)
        default_label = Path(rest).stem
    elif ":" in rest:
        name, checkpoint = (part.strip() for part in rest.split(":", 1))
        if not name or not checkpoint:
            raise UsageError(f"--model {spec!r}: expected NAME:CHECKPOINT ({SPEC_HELP})")
        config = dataclasses.replace(base, model=name, checkpoint=Path(checkpoint))
        default_label = Path(checkpoint).stem
    elif Path(rest).suffix:  # a file that is neither .onnx nor NAME:CHECKPOINT
        raise UsageError(f"--model {spec!r}: not an .onnx file; a checkpoint needs its model "
                         f"name (NAME:{rest}); expected {SPEC_HELP}")
    else:
        config = dataclasses.replace(base, model=rest, checkpoint=None)
        default_label = rest
    return label or default_label, config


def _source(config: EvalConfig) -> str:
    if config.model.endswith(".onnx"):
        return config.model
    return f"{config.model}:{config.checkpoint}" if config.checkpoint else config.model


# --- comparison ---------------------------------------------------------------------------------

def compare_models(models: list[tuple[str, EvalConfig]], *, grid: Path | None = None,
                   grid_images: int = 4,
                   log: Callable[[str], None] = lambda _: None) -> CompareReport | Any:
    """Evaluate every (label, config) on the same data; the first model is the reference.

    The data settings (``DATA_FIELDS``) must be the same in every config; ``threads``
    comes from the first. ``grid``: also write a PNG, one row per image (the first
    ``grid_images``): input, target, each model's mu-law prediction, each model's error.
    """
    if len(models) < 2:
        raise UsageError("compare needs at least two models (the first is the reference)")
    labels = [label for label, _ in models]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"duplicate model label(s) {', '.join(duplicates)}; name them "
                         "with LABEL=MODEL")
    first = models[0][1]
    for label, config in models[1:]:
        differing = [f for f in DATA_FIELDS if getattr(config, f) != getattr(first, f)]
        if differing:
            raise UsageError(f"model {label!r} is set up on other data than the first "
                             f"({', '.join(differing)}); compare needs identical data")
    if grid is not None and not Path(grid).parent.is_dir():
        raise UsageError(f"grid folder {Path(grid).parent} does not exist")

    started = time.perf_counter()
    if first.threads:
        torch.set_num_threads(first.threads)
    predictors = [evaluate.resolve_predictor(config) for _, config in models]
    if first.data == "real":
        return compare_real(labels, predictors, [_source(c) for _, c in models], first,
                            log=log, started=started)
    size = _common_size(first.size, labels, predictors)
    dataset, described = evaluate.build_dataset(first, size)

    reports = [evaluate.evaluate(predictor, dataset,
                                 log=lambda message, label=label: log(f"{label}: {message}"))
               for label, predictor in zip(labels, predictors, strict=True)]
    rows = _rows(labels, [_source(config) for _, config in models],
                 [report.figures["model"] for report in reports])
    result = CompareReport(
        data=described, images=reports[0].images, size=reports[0].size, rows=rows,
        baselines={name: reports[0].figures[name] for name in metrics.BASELINES},
        models={label: report.model for label, report in zip(labels, reports, strict=True)})
    if grid is not None:
        write_compare_grid(grid, labels, predictors, dataset, grid_images)
        result.grid = str(grid)
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def compare_real(labels: list[str], predictors: list[Predictor], sources: list[str],
                 config: EvalConfig, *, log: Callable[[str], None],
                 started: float) -> RealCompareReport:
    """The real-light figures (itm_onnx.evaluate_real) of every model on the same views."""
    from .evaluate_real import run_real_evaluation

    if config.hdr_dir is None:
        raise UsageError("--data real needs --hdr-dir PATH (a folder of .hdr/.exr files)")
    fixed = {p.fixed_size for p in predictors if p.fixed_size}
    size = config.size or (next(iter(fixed))[0] if len(fixed) == 1 else 384)
    reports = [run_real_evaluation(p, config.hdr_dir, size=size, views=config.views,
                                   seed=config.seed, use_flip=config.flip,
                                   log=lambda m, label=label: log(f"{label}: {m}"))
               for label, p in zip(labels, predictors, strict=True)]
    reference = reports[0].figures["model"]["pu21_psnr"]
    rows = [{"label": label, "source": source, **report.figures["model"],
             "pu21_vs_first_db": report.figures["model"]["pu21_psnr"] - reference,
             "pu21_vs_identity_db": report.versus_identity["pu21_gain_db"]}
            for label, source, report in zip(labels, sources, reports, strict=True)]
    return RealCompareReport(data=reports[0].data, views=reports[0].views, size=size,
                             rows=rows, baselines={k: reports[0].figures[k]
                                                   for k in ("identity", "akyuz")},
                             seconds=round(time.perf_counter() - started, 1))


@dataclass
class RealCompareReport:
    data: str
    views: int
    size: int
    rows: list[dict[str, Any]]
    baselines: dict[str, dict[str, float]]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _common_size(size: int | None, labels: list[str], predictors: list[Predictor]) -> int:
    """``size``, else the one fixed input size of the fixed-shape ONNX models, else 256."""
    fixed = {label: p.fixed_size for label, p in zip(labels, predictors, strict=True)
             if p.fixed_size}
    for label, (height, width) in fixed.items():
        if height != width:
            raise UsageError(f"model {label!r} has a non-square fixed input {height}x{width}; "
                             "compare square or dynamic exports")
    if size is None:
        sides = {shape[0] for shape in fixed.values()}
        if len(sides) > 1:
            raise UsageError("the ONNX models have different fixed input sizes ("
                             + ", ".join(f"{label}: {s[0]}" for label, s in fixed.items())
                             + "); compare exports of one size, or dynamic ones")
        size = sides.pop() if sides else 256
    if size <= 0:
        raise UsageError(f"--size {size} is not positive")
    return size  # per-model multiples and fixed sizes are checked by evaluate()


def _rows(labels: list[str], sources: list[str],
          figures: list[dict[str, float]]) -> list[CompareRow]:
    reference = figures[0]["psnr_mulaw"]
    second = figures[1]["psnr_mulaw"]
    rows = []
    for index, (label, source, fig) in enumerate(zip(labels, sources, figures, strict=True)):
        rows.append(CompareRow(
            label=label, source=source, psnr_mulaw=fig["psnr_mulaw"],
            psnr_linear=fig["psnr_linear"], ssim_mulaw=fig["ssim_mulaw"],
            chroma_error=fig["chroma_error"],
            delta_psnr_mulaw=0.0 if index == 0 else fig["psnr_mulaw"] - reference,
            recovered_share=(recovered_share(reference, second, fig["psnr_mulaw"])
                             if index >= 2 else None)))
    return rows


def recovered_share(reference: float, second: float, value: float) -> float | None:
    """(value - second) / (reference - second); None if nothing was lost or not finite."""
    if not all(math.isfinite(v) for v in (reference, second, value)):
        return None
    lost = reference - second
    return (value - second) / lost if lost > 0 else None


# --- picture grid -------------------------------------------------------------------------------

def grid_pictures(predictors: list[Predictor], dataset: Any,
                  images: int) -> list[list[np.ndarray]]:
    """Rows of HWC tiles in [0, 1]: input, target, each model's prediction, each error map.

    Prediction and target are mu-law tone-mapped as in :func:`itm_onnx.evaluate.evaluate`.
    """
    from .data.encoding import ENCODINGS

    count = min(images, len(dataset))
    if count <= 0:
        raise UsageError("no images for the picture grid")
    pairs = [dataset[i] for i in range(count)]
    ldr = np.stack([np.asarray(x, np.float32) for x, _ in pairs])
    decode_target = ENCODINGS[evaluate.TARGET_ENCODING].decode
    targets = [metrics.mulaw(_hwc(decode_target(np.asarray(t, np.float32)))) for _, t in pairs]
    predictions = []  # per model: one tone-mapped picture per image
    for predictor in predictors:
        decode = ENCODINGS[predictor.encoding].decode
        predictions.append([metrics.mulaw(_hwc(decode(p))) for p in predictor.run(ldr)])
    return [[_hwc(ldr[i]), targets[i], *(model[i] for model in predictions),
             *(evaluate.error_map(model[i], targets[i]) for model in predictions)]
            for i in range(count)]


def write_compare_grid(path: Path, labels: list[str], predictors: list[Predictor],
                       dataset: Any, images: int = 4) -> None:
    """The PNG of :func:`grid_pictures`, labelled on top like evaluate's grid."""
    columns = ["input", "target", *labels, *(f"{label} error x4" for label in labels)]
    evaluate.write_tile_grid(path, columns, grid_pictures(predictors, dataset, images))


def _hwc(image: Any) -> np.ndarray:
    return np.asarray(image, np.float32).transpose(1, 2, 0)
