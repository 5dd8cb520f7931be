"""Does the shipped artifact compute what the PyTorch model computes? Figures on the 10-bit scale.

``itm-onnx validate`` runs up to three versions of one network on the same LDR images,
PyTorch (a checkpoint), the fp32 ONNX export and the quantized ONNX model, and compares
every pair on what ships: the 10-bit code values round(y * 1023) of the [0, 1] output.
The maths is :func:`compare_outputs` / :func:`compare_codes` -> :class:`Fidelity`, with
no torch or ONNX Runtime in it, so that other stages (the benchmark's fidelity
columns) reuse it.

Figures (``d`` = |reference - candidate| in code values, per channel value; a pixel's
difference is its largest channel difference):

* ``psnr_db``: 10 log10(1023^2 / mean(d^2)) over all channel values (inf: identical);
* ``max_abs``: max d; ``mean_abs``: mean d;
* ``histogram``: pixels by their difference, buckets 0, 1, 2-3, 4-7, 8-15, >=16;
* ``within_1`` / ``within_4``: share of pixels whose difference is <= 1 / <= 4 codes.

Overall figures pool all pixels of all images (PSNR from the pooled mean squared
error, not a mean of per-image PSNRs). The gates (``min_psnr``, ``max_lsb``) apply to
every image of every pair, so a single bad image fails the run and is named.

Every backend sees identical inputs: PyTorch is run through the same padding/tiling as
the ONNX model it is compared with (:func:`itm_onnx.runner.predict_with`). Without
``images``, a held-out set is rendered from the synthetic scene generator with
``VALIDATION_SEED`` (the calibration set uses ``CALIBRATION_SEED``, and the scenes come
from the ``test`` split, which calibration never draws from) at the model's input size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .data.images import DEFAULT_MAX_PIXELS, ImageError, load_ldr
from .errors import ItmOnnxError, UsageError
from .run_batch import collect_inputs
from .runner import (
    DEFAULT_OUTPUT_BITS,
    Geometry,
    Runner,
    output_codes,
    predict_with,
)
from .utils.atomic import atomic_output

VALIDATION_SEED = 7  # held-out synthetic images; differs from data.CALIBRATION_SEED (2021)
DEFAULT_SIZE = (256, 256)  # synthetic image size when no model has a fixed shape
BACKENDS = ("pytorch", "fp32", "quantized")  # reference order: earlier is the reference
HISTOGRAM_BUCKETS = ((0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, None))


def bucket_label(low: int, high: int | None) -> str:
    if high is None:
        return f">={low}"
    return str(low) if low == high else f"{low}-{high}"


# --- the maths --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fidelity:
    """How closely a candidate's code values follow a reference's (see module docstring)."""

    pixels: int
    psnr_db: float
    mse: float  # mean squared code difference over channel values (kept for pooling)
    max_abs: int
    mean_abs: float
    histogram: dict[str, int]
    within_1: float
    within_4: float
    peak: int = (1 << DEFAULT_OUTPUT_BITS) - 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; an infinite PSNR (identical outputs) becomes null."""
        data = asdict(self)
        data["psnr_db"] = None if math.isinf(self.psnr_db) else round(self.psnr_db, 3)
        return data


