"""Calibration: images -> activation ranges (ONNX Runtime's ``TensorsData``), cached.

Calibration is separate from quantization, as in ONNX Runtime's own tools: the ranges
of every float tensor of the (rewritten) float model are computed once per
(model, images, method, input shape, settings) and stored in ORT's own cache format
(``save_tensors_data``), so that quantizing again with another scheme or option passes
the cached file to ``quantize_static(calibration_cache_path=...)`` and runs no model.
Every float tensor is calibrated, not only those one scheme quantizes, so that one
cache serves all schemes.

Images are fitted to the model's input shape: scaled (bilinear, aspect ratio kept) so
that they cover it, then centre-cropped; a model with dynamic height/width is
calibrated at ``DEFAULT_DYNAMIC_SIZE``. Each distinct fitting decision is logged once.
Files that are not images (by suffix) are ignored and listed; image files that cannot
be decoded are counted as unusable and named; fewer usable images than
``min_images`` is an error. When there are more than ``max_images``, a seeded draw
picks which ones are used, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import (
    TensorData,
    TensorsData,
    create_calibrator,
    load_tensors_data,
    save_tensors_data,
)
from PIL import Image

from ..data.images import ImageError, load_ldr
from ..errors import ItmOnnxError, UsageError
from ..utils.atomic import atomic_output
from ..utils.progress import track
from .ranges import (
    RangeCollector,
    calibration_model,
    float_tensors,
    global_tensors,
    range_aliases,
    size_agnostic,
)

log = logging.getLogger(__name__)

DEFAULT_DYNAMIC_SIZE = (256, 256)  # (height, width) for models with dynamic H/W
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# Pixels of activations the histogram calibrators may hold at once (one chunk of images).
_CHUNK_PIXELS = 2_000_000


@dataclass(frozen=True)
class CalibrationSettings:
    """How ranges are computed; every field is part of the cache key."""

    # One of METHODS. Percentile (asymmetric) clips the rare outliers that stretch
    # minmax ranges of the trained model's low-resolution ReLU6 outputs (SQNR 5 dB there):
    # --mixed at 1088x1920 went from 32.1 to 37.8 dB against fp32 on the same 4 held-out
    # images with images upscaled to the input size. Entropy calibration ran over 12
    # minutes there and was not measured further (it still uses ORT's calibrator).
    method: str = "percentile"
    min_images: int = 16
    max_images: int = 64
    seed: int = 0  # which images are drawn when there are more than max_images
    # Histogram settings handed to ORT's calibrators. ORT's entropy defaults (128 bins,
    # 128 quantized bins) leave a single candidate threshold, i.e. plain min/max.
    entropy_bins: int = 512
    entropy_quantized_bins: int = 128
    # Measured at native scale (the default below), --mixed 1088x1920 vs fp32 on validate's
    # 4 held-out images (seed 7) / bench's 4 (seed 0) / pooled: 99.999: 33.5 / 31.6 /
    # 32.4 dB; 99.99: 36.9 / 29.3 / 31.6; 99.95: 38.7 / 26.9 / 29.6; 99.9: 39.0 / 26.0 /
    # 28.8; minmax: 31.4 / 31.9 / 31.6. The two sets disagree, so the best pooled value
    # is kept (upscaled images, before: 37.8 / 27.7 / ~30.3).
    percentile: float = 99.999
    percentile_bins: int = 2048
    # Asymmetric ranges: ORT's percentile default (symmetric) would give ReLU outputs a
    # range of [-t, t] and leave half of the uint8 codes unused. True: [-t, t] with t the
    # larger magnitude of the two ends (of ORT's calibrator's for entropy).
    symmetric: bool = False
    # Images at their own pixel scale on a copy of the graph with symbolic height/width
    # (ranges.py), centre-cropped to a multiple of ``stride``, to at most the model's
    # input size and to ``max_pixels``: calibration cost follows the images, not the
    # export's resolution (64 images upscaled to 1088x1920 took ~20 min on 2 cores).
    # False, or a graph that may hold size-dependent constants: fitted as before.
    native_scale: bool = True
    stride: int = 32  # MQNet downsamples 5 times
    max_pixels: int = 544 * 960
    # Tensors that see whole-image statistics (channel attention's pooled FC layers)
    # calibrated at the model's input size on this many images, fitted to it (0: at
    # native scale with the rest). Measured not to matter for MQNet at 1088x1920: 4
    # images changed validate's figure by +0.03 dB (99.999) and +0.01 dB (99.9).
    global_images: int = 0

    def ort_options(self) -> dict[str, Any]:
        """The ``extra_options`` of ``create_calibrator`` for this method."""
        if self.method == "entropy":
            return {"num_bins": self.entropy_bins, "num_quantized_bins":
                    self.entropy_quantized_bins, "symmetric": self.symmetric}
        if self.method == "percentile":
            return {"num_bins": self.percentile_bins, "percentile": self.percentile,
                    "symmetric": self.symmetric}
        return {"symmetric": self.symmetric}


@dataclass
class CalibrationImages:
    """The images of a calibration folder: which are used, skipped or ignored, and why."""

    folder: Path
    used: list[Path]
    rgb: list[np.ndarray] = field(repr=False)
    unusable: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # not an image file name
    not_drawn: int = 0  # usable but left out by the seeded draw (more than max_images)

    def digest(self) -> str:
        """Content hash of the images used (names and bytes), for the cache key."""
        h = hashlib.sha256()
        for path in self.used:
            h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "used": len(self.used),
            "unusable": [{"file": p.name, "reason": r} for p, r in self.unusable],
            "ignored_non_images": [p.name for p in self.ignored],
            "not_drawn": self.not_drawn,
        }


def load_calibration_images(folder: Path, settings: CalibrationSettings) -> CalibrationImages:
    """Decode every image of ``folder`` (raises UsageError if too few are usable)."""
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"calibration folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"calibration path {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    candidates = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    images = CalibrationImages(folder, [], [], ignored=[p for p in files if p not in candidates])
    for path in candidates:
        try:
            loaded = load_ldr(path)
        except ImageError as exc:
            images.unusable.append((path, exc.reason))
            log.warning("calibration: skipped %s", exc)
            continue
        images.used.append(path)
        images.rgb.append(loaded.rgb)
    _check_count(images, settings)
    if len(images.used) > settings.max_images:
        keep = np.sort(np.random.default_rng(settings.seed).choice(
            len(images.used), settings.max_images, replace=False))
        images.not_drawn = len(images.used) - settings.max_images
        images.used = [images.used[i] for i in keep]
        images.rgb = [images.rgb[i] for i in keep]
    return images


def _check_count(images: CalibrationImages, settings: CalibrationSettings) -> None:
    found = len(images.used)
    if found >= settings.min_images:
        return
    details = []
    if images.unusable:
        named = ", ".join(f"{p.name} ({r})" for p, r in images.unusable[:3])
        more = len(images.unusable) - 3
        details.append(f"{len(images.unusable)} unusable: {named}"
                       + (f" and {more} more" if more > 0 else ""))
    if images.ignored:
        details.append(f"{len(images.ignored)} non-image file(s) ignored")
    raise UsageError(
        f"calibration folder {images.folder} has {found} usable image(s), at least "
        f"{settings.min_images} are needed" + (f" ({'; '.join(details)})" if details else "")
        + "; pass --calibration DIR with more images"
    )


def fit_to_shape(rgb: np.ndarray, height: int, width: int) -> tuple[np.ndarray, str]:
    """Scale ``rgb`` (HxWx3 uint8) to cover height x width, centre-crop; return NCHW float32
    in [0, 1] and a one-line description of what was done."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return _to_nchw(rgb), f"{w}x{h}: used as is"
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    image = Image.fromarray(rgb)
    if (new_h, new_w) != (h, w):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    cropped = np.asarray(image)[top:top + height, left:left + width]
    action = f"scaled x{scale:.3g} (bilinear) to {new_w}x{new_h}" if scale != 1 else "not scaled"
    crop = f", centre-cropped to {width}x{height}" if (new_h, new_w) != (height, width) else ""
    return _to_nchw(cropped), f"{w}x{h} -> {width}x{height}: {action}{crop}"


