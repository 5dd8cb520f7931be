"""Stage 2 of the pipeline: PyTorch model -> fp32 ONNX artifact with proven parity.

``export_model(ExportConfig(...))`` runs the dynamo exporter, onnxsim (which folds all
shape arithmetic for fixed shapes), tags every node as backbone or head
(``itm_onnx.onnx_meta``), stores the metadata an integrator needs, runs the full ONNX
checker, and compares ONNX Runtime against PyTorch on a set of probe images. Only if
parity holds are the artifact and its model card written (atomically).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from . import onnx_meta
from .checkpoint import read_checkpoint_metadata
from .errors import ExportError, ItmOnnxError, UsageError
from .mobile import fill_resize_roi
from .models import create_model
from .models.blocks import set_instancenorm_formulation
from .paths import default_checkpoint
from .train.qat import assign_bias_grids, has_bias_grids
from .utils.atomic import atomic_output
from .utils.qdq import fold_constant_quantizers, int32_conv_biases

INPUT_NAME, OUTPUT_NAME = "ldr", "hdr"


@dataclass
class ExportConfig:
    """What to export and how; the defaults are the CLI's defaults."""

    output: Path = Path("mqnet.onnx")
    model: str = "mqnet"
    checkpoint: Path | None = None  # None: the shipped default for `model`
    random_init: bool = False  # export untrained weights (marked in the artifact)
    height: int = 256
    width: int = 256
    dynamic: bool = False  # dynamic H/W (probe sizes for parity come from PARITY_SIZES)
    opset: int = 20
    # Max |PyTorch - ORT| on the [0, 1] output; None: the model's own (see parity_tolerance).
    parity_tolerance: float | None = None
    seed: int = 0  # weights of --random-init and the random probe image
    # How InstanceNorm is written (see models.blocks.InstanceNorm2d): "decomposed" is
    # precise on ORT's CPU kernels and runs on NNAPI; "native" is one op.
    instancenorm: str = "decomposed"
    # MQNet's working scale (models.mqnet module doc): 1 as released; 2, 4, 8 run the
    # network on the pooled photo and apply its upsampled residual at full resolution.
    work_scale: int = 1


DEFAULT_PARITY_TOLERANCE = 1e-4  # float models; a QAT model carries its own (1/1023)


def parity_tolerance(model: nn.Module, requested: float | None) -> float:
    """The requested tolerance, else the model's ``parity_tolerance``, else the default."""
    if requested is not None:
        return requested
    return float(getattr(model, "parity_tolerance", DEFAULT_PARITY_TOLERANCE))


# Sizes the parity check runs at for a dynamic export: square, landscape, portrait.
PARITY_SIZES = ((256, 256), (192, 320), (320, 160))