def psnr_from_mse(mse: float, peak: int) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def compare_codes(reference: np.ndarray, candidate: np.ndarray,
                  bits: int = DEFAULT_OUTPUT_BITS) -> Fidelity:
    """Compare two HxWx3 (or ...x3) arrays of integer code values."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape or reference.ndim < 2 or reference.shape[-1] != 3:
        raise ValueError(f"cannot compare outputs of shapes {reference.shape} and "
                         f"{candidate.shape} (need equal ...x3 shapes)")
    diff = np.abs(reference.astype(np.int32) - candidate.astype(np.int32))
    per_pixel = diff.max(axis=-1).ravel()
    if per_pixel.size == 0:
        raise ValueError("cannot compare empty outputs")
    peak = (1 << bits) - 1
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    histogram = {}
    for low, high in HISTOGRAM_BUCKETS:
        inside = per_pixel >= low if high is None else (per_pixel >= low) & (per_pixel <= high)
        histogram[bucket_label(low, high)] = int(np.count_nonzero(inside))
    return Fidelity(
        pixels=int(per_pixel.size), psnr_db=psnr_from_mse(mse, peak), mse=mse,
        max_abs=int(diff.max()), mean_abs=float(diff.mean()), histogram=histogram,
        within_1=float(np.mean(per_pixel <= 1)), within_4=float(np.mean(per_pixel <= 4)),
        peak=peak,
    )


def compare_outputs(reference: np.ndarray, candidate: np.ndarray,
                    bits: int = DEFAULT_OUTPUT_BITS) -> Fidelity:
    """Compare two network outputs in [0, 1] on the ``bits``-bit code scale they ship at."""
    return compare_codes(output_codes(reference, bits), output_codes(candidate, bits), bits)


def pool(figures: Sequence[Fidelity]) -> Fidelity:
    """Overall figures of several images, as if all their pixels were one image."""
    if not figures:
        raise ValueError("nothing to pool")
    pixels = sum(f.pixels for f in figures)
    share = [f.pixels / pixels for f in figures]
    mse = sum(f.mse * s for f, s in zip(figures, share, strict=True))
    histogram = {key: sum(f.histogram[key] for f in figures) for key in figures[0].histogram}
    return Fidelity(
        pixels=pixels, psnr_db=psnr_from_mse(mse, figures[0].peak), mse=mse,
        max_abs=max(f.max_abs for f in figures),
        mean_abs=sum(f.mean_abs * s for f, s in zip(figures, share, strict=True)),
        histogram=histogram,
        within_1=sum(f.within_1 * s for f, s in zip(figures, share, strict=True)),
        within_4=sum(f.within_4 * s for f, s in zip(figures, share, strict=True)),
        peak=figures[0].peak,
    )


# --- the job ----------------------------------------------------------------------------


@dataclass
class ValidateConfig:
    """What ``itm-onnx validate`` compares and how; the defaults are the CLI's."""

    checkpoint: Path | None = None  # PyTorch reference (itm-onnx .safetensors)
    fp32: Path | None = None  # fp32 ONNX export
    quantized: Path | None = None  # quantized ONNX (QDQ)
    images: Path | None = None  # folder or file of LDR images; None: held-out synthetic set
    count: int = 8  # synthetic images
    seed: int = VALIDATION_SEED
    size: tuple[int, int] | None = None  # synthetic (H, W); None: the model's fixed shape
    report: Path | None = Path("validate-report.png")  # visual report; None: none
    report_rows: int = 16  # at most this many images in the report
    min_psnr: float | None = None  # gate: every image of every pair reaches this PSNR (dB)
    max_lsb: int | None = None  # gate: no code value of any pair differs by more
    providers: tuple[str, ...] = ("cpu",)
    threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class PairResult:
    reference: str
    candidate: str
    overall: Fidelity
    per_image: dict[str, Fidelity]

    @property
    def name(self) -> str:
        return f"{self.reference} vs {self.candidate}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "overall": self.overall.to_dict(),
            "per_image": {name: f.to_dict() for name, f in self.per_image.items()},
        }


@dataclass
class ValidateReport:
    models: dict[str, str]
    images: dict[str, Any]
    pairs: list[PairResult]
    thresholds: dict[str, float | int | None]
    failures: list[str] = field(default_factory=list)
    report: str | None = None
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "images": self.images,
            "pairs": [pair.to_dict() for pair in self.pairs],
            "thresholds": self.thresholds,
            "passed": self.passed,
            "failures": self.failures,
            "report": self.report,
            "notices": self.notices,
            "seconds": self.seconds,
        }


Predict = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 -> HxWx3 float32 in [0, 1]


@dataclass
class Backends:
    """The models being compared, in reference order, with what to tell the user."""

    predict: dict[str, Predict]
    paths: dict[str, str]
    fixed_size: tuple[int | None, int | None]
    notices: list[str]


def load_backends(config: ValidateConfig) -> Backends:
    """Open the ONNX models, and the checkpoint behind the first one's geometry."""
    given = {"pytorch": config.checkpoint, "fp32": config.fp32, "quantized": config.quantized}
    given = {name: path for name, path in given.items() if path is not None}
    if len(given) < 2:
        raise UsageError("validate needs at least two of --checkpoint, --fp32, --quantized")
    # Two full-resolution sessions side by side: each gives its working memory back after
    # every run, so the peak is one run's, not the sum of both arenas.
    runners = {name: Runner(given[name], config.providers, config.threads, release_memory=True)
               for name in ("fp32", "quantized") if name in given}
    notices = [f"{name}: {notice}" for name, runner in runners.items()
               for notice in runner.notices]
    first = next(iter(runners.values()))
    predict: dict[str, Predict] = {}
    if "pytorch" in given:
        predict["pytorch"] = _torch_predictor(given["pytorch"], first.geometry, config.threads)
    predict.update({name: runner.predict for name, runner in runners.items()})
    sizes = {runner.info.fixed_size for runner in runners.values()}
    if len(sizes) > 1:
        notices.append("the ONNX models have different input shapes: each tiles/pads to its own")
    return Backends(predict, {name: str(path) for name, path in given.items()},
                    first.info.fixed_size, notices)


def _torch_predictor(checkpoint: Path, geometry: Geometry, threads: int | None) -> Predict:
    """PyTorch inference through the ONNX model's geometry (torch imported only here)."""
    import torch

    from .checkpoint import read_checkpoint_metadata
    from .models import create_model

    name = read_checkpoint_metadata(checkpoint).get("model", "?")
    model = create_model(name, checkpoint=checkpoint).eval()

    def infer(batch: np.ndarray) -> np.ndarray:
        previous = torch.get_num_threads()  # torch's setting is process-wide: restore it
        torch.set_num_threads(threads or previous)
        try:
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()
        finally:
            torch.set_num_threads(previous)

    return lambda rgb: predict_with(infer, rgb, geometry)


def heldout_images(count: int, size: tuple[int, int], seed: int = VALIDATION_SEED
                   ) -> Iterator[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8) of ``count`` synthetic LDR photos, made like the calibration set
    (random tone mapping, +-1.5 stops of exposure, sensor noise) from test-split scenes."""
    from .data.calibration import EXPOSURE_STOPS
    from .data.synthetic import build_scene, render, scene_seed
    from .data.tonemap import expose, random_tmo, to_8bit

    for index in range(count):
        scene = build_scene(scene_seed(seed, "test", index))
        rng = np.random.default_rng([seed, index])
        ldr, operator = random_tmo(render(scene, *size), rng)
        stops = float(rng.uniform(-EXPOSURE_STOPS, EXPOSURE_STOPS))
        rgb = to_8bit(expose(ldr, stops), rng, noise=True)
        yield f"heldout_{index:03d}_{scene.kind}_{operator}", rgb


def folder_images(source: Path, max_pixels: int, skipped: list[dict[str, str]]
                  ) -> Iterator[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8) of every decodable image; the others go to ``skipped``."""
    files, _ = collect_inputs([source])
    for path in files:
        try:
            image = load_ldr(path, max_pixels=max_pixels)
        except ImageError as exc:
            skipped.append({"path": str(path), "error": " ".join(str(exc.reason).split())})
            continue
        yield path.name, image.rgb


def synthetic_size(config: ValidateConfig, fixed: tuple[int | None, int | None]) -> tuple[int, int]:
    if config.size is not None:
        return config.size
    return (fixed[0] or DEFAULT_SIZE[0], fixed[1] or DEFAULT_SIZE[1])


def check_config(config: ValidateConfig) -> None:
    if config.count < 1:
        raise UsageError(f"--count must be >= 1, got {config.count}")
    if config.size is not None and min(config.size) < 1:
        raise UsageError(f"--size must be positive, got {config.size}")
    if config.images is not None and not Path(config.images).exists():
        raise UsageError(f"--images {config.images}: not found")
    if config.report is not None and not Path(config.report).parent.is_dir():
        raise UsageError(f"report folder {Path(config.report).parent} does not exist")


def validate(config: ValidateConfig, log: Callable[[str], None] = lambda _: None
             ) -> ValidateReport:
    """Run every backend on every image, compare every pair, write the report, gate."""
    started = time.perf_counter()
    check_config(config)
    backends = load_backends(config)
    for notice in backends.notices:
        log(f"note: {notice}")
    names = list(backends.predict)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    skipped: list[dict[str, str]] = []
    if config.images is None:
        height, width = synthetic_size(config, backends.fixed_size)
        images = heldout_images(config.count, (height, width), config.seed)
        source = {"source": "synthetic held-out", "seed": config.seed,
                  "size": [width, height]}
    else:
        images = folder_images(config.images, config.max_pixels, skipped)
        source = {"source": str(config.images)}
    per_pair: dict[tuple[str, str], dict[str, Fidelity]] = {pair: {} for pair in pairs}
    report_rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    for name, rgb in images:
        outputs = {backend: predict(rgb) for backend, predict in backends.predict.items()}
        codes = {backend: output_codes(y) for backend, y in outputs.items()}
        figures = {pair: compare_codes(codes[pair[0]], codes[pair[1]]) for pair in pairs}
        for pair, fidelity in figures.items():
            per_pair[pair][name] = fidelity
        log(f"{name} {rgb.shape[1]}x{rgb.shape[0]}: " + "; ".join(
            f"{a} vs {b} {_psnr_text(f.psnr_db)}, max {f.max_abs}"
            for (a, b), f in figures.items()))
        if config.report is not None and len(report_rows) < config.report_rows:
            report_rows.append(report_cells(rgb, outputs, codes, pairs))
            row_labels.append(f"{name}  " + "  ".join(
                f"{a}/{b} {_psnr_text(f.psnr_db)} max {f.max_abs}"
                for (a, b), f in figures.items()))
    if not per_pair[pairs[0]]:
        raise ItmOnnxError(f"no usable image in {config.images}"
                           + (f" (first: {skipped[0]['path']}: {skipped[0]['error']})"
                              if skipped else ""))
    results = [PairResult(a, b, pool(list(per_pair[(a, b)].values())), per_pair[(a, b)])
               for a, b in pairs]
    first_pair = results[0].per_image
    source.update(count=len(first_pair), names=list(first_pair), skipped=skipped)
    report = ValidateReport(
        models=backends.paths, images=source, pairs=results,
        thresholds={"min_psnr": config.min_psnr, "max_lsb": config.max_lsb},
        notices=backends.notices,
    )
    report.failures = gate(results, config.min_psnr, config.max_lsb)
    if config.report is not None:
        header = ["input", *names,
                  *(f"|{a}-{b}|\nlog, white >= {ERROR_FULL_SCALE} codes" for a, b in pairs)]
        write_report(Path(config.report), header, row_labels, report_rows)
        report.report = str(config.report)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _psnr_text(psnr: float) -> str:
    return "identical" if math.isinf(psnr) else f"{psnr:.2f} dB"


def gate(results: Sequence[PairResult], min_psnr: float | None, max_lsb: int | None
         ) -> list[str]:
    """One line per failed check: pair, image and figure."""
    failures = []
    for pair in results:
        for image, fidelity in pair.per_image.items():
            if min_psnr is not None and fidelity.psnr_db < min_psnr:
                failures.append(f"{pair.name}: PSNR {fidelity.psnr_db:.2f} dB < --min-psnr "
                                f"{min_psnr:g} on {image}")
            if max_lsb is not None and fidelity.max_abs > max_lsb:
                failures.append(f"{pair.name}: max error {fidelity.max_abs} codes > --max-lsb "
                                f"{max_lsb} on {image}")
    return failures


