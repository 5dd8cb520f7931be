"""The integrator's entry point: run an exported (fp32 or quantized) ONNX model on LDR photos.

:class:`Runner` wraps one ONNX Runtime session and turns any HxWx3 uint8 photo into the
network's HxWx3 float32 output in [0, 1], whatever the model's input shape; ``to_codes``
and ``to_linear`` turn that output into what gets stored. :func:`run_model` is the batch
job behind ``itm-onnx run``: files and folders in, 16-bit PNG and/or linear EXR/HDR out,
a per-file error list instead of an abort.

Sizes (the rules ``itm-onnx run --help`` documents):

* Dynamic height/width: the image is padded at the bottom and right to the next
  multiple of ``required_multiple`` (32 for MQNet, which downsamples 32x), run whole,
  and the output cropped back, so output size = input size for any size (517x333 too).
* Fixed shape HxW, per axis: a side that fits is padded up to the model's side; a longer
  side is covered by tiles of the model's side that overlap by at least a quarter of it
  (``tile_overlap``), spread evenly so that the last one ends on the border. Where tiles
  overlap their outputs are cross-faded linearly (weights sum to 1 everywhere), which
  hides seams. Tiling was chosen over resizing because resizing to the model's shape
  would throw away the resolution that 10-bit output is for. The limit: MQNet's channel
  attention and the head's InstanceNorm use statistics of the whole input, so each tile
  is normalised on its own content; the cross-fade smooths the transition but a big
  photo tiled is not bit-for-bit what a dynamic model would give on the whole photo.
  Export a dynamic model (or one at the photo's size) when that matters.
* Dynamic models are tiled too once a photo has more than ``max_tile_pixels``
  (``DEFAULT_MAX_TILE_PIXELS``, 4096 x 3072, so that a 12 MP phone photo still runs
  whole), with tiles of at most that many pixels, sides multiples of
  ``required_multiple``: ONNX Runtime's working memory grows with the input (an fp32
  MQNet export peaked at 6.4 GB for a 12 MP photo run whole, and at 8.2 GB for a 48 MP
  one in 9 tiles). 0 = never.

Padding is *reflect* padding (mirror without repeating the border pixel): unlike zeros or
a constant it keeps the padded area's statistics close to the image's own, which matters
because InstanceNorm and channel attention pool over the whole input, padding included.

Models without itm-onnx metadata (``itm_onnx.*`` properties) work with defaults: input =
the first graph input, output = the first output, multiple 32, output encoding unknown
(16-bit PNG only, no linear output); :attr:`Runner.notices` says so once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .data.encoding import ENCODINGS
from .data.hdr_io import write_hdr
from .data.images import save_png16
from .display import (
    DEFAULT_PEAK_NITS,
    DISPLAY_FORMATS,
    encode_display,
    write_display,
)
from .errors import ItmOnnxError, UsageError
from .onnx_meta import PREFIX, SESSION_OPTIONS_KEY, read_model_metadata

DEFAULT_MULTIPLE = 32  # MQNet downsamples 32x; used when a model carries no metadata
DEFAULT_OUTPUT_BITS = 10
TILE_OVERLAP_FRACTION = 0.25  # fixed-shape tiles overlap by at least this share of a side
DEFAULT_MAX_TILE_PIXELS = 4096 * 3072  # dynamic models: larger photos run in tiles this big
PROVIDER_SUFFIX = "ExecutionProvider"

# Output formats of `itm-onnx run`: name -> file suffix. The display formats (Ultra HDR,
# PQ AVIF, PQ PNG: itm_onnx.display) are what phones and browsers show as HDR.
FORMATS = {"png16": ".png", "exr": ".exr", "hdr": ".hdr", **DISPLAY_FORMATS}
LINEAR_FORMATS = frozenset({"exr", "hdr", *DISPLAY_FORMATS})

Infer = Callable[[np.ndarray], np.ndarray]  # 1x3xHxW float32 -> 1x3xHxW float32


# --- execution providers ----------------------------------------------------------------


def provider_short_name(provider: str) -> str:
    """``CPUExecutionProvider`` -> ``cpu``: the names the CLI takes and prints."""
    return provider.removesuffix(PROVIDER_SUFFIX).lower()


def available_providers() -> list[str]:
    """Short names of the execution providers this ONNX Runtime build can use."""
    return [provider_short_name(p) for p in ort.get_available_providers()]


def resolve_providers(names: Iterable[str]) -> list[str]:
    """Map short or full provider names (any case) to ORT's names, or raise UsageError.

    The message lists what this build has: the Linux x86 wheel has only the CPU (and
    Azure) providers, so asking for ``xnnpack`` or ``nnapi`` here is a usage error, not a
    crash deep inside ORT.
    """
    known = {provider_short_name(p): p for p in ort.get_all_providers()}
    known.update({p.lower(): p for p in ort.get_all_providers()})
    available = ort.get_available_providers()
    here = ", ".join(available_providers())
    resolved = []
    for name in names:
        full = known.get(name.strip().lower())
        if full is None:
            raise UsageError(f"unknown execution provider {name!r}; available here: {here}")
        if full not in available:
            raise UsageError(
                f"execution provider {name!r} ({full}) is not in this ONNX Runtime build; "
                f"available here: {here}"
            )
        if full not in resolved:
            resolved.append(full)
    if not resolved:
        raise UsageError(f"no execution provider given; available here: {here}")
    return resolved


# --- model contract ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the runner needs to know about a model, from its metadata or the defaults."""

    input_name: str
    output_name: str
    # Fixed input (height, width); None on an axis whose size is dynamic.
    fixed_size: tuple[int | None, int | None]
    multiple: int  # dynamic axes are padded to a multiple of this
    encoding: str | None  # key of ENCODINGS, or None when unknown
    output_bits: int
    input_dtype: str  # numpy dtype name of the input tensor
    has_metadata: bool
    session_options: dict[str, Any] = field(default_factory=dict)