@dataclass
class ExportReport:
    artifact: str
    model_card: str
    sha256: str
    model: str
    checkpoint: str | None
    random_init: bool
    opset: int
    input_shape: list[int | str]
    parameters: int
    node_counts: dict[str, int]
    parts: dict[str, int]
    parity: dict[str, Any]
    export_seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def probe_images(height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs that stress different paths: noise, flat grey, a hard edge, saturation."""
    rng = np.random.default_rng(seed)
    edge = np.zeros((1, 3, height, width), np.float32)
    edge[..., :, width // 2:] = 1.0
    saturated = np.clip(rng.uniform(0.6, 1.6, (1, 3, height, width)), 0, 1).astype(np.float32)
    saturated[:, 1:, : height // 2] = 1.0  # clipped highlights, two channels blown
    return {
        "random": rng.random((1, 3, height, width), dtype=np.float32),
        "flat_grey": np.full((1, 3, height, width), 0.5, np.float32),
        "hard_edge": edge,
        "saturated": saturated,
    }


def resolve_checkpoint(config: ExportConfig) -> Path | None:
    """The checkpoint to load, or None for an explicit random init."""
    if config.random_init:
        if config.checkpoint is not None:
            raise UsageError("--random-init and --checkpoint exclude each other")
        return None
    if config.checkpoint is not None:
        return config.checkpoint
    shipped = default_checkpoint(config.model)
    if shipped is None:
        raise UsageError(
            f"no shipped checkpoint for model {config.model!r}: pass --checkpoint PATH, "
            "or --random-init to export untrained weights"
        )
    return shipped


def check_sizes(height: int, width: int, multiple: int) -> None:
    for label, side in (("height", height), ("width", width)):
        if side <= 0 or side % multiple:
            raise UsageError(
                f"{label} {side} is not a positive multiple of {multiple} "
                f"(the model downsamples {multiple}x)"
            )


def _run_exporter(model: nn.Module, config: ExportConfig) -> onnx.ModelProto:
    example = torch.rand(1, 3, config.height, config.width)
    dynamic_shapes = None
    if config.dynamic:
        dynamic_shapes = ({2: torch.export.Dim("height"), 3: torch.export.Dim("width")},)
    # The exporter logs progress and optional-op notices; keep the CLI's output clean.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export internals, not ours
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=config.opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, verbose=False,
        )
    return program.model_proto


def _simplify(proto: onnx.ModelProto, fixed: bool) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model")
    if fixed:
        leftover = [n.name for n in simplified.graph.node if n.op_type == "Shape"]
        if leftover:
            raise ExportError(f"shape arithmetic survived simplification: {leftover[:3]}")
    return simplified


def _strip_exporter_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths)."""
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key.startswith(onnx_meta.PREFIX)]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)


def check_parity(model: nn.Module, proto_bytes: bytes, sizes: list[tuple[int, int]],
                 seed: int = 0, optimize: bool = True) -> dict[str, Any]:
    """Max (and mean) |PyTorch - ONNX Runtime CPU| per probe image and size.

    ``optimize=False`` runs ORT without graph optimizations: the graph's own semantics.
    That is the reference for a QDQ (QAT) model, whose fused int8 kernels requantize with
    their own rounding.
    """
    # PyTorch first, then one ONNX Runtime session without its memory arena: at 1088x1920
    # each needs over a gigabyte, and held together they made export the job's peak.
    expected: dict[str, np.ndarray] = {}
    probes: dict[str, np.ndarray] = {}
    for height, width in sizes:
        for name, image in probe_images(height, width, seed).items():
            key = f"{name}@{height}x{width}"
            probes[key] = image
            with torch.inference_mode():
                expected[key] = model(torch.from_numpy(image)).numpy()
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])
    results, means = {}, {}
    for key, image in probes.items():
        got = session.run([OUTPUT_NAME], {INPUT_NAME: image})[0]
        error = np.abs(expected[key] - got)
        results[key] = float(error.max())
        means[key] = float(error.mean())
    return {"max_abs_error": max(results.values()), "per_input": results,
            "mean_abs_error": max(means.values()), "mean_per_input": means}