# --- the visual report ------------------------------------------------------------------

CELL = 192  # each picture is fitted into a CELL x CELL box
MARGIN = 8
HEADER = 30  # column titles (two lines)
LABEL = 16  # per-row caption (image name and figures)
ERROR_FULL_SCALE = 16  # error maps: 16 codes (the >=16 bucket) and more are white
BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)


def report_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of a report with this many image rows and columns."""
    width = MARGIN + columns * (CELL + MARGIN)
    height = HEADER + MARGIN + rows * (LABEL + CELL + MARGIN)
    return width, height


def report_cells(rgb: np.ndarray, outputs: dict[str, np.ndarray],
                 codes: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]]
                 ) -> list[np.ndarray]:
    """One report row, as CELL-fitted uint8 pictures: input, outputs, error maps."""
    cells = [fit_picture(rgb)]
    cells += [fit_picture(np.round(y * 255.0).astype(np.uint8)) for y in outputs.values()]
    for a, b in pairs:
        diff = np.abs(codes[a].astype(np.int32) - codes[b].astype(np.int32)).max(axis=-1)
        cells.append(fit_picture(error_colours(diff), reduce_max=True))
    return cells


def error_colours(diff: np.ndarray) -> np.ndarray:
    """HxW code differences -> HxWx3 heat colours: black 0, then red, yellow, white >= 16.

    The scale is logarithmic, one step per histogram bucket, so that a single code of
    difference is clearly visible (dark red) rather than lost at 1/16 brightness.
    """
    t = np.clip(np.log2(1.0 + diff.astype(np.float32)) / math.log2(1 + ERROR_FULL_SCALE),
                0.0, 1.0)
    red = np.clip(3.0 * t, 0.0, 1.0)
    green = np.clip(3.0 * t - 1.0, 0.0, 1.0)
    blue = np.clip(3.0 * t - 2.0, 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=-1) * 255.0).astype(np.uint8)


def fit_picture(picture: np.ndarray, reduce_max: bool = False) -> np.ndarray:
    """Scale into the CELL box, keeping the aspect ratio. Error maps shrink by block
    maximum, so that a single bad pixel still shows; pictures by area averaging."""
    height, width = picture.shape[:2]
    scale = CELL / max(height, width)
    if reduce_max and scale < 1.0:
        factor = math.ceil(1.0 / scale)
        pad_h, pad_w = -height % factor, -width % factor
        padded = np.pad(picture, ((0, pad_h), (0, pad_w), (0, 0)))
        blocks = padded.reshape(padded.shape[0] // factor, factor,
                                padded.shape[1] // factor, factor, 3)
        picture = blocks.max(axis=(1, 3))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1.0 or reduce_max else Image.Resampling.BOX
    return np.asarray(Image.fromarray(picture).resize(size, resample))


def write_report(path: Path, header: Sequence[str], labels: Sequence[str],
                 rows: Sequence[Sequence[np.ndarray]]) -> None:
    """A grid: column titles, then per image a caption and its cells (Pillow only)."""
    width, height = report_size(len(rows), len(header))
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(header):
        draw.text((MARGIN + column * (CELL + MARGIN), 4), title, fill=TEXT)
    for row, (label, cells) in enumerate(zip(labels, rows, strict=True)):
        top = HEADER + MARGIN + row * (LABEL + CELL + MARGIN)
        draw.text((MARGIN, top + 2), label, fill=TEXT)
        for column, cell in enumerate(cells):
            left = MARGIN + column * (CELL + MARGIN)
            offset_x = (CELL - cell.shape[1]) // 2
            offset_y = (CELL - cell.shape[0]) // 2
            canvas.paste(Image.fromarray(cell), (left + offset_x, top + LABEL + offset_y))
    try:
        with atomic_output(path) as tmp:
            canvas.save(tmp, format="PNG")
    except OSError as exc:
        raise ItmOnnxError(f"cannot write report {path}: {exc.strerror or exc}") from None