_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


def _load_proto(path: Path) -> onnx.ModelProto:
    """Parse the model file (weights left on disk), or raise one UsageError line."""
    if not path.exists():
        raise UsageError(f"{path}: model file not found")
    if not path.is_file():
        raise UsageError(f"{path}: not a file (expected an .onnx model)")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: not an ONNX model ({detail})") from None
    if not proto.graph.input or not proto.graph.output:
        raise UsageError(f"{path}: not an ONNX model (no graph inputs or outputs)")
    return proto


def read_model_info(proto: onnx.ModelProto, source: str = "model") -> tuple[ModelInfo, list[str]]:
    """The model's I/O contract and the notices to show the user about it (once)."""
    meta = read_model_metadata(proto)
    notices: list[str] = []
    initializers = {init.name for init in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not graph_inputs:
        raise UsageError(f"{source}: the graph takes no input")
    input_name = meta.get("input_name") or graph_inputs[0].name
    output_name = meta.get("output_name") or proto.graph.output[0].name
    inputs = {i.name: i for i in graph_inputs}
    if input_name not in inputs or output_name not in {o.name for o in proto.graph.output}:
        raise UsageError(
            f"{source}: metadata names input {input_name!r} / output {output_name!r}, "
            "which the graph does not have"
        )
    tensor = inputs[input_name].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4 or dims[1] not in (None, 3) or tensor.elem_type not in _ONNX_DTYPES:
        shape = [d if d is not None else "?" for d in dims]
        raise UsageError(
            f"{source}: input {input_name!r} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}"
            f" {shape}; expected float [N, 3, H, W] (an image-to-image network)"
        )
    encoding = meta.get("output_encoding")
    if not meta:
        notices.append(
            f"{source} has no itm-onnx metadata: using defaults (input {input_name!r}, "
            f"output {output_name!r}, sides padded to a multiple of {DEFAULT_MULTIPLE}, "
            "output encoding unknown: 16-bit PNG only)"
        )
    elif encoding not in ENCODINGS:
        problem = ("names no output encoding" if encoding is None else
                   f"has output encoding {encoding!r}, unknown to this itm-onnx version")
        notices.append(f"{source} {problem}: 16-bit PNG only")
        encoding = None
    info = ModelInfo(
        input_name=input_name,
        output_name=output_name,
        fixed_size=(dims[2] or None, dims[3] or None),
        multiple=int(meta.get("required_multiple", DEFAULT_MULTIPLE)),
        encoding=encoding,
        output_bits=int(meta.get("output_bits", DEFAULT_OUTPUT_BITS)),
        input_dtype=_ONNX_DTYPES[tensor.elem_type],
        has_metadata=bool(meta),
        session_options=_parse_session_options(meta.get(SESSION_OPTIONS_KEY), source),
    )
    return info, notices


def _parse_session_options(text: str | None, source: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: {PREFIX}{SESSION_OPTIONS_KEY} is not JSON ({exc})") from None
    if not isinstance(options, dict):
        raise UsageError(f"{source}: {PREFIX}{SESSION_OPTIONS_KEY} must be a JSON object")
    return options


def build_session_options(recommended: dict[str, Any], threads: int | None
                          ) -> tuple[ort.SessionOptions, dict[str, Any], list[str]]:
    """SessionOptions from a model's recommended settings; ``threads`` wins over them.

    ``itm_onnx.session_options`` is a JSON object whose keys are
    ``ort.SessionOptions`` attributes (``"graph_optimization_level": "ORT_ENABLE_ALL"``,
    ``"intra_op_num_threads": 2``; enum values by name or number), session config
    entries (keys with a dot, e.g. ``"session.intra_op.allow_spinning": "0"``, or a
    ``"config_entries"`` object of them), and ``"disabled_optimizers"`` (a list of ORT
    optimizer names, e.g. ``["NchwcTransformer"]``, passed to the session). Returns the
    options, the session keyword arguments, and notices for keys that were skipped.
    """
    options = ort.SessionOptions()
    kwargs: dict[str, Any] = {}
    notices: list[str] = []
    entries = dict(recommended.get("config_entries", {}))
    for key, value in recommended.items():
        if key == "config_entries":
            continue
        if key == "disabled_optimizers":
            kwargs["disabled_optimizers"] = [str(v) for v in value]
        elif "." in key:
            entries[key] = value
        elif hasattr(options, key) and not callable(getattr(options, key)):
            try:
                setattr(options, key, _session_value(key, value))
            except (TypeError, ValueError, AttributeError) as exc:
                notices.append(f"recommended session option {key}={value!r} skipped ({exc})")
        else:
            notices.append(f"recommended session option {key!r} is unknown here; skipped")
    for key, value in entries.items():
        options.add_session_config_entry(key, str(value))
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options, kwargs, notices


_SESSION_ENUMS = {
    "graph_optimization_level": ort.GraphOptimizationLevel,
    "execution_mode": ort.ExecutionMode,
    "execution_order": ort.ExecutionOrder,
}


def _session_value(key: str, value: Any) -> Any:
    """JSON value -> what the SessionOptions attribute takes (enums by name or number)."""
    enum = _SESSION_ENUMS.get(key)
    if enum is None:
        return value
    if isinstance(value, str):
        name = value if value.startswith("ORT_") else "ORT_" + value.upper()
        if name not in enum.__members__:
            raise ValueError(f"choose one of {', '.join(enum.__members__)}")
        return enum.__members__[name]
    return enum(int(value))


# --- geometry: padding and tiling -------------------------------------------------------


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis maps onto model inputs: pad to ``padded``, cut tiles at ``starts``."""

    length: int  # the image's side
    padded: int  # side after reflect padding at the end (>= length)
    tile: int  # model input side
    starts: tuple[int, ...]  # tile offsets into the padded side

    def weights(self) -> list[np.ndarray]:
        """Per tile, cross-fade weights along this axis (all > 0).

        Where two tiles overlap, the earlier fades out and the later fades in linearly
        over the overlap; outside overlaps the weight is 1. They sum to 1 everywhere
        while no position lies in three tiles (overlaps under half a tile, as with the
        default); :func:`predict_with` divides by the sum anyway.
        """
        result = []
        for index, start in enumerate(self.starts):
            position = np.arange(self.tile, dtype=np.float32) + 0.5
            weight = np.ones(self.tile, np.float32)
            if index > 0:
                overlap = self.starts[index - 1] + self.tile - start
                weight = np.minimum(weight, position / overlap)
            if index < len(self.starts) - 1:
                overlap = start + self.tile - self.starts[index + 1]
                weight = np.minimum(weight, (self.tile - position) / overlap)
            result.append(weight)
        return result


def plan_axis(length: int, fixed: int | None, multiple: int,
              overlap_fraction: float = TILE_OVERLAP_FRACTION) -> AxisPlan:
    """Padding and tiles for one axis (the module docstring states the rules)."""
    if fixed is None:
        padded = math.ceil(length / multiple) * multiple
        return AxisPlan(length, padded, padded, (0,))
    if length <= fixed:
        return AxisPlan(length, fixed, fixed, (0,))
    overlap = max(1, math.ceil(fixed * overlap_fraction))
    count = math.ceil((length - overlap) / (fixed - overlap))
    starts = np.round(np.linspace(0, length - fixed, count)).astype(int)
    return AxisPlan(length, length, fixed, tuple(int(s) for s in starts))


@dataclass(frozen=True)
class Geometry:
    """How images of any size are fitted to a model: its fixed sides and padding multiple."""

    fixed_size: tuple[int | None, int | None] = (None, None)
    multiple: int = DEFAULT_MULTIPLE
    overlap_fraction: float = TILE_OVERLAP_FRACTION
    max_tile_pixels: int = DEFAULT_MAX_TILE_PIXELS  # dynamic sides only; 0 = never tile

    def plan(self, height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
        fixed_h, fixed_w = self._tile_sides(height, width)
        return (plan_axis(height, fixed_h, self.multiple, self.overlap_fraction),
                plan_axis(width, fixed_w, self.multiple, self.overlap_fraction))

    def _tile_sides(self, height: int, width: int) -> tuple[int | None, int | None]:
        """The model's fixed sides, or for a dynamic model over the pixel budget, tile
        sides (multiples of ``multiple``) in the photo's aspect with at most
        ``max_tile_pixels`` pixels."""
        if self.fixed_size != (None, None) or not self.max_tile_pixels:
            return self.fixed_size
        m = self.multiple
        padded_h, padded_w = math.ceil(height / m) * m, math.ceil(width / m) * m
        if padded_h * padded_w <= self.max_tile_pixels:
            return None, None
        tile_h = min(padded_h, math.sqrt(self.max_tile_pixels * height / width))
        tile_h = max(m, int(tile_h) // m * m)
        tile_w = max(m, min(padded_w, self.max_tile_pixels // tile_h) // m * m)
        return tile_h, tile_w

    def describe(self, height: int, width: int) -> str:
        """In words, what happens to an image of this size (for progress lines)."""
        rows, cols = self.plan(height, width)
        tiles = len(rows.starts) * len(cols.starts)
        if tiles > 1:
            return f"{tiles} tiles of {cols.tile}x{rows.tile}"
        if (rows.padded, cols.padded) != (height, width):
            return f"padded to {cols.padded}x{rows.padded}"
        return "as is"


def check_rgb_uint8(rgb: Any) -> np.ndarray:
    """Return ``rgb`` if it is a non-empty HxWx3 uint8 array, else raise UsageError."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8:
        given = f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}"
        raise UsageError(f"expected an HxWx3 uint8 RGB array, got {given}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UsageError(f"image has zero size ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb


def predict_with(infer: Infer, rgb: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Run ``infer`` on a uint8 photo of any size: pad or tile, blend, crop; clip to [0, 1].

    Shared by :class:`Runner` and by ``itm_onnx.validate`` (which runs PyTorch through
    the same geometry, so that every backend sees exactly the same inputs).
    """
    rgb = check_rgb_uint8(rgb)
    height, width = rgb.shape[:2]
    rows, cols = geometry.plan(height, width)
    image = rgb.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    image = np.pad(image, ((0, 0), (0, rows.padded - height), (0, cols.padded - width)),
                   mode="reflect")
    if len(rows.starts) == 1 and len(cols.starts) == 1:
        output = _infer_tile(infer, image)
    else:
        output = np.zeros_like(image)
        weight_sum = np.zeros(image.shape[1:], np.float32)
        for y, wy in zip(rows.starts, rows.weights(), strict=True):
            for x, wx in zip(cols.starts, cols.weights(), strict=True):
                tile = image[:, y:y + rows.tile, x:x + cols.tile]
                weight = wy[:, None] * wx[None, :]
                output[:, y:y + rows.tile, x:x + cols.tile] += _infer_tile(infer, tile) * weight
                weight_sum[y:y + rows.tile, x:x + cols.tile] += weight
        output /= weight_sum
    hwc = np.ascontiguousarray(output[:, :height, :width].transpose(1, 2, 0))
    return np.clip(hwc, 0.0, 1.0, out=hwc)


def _infer_tile(infer: Infer, chw: np.ndarray) -> np.ndarray:
    result = np.asarray(infer(np.ascontiguousarray(chw[None])), dtype=np.float32)
    if result.shape != (1, *chw.shape):
        raise ItmOnnxError(
            f"model output has shape {list(result.shape)} for input {[1, *chw.shape]}; "
            "expected the same shape (an image-to-image network)"
        )
    return result[0]


def output_codes(y: np.ndarray, bits: int = DEFAULT_OUTPUT_BITS) -> np.ndarray:
    """[0, 1] output -> integer code values round(y * (2**bits - 1)), as uint16."""
    peak = (1 << bits) - 1
    return np.round(np.clip(y, 0.0, 1.0) * peak).astype(np.uint16)


# --- the runner -------------------------------------------------------------------------


class Runner:
    """One ONNX model in one ONNX Runtime session, for photos of any size.

    >>> runner = Runner("mqnet.onnx")                 # doctest: +SKIP
    >>> y = runner.predict(rgb)                        # HxWx3 float32 in [0, 1]
    >>> codes = runner.to_codes(y)                     # HxWx3 uint16, 0..1023
    >>> radiance = runner.to_linear(y)                 # HxWx3 float32, linear

    ``providers`` are short (``"cpu"``) or full ORT names; ``threads`` sets ORT's
    intra-op threads (default: ORT's choice, or the model's recommendation). Session
    settings a quantized model recommends in its metadata are applied. ``notices``
    lists what the user should be told once (missing metadata, skipped settings).
    ``release_memory`` turns ORT's CPU memory arena off, so that a run's working memory
    goes back to the system when it ends (same outputs; each run allocates anew): for
    jobs that hold several sessions at once, such as ``validate``.
    """

    def __init__(self, model_path: str | Path, providers: Sequence[str] = ("cpu",),
                 threads: int | None = None,
                 overlap_fraction: float = TILE_OVERLAP_FRACTION,
                 release_memory: bool = False,
                 max_tile_pixels: int = DEFAULT_MAX_TILE_PIXELS) -> None:
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        if not 0.0 < overlap_fraction < 1.0:
            raise UsageError(f"tile overlap fraction must be in (0, 1), got {overlap_fraction}")
        if max_tile_pixels < 0:
            raise UsageError(f"max tile pixels must be >= 0 (0 = never tile), got "
                             f"{max_tile_pixels}")
        self.path = Path(model_path)
        self.providers = resolve_providers(providers)
        proto = _load_proto(self.path)
        self.info, self.notices = read_model_info(proto, str(self.path))
        del proto
        options, kwargs, skipped = build_session_options(self.info.session_options, threads)
        self.notices += skipped
        if release_memory:
            options.enable_cpu_mem_arena = False
        if None in self.info.fixed_size and "enable_mem_pattern" not in self.info.session_options:
            # ORT's memory pattern reserves a second, planned block per input shape on the
            # second run: an fp32 dynamic MQNet at 4096x3072 peaked at 11.1 GB with it and
            # 6.1 GB without, its third run 4.04 s against 4.10 (AMD EPYC Zen 4, 2 threads).
            # Photos of a batch differ in size, so the plan is rarely reused anyway.
            options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=self.providers, **kwargs)
        except Exception as exc:  # ORT raises its own exception types, all one story here
            detail = " ".join(str(exc).split())[:300]
            raise UsageError(f"{self.path}: ONNX Runtime cannot load the model ({detail})") \
                from None
        self.geometry = Geometry(self.info.fixed_size, self.info.multiple, overlap_fraction,
                                 max_tile_pixels)

    @property
    def encoding(self) -> str | None:
        """Name of the output encoding (``ENCODINGS`` key), None when unknown."""
        return self.info.encoding

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """One raw model call: 1x3xHxW float32 at a size the model accepts."""
        feed = batch.astype(self.info.input_dtype, copy=False)
        try:
            (output,) = self.session.run([self.info.output_name], {self.info.input_name: feed})
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ItmOnnxError(f"{self.path}: inference failed ({detail})") from None
        return output

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 sRGB photo -> HxWx3 float32 network output in [0, 1], same size."""
        return predict_with(self.infer, rgb, self.geometry)

    def to_codes(self, y: np.ndarray) -> np.ndarray:
        """Output -> uint16 code values round(y * 1023) (for the usual 10-bit output)."""
        return output_codes(y, self.info.output_bits)

    def to_linear(self, y: np.ndarray) -> np.ndarray:
        """Output -> float32 linear radiance, decoded per the model's ``output_encoding``."""
        if self.encoding is None:
            raise UsageError(
                f"{self.path}: the model's output encoding is unknown, so its output cannot "
                "be decoded to linear radiance (16-bit PNG codes only)"
            )
        return np.asarray(ENCODINGS[self.encoding].decode(y), dtype=np.float32)

    def encode(self, y: np.ndarray, fmt: str, rgb: np.ndarray | None = None, *,
               peak_nits: float = DEFAULT_PEAK_NITS) -> bytes:
        """Output -> bytes of an HDR display file: ``uhdr``, ``avif`` or ``png-pq``.

        ``rgb`` is the input photo (HxWx3 uint8): the Ultra HDR base image, so that SDR
        viewers see exactly that photo; without it the base is the HDR clipped at SDR
        white. The mapping to display light is :func:`itm_onnx.display.linear_to_display`.
        """
        return encode_display(fmt, self.to_linear(y), rgb, peak_nits=peak_nits)

    def write(self, path: str | Path, y: np.ndarray, fmt: str, rgb: np.ndarray | None = None,
              *, peak_nits: float = DEFAULT_PEAK_NITS, linear: np.ndarray | None = None) -> Path:
        """Output -> one file of any ``FORMATS`` entry, written atomically.

        ``linear``: ``to_linear(y)`` when the caller already has it (several formats of one
        output decode it once: 0.6 s per format on a 12 MP photo).
        """
        path = Path(path)
        if fmt == "png16":
            save_png16(path, self.to_codes(y))
        elif fmt in FORMATS:
            radiance = self.to_linear(y) if linear is None else linear
            if fmt in DISPLAY_FORMATS:
                write_display(path, fmt, radiance, rgb, peak_nits=peak_nits)
            else:
                write_hdr(path, radiance)
        else:
            raise UsageError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
        return path

    def describe(self) -> dict[str, Any]:
        """What was loaded, for reports."""
        rows, cols = self.info.fixed_size
        return {
            "path": str(self.path),
            "providers": [provider_short_name(p) for p in self.session.get_providers()],
            "input": f"{self.info.input_name} [1, 3, {rows or 'H'}, {cols or 'W'}]",
            "encoding": self.encoding,
            "has_metadata": self.info.has_metadata,
        }