def _to_nchw(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


class ImageReader(CalibrationDataReader):
    """ORT calibration data reader over decoded images, fitted to the model's input shape.

    Images are fitted lazily (a full-resolution float image is 25 MB) and each distinct
    fitting decision is logged once.
    """

    def __init__(self, rgb: list[np.ndarray], input_name: str, shape: tuple[int, int]) -> None:
        self.rgb, self.input_name, self.shape = rgb, input_name, shape
        self.decisions: dict[str, int] = {}
        self._range = (0, len(rgb))
        self._next = 0

    def __len__(self) -> int:
        return len(self.rgb)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = (start_index, min(end_index, len(self.rgb)))
        self._next = start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._range[1]:
            return None
        array, decision = fit_to_shape(self.rgb[self._next], *self.shape)
        self._next += 1
        if decision not in self.decisions:
            log.info("calibration image fitting: %s", decision)
        self.decisions[decision] = self.decisions.get(decision, 0) + 1
        return {self.input_name: array}

    def rewind(self) -> None:
        self.set_range(0, len(self.rgb))


def native_crop(rgb: np.ndarray, limit: tuple[int, int], stride: int,
                max_pixels: int) -> tuple[np.ndarray, str]:
    """Centre-crop ``rgb`` (HxWx3 uint8), never scaled, to a multiple of ``stride`` in
    each side, at most ``limit`` = (height, width) and ``max_pixels``; NCHW float32 in
    [0, 1] and a one-line description. Raises ValueError when a side is below ``stride``."""
    h, w = rgb.shape[:2]
    new_h, new_w = min(h, limit[0]), min(w, limit[1])
    if new_h * new_w > max_pixels:  # same aspect ratio, smaller window
        factor = math.sqrt(max_pixels / (new_h * new_w))
        new_h, new_w = int(new_h * factor), int(new_w * factor)
    new_h, new_w = new_h // stride * stride, new_w // stride * stride
    if new_h == 0 or new_w == 0:
        raise ValueError(f"{w}x{h} is smaller than the network's stride {stride}")
    top, left = (h - new_h) // 2, (w - new_w) // 2
    decision = (f"{w}x{h}: native scale, used as is" if (new_h, new_w) == (h, w) else
                f"{w}x{h} -> {new_w}x{new_h}: native scale, centre-cropped")
    return _to_nchw(rgb[top:top + new_h, left:left + new_w]), decision


class FeedReader(CalibrationDataReader):
    """ORT data reader over prepared NCHW arrays (images of any size)."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]) -> None:
        self.input_name, self.arrays, self._next = input_name, arrays, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.arrays):
            return None
        self._next += 1
        return {self.input_name: self.arrays[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def native_arrays(images: CalibrationImages, limit: tuple[int, int],
                  settings: CalibrationSettings, count: int | None = None) -> list[np.ndarray]:
    """The first ``count`` images as calibrated at native scale (``native_crop``)."""
    return [native_crop(rgb, limit, settings.stride, settings.max_pixels)[0]
            for rgb in images.rgb[:count]]


def cache_key(model_sha256: str, images_digest: str, shape: tuple[int, int],
              settings: CalibrationSettings, tensors: list[str] | None = None) -> str:
    """Everything the ranges depend on, hashed (the ORT minor version included)."""
    fields = {
        "model": model_sha256,
        "images": images_digest,
        "shape": list(shape),
        "settings": asdict(settings),
        "onnxruntime": ".".join(ort.__version__.split(".")[:2]),
        "format": 2,  # 2: streaming ranges (ranges.py); 1: ORT's calibrators on fitted images
    }
    if tensors is not None:
        fields["tensors"] = hashlib.sha256("\0".join(tensors).encode()).hexdigest()
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class CalibrationResult:
    """Where the ranges are (ORT cache format) and how they were obtained."""

    ranges_path: Path
    key: str
    cached: bool
    info: dict[str, Any]


def calibrate(model_path: Path, model_sha256: str, input_name: str, shape: tuple[int, int],
              images: CalibrationImages, settings: CalibrationSettings,
              cache_dir: Path, nodes: list[str] | None = None) -> CalibrationResult:
    """Ranges of the float tensors that ``nodes`` (None: all nodes) read or write, of
    ``model_path``, from the cache or by running it; ``shape`` is the model's input size
    (or where a dynamic model is calibrated when images are fitted)."""
    model = onnx.load(str(model_path))
    names = float_tensors(model, nodes)
    key = cache_key(model_sha256, images.digest(), shape, settings, names)
    ranges_path = cache_dir / f"{key}.json"
    info_path = cache_dir / f"{key}.info.json"
    if ranges_path.is_file() and info_path.is_file():
        try:
            load_tensors_data(ranges_path)
            info = json.loads(info_path.read_text())
            log.info("calibration: cached ranges %s", ranges_path)
            return CalibrationResult(ranges_path, key, True, info)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("calibration cache %s unreadable (%s); calibrating again", ranges_path, exc)
    info: dict[str, Any] = {"key": key, "method": settings.method, "shape": list(shape),
                            "images": images.summary(), "tensors": len(names)}
    if settings.method == "entropy":
        reader = ImageReader(images.rgb, input_name, shape)
        ranges = _run_calibrator(model_path, reader, shape, settings)
        info.update(scale="fitted to the input shape (entropy: ORT's calibrator)",
                    fitting=reader.decisions)
    else:
        aliases = range_aliases(model, names, nodes)
        measured = [n for n in names if n not in aliases]
        ranges = _stream_ranges(model, measured, input_name, shape, images, settings, info)
        ranges = TensorsData(ranges.calibration_method, {
            n: ranges[aliases.get(n, n)] for n in names if aliases.get(n, n) in ranges})
        info["tensors_measured"] = len(measured)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(ranges_path) as tmp:
            save_tensors_data(ranges, tmp)
        with atomic_output(info_path) as tmp:
            tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise ItmOnnxError(f"cannot write the calibration cache in {cache_dir}: {exc}") from None
    return CalibrationResult(ranges_path, key, False, info)


def _stream_ranges(model: onnx.ModelProto, names: list[str], input_name: str,
                   shape: tuple[int, int], images: CalibrationImages,
                   settings: CalibrationSettings, info: dict[str, Any]) -> TensorsData:
    """Min/max or percentile ranges (ranges.py), images at native scale when the graph
    allows it; tensors that see whole-image statistics at the deployed size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    fixed = all(d.HasField("dim_value") for d in dims[2:])
    why_not = size_agnostic(model) if settings.native_scale else "native_scale is off"
    native = why_not is None or not fixed
    if native:
        limit = shape if fixed else (sys.maxsize, sys.maxsize)
        feeds, decisions = _native_feeds(images, limit, settings)
    else:
        log.info("calibration: images fitted to %dx%d (%s)", shape[1], shape[0], why_not)
        feeds, decisions = _fitted_feeds(images, shape)
    whole_image = global_tensors(model, names) if native and fixed else []
    deployed_images = min(settings.global_images, len(images.rgb)) if whole_image else 0
    local = [n for n in names if n not in set(whole_image)] if deployed_images else names
    ranges = _collect(calibration_model(model, local, dynamic=native and fixed), input_name,
                      feeds, settings, "calibrating")
    info.update(scale="native" if native else "fitted to the input shape",
                fitting=decisions, pixels=sum(p for _, p in feeds))
    if why_not is not None and fixed:
        info["fitted_because"] = why_not
    if deployed_images:
        # Global pooling averages over the whole frame: a crop's mean is not the mean of
        # a deployed-size image, so these (tiny) tensors are calibrated at that size.
        fitted, _ = _fitted_feeds(images, shape, deployed_images)
        whole = _collect(calibration_model(model, whole_image, dynamic=False), input_name,
                         fitted, settings, f"calibrating at {shape[1]}x{shape[0]}")
        ranges = TensorsData(ranges.calibration_method, {**ranges.data, **whole.data})
    info.update(whole_image_tensors=len(whole_image), whole_image_images=deployed_images)
    return TensorsData(ranges.calibration_method, {n: ranges[n] for n in names if n in ranges})


def _native_feeds(images: CalibrationImages, limit: tuple[int, int],
                  settings: CalibrationSettings) -> tuple[list[tuple[np.ndarray, int]],
                                                          dict[str, int]]:
    """Each image centre-cropped at native scale (see ``native_crop``); decisions logged."""
    feeds, decisions = [], {}
    for path, rgb in zip(images.used, images.rgb, strict=True):
        try:
            array, decision = native_crop(rgb, limit, settings.stride, settings.max_pixels)
        except ValueError as exc:
            raise UsageError(f"calibration image {path.name}: {exc}") from None
        feeds.append((array, array.shape[2] * array.shape[3]))
        if decision not in decisions:
            log.info("calibration image fitting: %s", decision)
        decisions[decision] = decisions.get(decision, 0) + 1
    return feeds, decisions


def _fitted_feeds(images: CalibrationImages, shape: tuple[int, int],
                  count: int | None = None) -> tuple[list[tuple[np.ndarray, int]],
                                                     dict[str, int]]:
    """Each image scaled to cover ``shape`` and centre-cropped (``fit_to_shape``)."""
    reader = ImageReader(images.rgb[:count], "input", shape)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append((feed["input"], shape[0] * shape[1]))
    return feeds, reader.decisions


def _collect(model_bytes: bytes, input_name: str, feeds: list[tuple[np.ndarray, int]],
             settings: CalibrationSettings, desc: str) -> TensorsData:
    """Run the calibration model image by image, reducing its outputs as they come."""
    session = lean_session(model_bytes)
    outputs = [o.name for o in session.get_outputs()]
    collector = RangeCollector(settings.method, settings.percentile, len(feeds),
                               sum(p for _, p in feeds))
    for array, pixels in track(feeds, desc, total=len(feeds), unit="img"):
        values = session.run(outputs, {input_name: array})
        collector.add(dict(zip(outputs, values, strict=True)), pixels)
        del values
    ranges = collector.result(METHODS[settings.method])
    if settings.symmetric:
        for name, data in ranges.items():
            bound = np.float32(max(abs(data.lowest), abs(data.highest)))
            ranges.data[name] = TensorData(lowest=-bound, highest=bound)
    return ranges


def _run_calibrator(model_path: Path, reader: ImageReader, shape: tuple[int, int],
                    settings: CalibrationSettings) -> TensorsData:
    """Entropy only: ORT's calibrator, fed in chunks of images, so that its histograms
    (which keep every activation of a chunk) stay within memory at full resolution."""
    chunk = max(1, _CHUNK_PIXELS // (shape[0] * shape[1]))
    with tempfile.TemporaryDirectory(prefix="itm-onnx-calib-") as tmp, _quiet_stdout():
        calibrator = create_calibrator(
            Path(model_path),
            None,  # every float tensor: one cache serves every scheme
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[settings.method],
            # Chunks are fed through set_range below rather than ORT's
            # max_intermediate_outputs, which (1.31) clears the collected outputs of
            # MinMaxCalibrater without merging them into the ranges.
            extra_options=settings.ort_options(),
        )
        calibrator.infer_session = lean_session(calibrator.augmented_model_path)
        for start in range(0, len(reader), chunk):
            reader.set_range(start, start + chunk)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    return ranges


def lean_session(model: str | bytes) -> ort.InferenceSession:
    """A CPU session that returns memory between nodes (no arena, no memory pattern).

    ORT's calibrator session (every tensor feeds a ReduceMin/ReduceMax or is an output,
    optimizations off) peaked at 8.9 GB at 1088x1920 with ORT's defaults here, 4.7 GB
    this way; the calibrator uses the session through its ``infer_session`` attribute.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """ORT's histogram calibrators print progress on stdout; keep stdout for --json."""
    with contextlib.redirect_stdout(sys.stderr if log.isEnabledFor(logging.DEBUG) else _Null()):
        yield


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass
