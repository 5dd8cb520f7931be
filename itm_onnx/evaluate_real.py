"""Judge a model on real light: captured HDR photographed by the evaluation camera.

Every HDR file of a folder gives fixed views (:class:`itm_onnx.data.real.RealViewSet`:
perspective views of panoramas, squares of photos), each shot as a phone would: ~3 % of
pixels clipped, one of gamma 2.2 / sRGB / gamma 1.8 / a filmic shoulder, 8 bits. The
model, the identity baseline (the photo linearised by gamma 2.2) and Akyuz et al. 2007
each predict radiance from the 8-bit shot; every prediction is first scaled by the one
factor that matches it to the truth on the well-exposed pixels, so no predictor is
rewarded for a lucky global exposure (:mod:`itm_onnx.metrics`). Then, per view:

* ``pu21_psnr``: PSNR of PU21-encoded RGB, the clip level at 200 cd/m2 (higher is better);
* ``clipped_stops_rms``: RMS error in stops of luminance inside the input's clipped
  pixels (lower is better): how well highlights are recovered;
* ``clip_floor_share``: share of clipped input channels predicted at or above the clip
  level, before alignment (1.0: no "dark holes");
* ``psnr_mulaw``: the classic mu-law PSNR (max-normalised), kept for comparison;
* ``hdr_flip``: NVIDIA's HDR-FLIP mean error (lower is better), when ``flip-evaluator``
  is installed.

The picture grid shows, per view: the input, identity, model and truth (all through the
same fixed tone curve, the ``mulaw-clip`` encoding, so light above the clip level shows
brighter than the clip level), and the model's PU21 error map.
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

from . import metrics
from .errors import UsageError
from .utils.progress import track

FIGURES = ("pu21_psnr", "clipped_stops_rms", "clip_floor_share", "psnr_mulaw", "hdr_flip")
PREDICTORS = ("model", "identity", "akyuz")
GRID_COLUMNS = ("input", "identity", "model", "truth", "model PU21 error")


@dataclass
class RealEvalReport:
    model: dict[str, Any]
    data: str
    views: int
    size: int
    figures: dict[str, dict[str, float]]  # predictor -> figure -> mean over views
    versus_identity: dict[str, float]
    per_view: list[dict[str, Any]] = field(default_factory=list)
    grid: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hdr_flip() -> Callable[[np.ndarray, np.ndarray], float] | None:
    try:
        import flip_evaluator
    except ImportError:
        return None

    def mean_error(prediction: np.ndarray, target: np.ndarray) -> float:
        _, mean, _ = flip_evaluator.evaluate(np.ascontiguousarray(target, np.float32),
                                             np.ascontiguousarray(prediction, np.float32),
                                             "HDR", applyMagma=False)
        return float(mean)

    return mean_error


def score_view(prediction: np.ndarray, target: np.ndarray, ldr: np.ndarray,
               flip: Callable[[np.ndarray, np.ndarray], float] | None) -> dict[str, float]:
    """The figures of one prediction (radiance relative to the clip level)."""
    figures = metrics.real_light_figures(prediction, target, ldr)
    if flip is not None:
        aligned = prediction * figures["exposure_scale"]
        figures["hdr_flip"] = flip(aligned, target)
    else:
        figures["hdr_flip"] = math.nan
    return figures


def baseline_predictions(ldr: np.ndarray) -> dict[str, np.ndarray]:
    """Identity (gamma 2.2: 1.0 at the clip level) and Akyuz et al. 2007."""
    unit = ldr.astype(np.float64) / 255.0
    return {name: metrics.BASELINES[name](unit) for name in ("identity", "akyuz")}


def evaluate_real(predictor: Any, view_set: Any, *, grid: Path | None = None,
                  grid_views: int = 6, use_flip: bool = True,
                  log: Callable[[str], None] = lambda _: None) -> RealEvalReport:
    """Score ``predictor`` (an :class:`itm_onnx.evaluate.Predictor`) on ``view_set``."""
    from .data.encoding import ENCODINGS
    from .evaluate import _check_size

    started = time.perf_counter()
    decode = ENCODINGS[predictor.encoding].decode
    samples = view_set.samples()
    if not samples:
        raise UsageError("the evaluation set is empty")
    _check_size(predictor, samples[0].ldr.shape[:2])
    flip = _hdr_flip() if use_flip else None
    rows: list[dict[str, Any]] = []
    grid_rows: list[list[np.ndarray]] = []
    for sample in track(samples, desc="evaluating views", unit="view"):
        batch = (sample.ldr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        prediction = decode(predictor.run(np.ascontiguousarray(batch))[0]).transpose(1, 2, 0)
        predictions = {"model": np.asarray(prediction, np.float64),
                       **baseline_predictions(sample.ldr)}
        figures = {name: score_view(p, sample.linear, sample.ldr, flip)
                   for name, p in predictions.items()}
        rows.append({"view": sample.name, "curve": sample.curve, "panorama": sample.panorama,
                     "clip_fraction": round(sample.clip_fraction, 4), "figures": figures})
        if len(grid_rows) < grid_views:
            grid_rows.append(_grid_row(sample, predictions, figures))
    log(f"evaluated {len(rows)} views")
    means = {name: {f: _nanmean([r["figures"][name][f] for r in rows]) for f in FIGURES}
             for name in PREDICTORS}
    report = RealEvalReport(
        model=predictor.description | {"output_encoding": predictor.encoding},
        data="", views=len(rows), size=int(samples[0].ldr.shape[0]), figures=means,
        versus_identity=_versus_identity(rows, means), per_view=rows)
    if grid is not None:
        from .evaluate import write_tile_grid

        write_tile_grid(grid, GRID_COLUMNS, grid_rows)
        report.grid = str(grid)
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _versus_identity(rows: list[dict[str, Any]],
                     means: dict[str, dict[str, float]]) -> dict[str, float]:
    """The benchmark's questions: mean gain, worst view, clipped-error ratio, floor share."""
    gains = [r["figures"]["model"]["pu21_psnr"] - r["figures"]["identity"]["pu21_psnr"]
             for r in rows]
    model, identity = means["model"], means["identity"]
    return {
        "pu21_gain_db": model["pu21_psnr"] - identity["pu21_psnr"],
        "worst_view_pu21_gain_db": float(min(gains)),
        "clipped_rms_ratio": model["clipped_stops_rms"] / identity["clipped_stops_rms"],
        "clip_floor_share_min": float(min(
            (r["figures"]["model"]["clip_floor_share"] for r in rows
             if math.isfinite(r["figures"]["model"]["clip_floor_share"])), default=math.nan)),
    }