def export_model(config: ExportConfig) -> ExportReport:
    """Export, check and write the artifact; raises ItmOnnxError subclasses on failure."""
    started = time.perf_counter()
    checkpoint = resolve_checkpoint(config)
    torch.manual_seed(config.seed)
    scale = {"work_scale": config.work_scale} if config.work_scale != 1 else {}
    model = create_model(config.model, checkpoint=checkpoint, **scale).eval()
    set_instancenorm_formulation(model, config.instancenorm)
    multiple = getattr(model, "required_multiple", 32)
    check_sizes(config.height, config.width, multiple)
    output = Path(config.output)
    if not output.parent.is_dir():
        raise UsageError(f"output folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise ItmOnnxError(f"output folder {output.parent} is not writable")

    qdq = bool(getattr(model.config, "qat", False))
    if qdq and not has_bias_grids(model):
        assign_bias_grids(model, config.seed)
    proto = _run_exporter(model, config)
    tags = onnx_meta.tags_by_name(proto)
    proto = _simplify(proto, fixed=not config.dynamic)
    fill_resize_roi(proto)  # exact and free; NNAPI needs it (itm_onnx.mobile)
    if qdq:  # int8 weights and int32 biases, so that ORT runs int8 kernels
        fold_constant_quantizers(proto)
        int32_conv_biases(proto)
    try:
        onnx_meta.apply_tags(proto, tags)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    _strip_exporter_metadata(proto)

    info: dict[str, Any] = {}
    if checkpoint is not None:
        info = json.loads(read_checkpoint_metadata(checkpoint).get("info", "{}"))
    metadata = _artifact_metadata(model, config, checkpoint, info, multiple)
    onnx_meta.write_model_metadata(proto, metadata)
    proto.producer_name, proto.producer_version = "itm-onnx", _package_version()
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails the ONNX checker: {exc}") from None

    proto_bytes = proto.SerializeToString()
    sizes = list(PARITY_SIZES) if config.dynamic else [(config.height, config.width)]
    parity = check_parity(model, proto_bytes, sizes, config.seed)
    if qdq:  # also the graph's own semantics, unfused (reported)
        parity["reference"] = check_parity(model, proto_bytes, sizes, config.seed, optimize=False)
    tolerance = parity_tolerance(model, config.parity_tolerance)
    # A float model must match everywhere; for a QDQ model one rounding flip cascades
    # through the int8 layers, so the per-image mean error is what is gated (see qat.py).
    statistic = getattr(model, "parity_statistic", "max")
    parity["tolerance"], parity["statistic"] = tolerance, statistic
    parity["passed"] = parity[f"{statistic}_abs_error"] <= tolerance
    if not parity["passed"]:
        raise ExportError(
            f"parity check failed: {statistic} |PyTorch - ORT| = "
            f"{parity[f'{statistic}_abs_error']:.3g} > {tolerance:g}; no artifact written"
        )

    shape: list[int | str] = [1, 3, "height", "width"] if config.dynamic else [
        1, 3, config.height, config.width]
    report = ExportReport(
        artifact=str(output),
        model_card=str(model_card_path(output)),
        sha256=hashlib.sha256(proto_bytes).hexdigest(),
        model=config.model,
        checkpoint=str(checkpoint) if checkpoint else None,
        random_init=checkpoint is None,
        opset=config.opset,
        input_shape=shape,
        parameters=sum(p.numel() for p in model.parameters()),
        node_counts=dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items())),
        parts=dict(collections.Counter(onnx_meta.node_part(n) for n in proto.graph.node)),
        parity=parity,
        export_seconds=0.0,
        metadata=metadata,
    )
    try:
        with atomic_output(output) as tmp:
            tmp.write_bytes(proto_bytes)
            report.export_seconds = round(time.perf_counter() - started, 2)
            write_json_atomic(model_card_path(output), report.to_dict())
    except OSError as exc:
        raise ItmOnnxError(f"cannot write {output}: {exc.strerror or exc}") from None
    return report


def model_card_path(artifact: Path) -> Path:
    return Path(artifact).with_suffix(".card.json")


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _artifact_metadata(model: nn.Module, config: ExportConfig, checkpoint: Path | None,
                       info: dict[str, Any], multiple: int) -> dict[str, Any]:
    from .data.encoding import ENCODINGS

    encoding = model.config.output_encoding
    if checkpoint is None:
        version = "random-init"
    else:
        digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
        version = str(info.get("version", f"sha256:{digest[:16]}"))
    return {
        "model": config.model,
        "model_version": version,
        "random_init": checkpoint is None,
        "config": dataclasses.asdict(model.config),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "layout": "NCHW",
        "dtype": "float32",
        "input_range": "[0, 1]: 8-bit sRGB code values / 255, RGB order",
        "output_range": "[0, 1]",
        "output_encoding": encoding,
        "output_encoding_description": ENCODINGS[encoding].description,
        "output_bits": 10,
        "required_multiple": multiple,
        "dynamic_shape": config.dynamic,
        "instancenorm": config.instancenorm,
        "node_tags": f"node metadata_props '{onnx_meta.PART_KEY}' in "
                     f"{{{onnx_meta.BACKBONE}, {onnx_meta.HEAD}}}",
    }


def _package_version() -> str:
    from . import __version__

    return __version__