def _display(linear: np.ndarray) -> np.ndarray:
    """One fixed tone curve for every picture: the mulaw-clip encoding (clip level = 0.64)."""
    from .data.encoding import mulaw_clip_encode

    return np.asarray(mulaw_clip_encode(np.asarray(linear, np.float32)))


def _grid_row(sample: Any, predictions: dict[str, np.ndarray],
              figures: dict[str, dict[str, float]]) -> list[np.ndarray]:
    aligned = {name: p * figures[name]["exposure_scale"] for name, p in predictions.items()}
    from .evaluate import error_map

    # In PU21 units / 100: 100 units (about a sixth of the range) = white.
    heat_rgb = error_map(metrics.pu21(aligned["model"] * metrics.CLIP_NITS) / 100.0,
                         metrics.pu21(sample.linear * metrics.CLIP_NITS) / 100.0, gain=1.0)
    return [sample.ldr.astype(np.float32) / 255.0, _display(aligned["identity"]),
            _display(aligned["model"]), _display(sample.linear), heat_rgb]


def run_real_evaluation(predictor: Any, hdr_dir: Path, *, size: int = 384, views: int = 3,
                        seed: int = 0, grid: Path | None = None, grid_views: int = 6,
                        use_flip: bool = True,
                        log: Callable[[str], None] = lambda _: None) -> RealEvalReport:
    """Build the fixed view set of ``hdr_dir`` and :func:`evaluate_real` on it."""
    from .data.images import ImageError
    from .data.real import RealViewSet

    try:
        view_set = RealViewSet.from_folder(hdr_dir, size=size, views=views, seed=seed)
        view_set.samples()
    except ImageError as exc:
        raise UsageError(f"evaluation data: {exc}") from None
    report = evaluate_real(predictor, view_set, grid=grid, grid_views=grid_views,
                           use_flip=use_flip, log=log)
    report.data = (f"real light: {len(view_set.files)} HDR files of {hdr_dir}, {views} "
                   f"fixed views each at {size}x{size} (seed {seed}), evaluation camera "
                   f"(~3 % clipped; gamma 2.2, sRGB, gamma 1.8, filmic; 8 bits)")
    return report
