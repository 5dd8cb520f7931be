"""Stage 3 of the pipeline: fp32 ONNX (from ``itm-onnx export``) -> QDQ ONNX + report.

``quantize_model(QuantizeConfig(...))``:

1. reads the export's backbone/head tags (or ``head_nodes`` for an untagged model);
   a model that already holds Q/DQ nodes (a QAT export) is copied through unchanged;
2. prepares the float model: the exact rewrites of :mod:`.rewrite`, then ORT's
   ``quant_pre_process`` (shape inference, basic graph optimization);
3. calibrates it on the calibration images (:mod:`.calibration`; cached);
4. quantizes it with the chosen scheme (:mod:`.schemes`);
5. tags the inserted nodes, records the scheme and the ONNX Runtime session settings
   the artifact needs in its metadata, and writes the artifact and its report
   (``NAME.quant.json``: node precisions, Q/DQ counts, kernels ORT runs, per-tensor
   SQNR, output fidelity on the calibration images) atomically.

The same inputs give a byte-identical artifact.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.shape_inference import quant_pre_process

from .. import onnx_meta
from ..errors import ItmOnnxError, UsageError
from ..paths import default_calibration_dir
from ..utils.atomic import atomic_output
from ..utils.progress import bar
from . import report as qreport
from .calibration import (
    DEFAULT_DYNAMIC_SIZE,
    CalibrationImages,
    CalibrationSettings,
    FeedReader,
    ImageReader,
    calibrate,
    load_calibration_images,
    native_arrays,
)
from .ranges import with_symbolic_size
from .rewrite import HEAD_REWRITES, KNOWN_REWRITES, QDQ_REWRITES, REWRITES, apply_rewrites
from .schemes import SCHEMES, QuantOptions, Scheme

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$ITM_ONNX_CACHE`` or ``$XDG_CACHE_HOME/itm-onnx`` (default ``~/.cache/itm-onnx``)."""
    env = os.environ.get("ITM_ONNX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "itm-onnx"


@dataclass
class QuantizeConfig:
    """What to quantize and how; the defaults are the CLI's defaults."""

    model: Path = Path("mqnet.onnx")
    output: Path = Path("mqnet-mixed.onnx")
    scheme: str = "mixed"  # a key of SCHEMES
    calibration: Path | None = None  # None: the shipped calibration/ folder
    calibration_settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    options: QuantOptions = field(default_factory=QuantOptions)
    # Exact rewrites (rewrite.py); () for none. Those of HEAD_REWRITES run after
    # calibration and only for schemes whose head stays float; those of QDQ_REWRITES
    # (rewrite_qdq.py) on the quantized graph.
    rewrites: tuple[str, ...] = KNOWN_REWRITES
    head_nodes: tuple[str, ...] = ()  # for models without export tags: where the head starts
    dynamic_size: tuple[int, int] = DEFAULT_DYNAMIC_SIZE  # calibration shape of dynamic models
    cache_dir: Path | None = None  # None: default_cache_dir() / "calibration"
    error_images: int = 2  # calibration images for the per-tensor SQNR (0: skip it)
    report: bool = True  # write NAME.quant.json beside the artifact
    target: str = "cpu"  # "nnapi": the NNAPI recipe in one step (targets.py)
    # Mixed scheme only (quantize/study.py): the per-tensor sensitivity study
    # (NAME.sensitivity.png), and the search for the cheapest configuration reaching
    # min_psnr dB on study_images calibration images (NAME.tradeoff.png).
    sensitivity: bool = False
    min_psnr: float | None = None
    study_images: int = 4


@dataclass
class QuantizeReport:
    artifact: str
    report_file: str | None
    sha256: str
    source_model: str
    source_sha256: str
    scheme: str
    already_quantized: bool
    input_shape: list[int]
    calibration: dict[str, Any]
    rewrites: dict[str, list[str]]
    session_options: dict[str, Any]
    counts: dict[str, Any]
    runtime: dict[str, Any]
    fidelity: dict[str, Any]
    tensor_errors: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)  # what --target nnapi did
    sensitivity: dict[str, Any] | None = None  # --sensitivity / --min-psnr (quantize/study.py)
    search: dict[str, Any] | None = None  # --min-psnr
    charts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def report_path(artifact: Path) -> Path:
    return Path(artifact).with_suffix(".quant.json")


def quantize_model(config: QuantizeConfig,
                   progress: Callable[[str], None] = lambda _: None) -> QuantizeReport:
    """Quantize ``config.model`` into ``config.output``; raises ItmOnnxError subclasses."""
    if config.scheme not in SCHEMES:
        raise UsageError(f"unknown scheme {config.scheme!r}; choose one of {', '.join(SCHEMES)}")
    if config.target != "cpu":
        from .targets import TARGETS, quantize_for_nnapi

        if config.target not in TARGETS:
            raise UsageError(f"unknown target {config.target!r}; choose one of "
                             f"{', '.join(TARGETS)}")
        return quantize_for_nnapi(config, progress)
    source, source_bytes = _load_source(Path(config.model))
    _check_output(Path(config.output), Path(config.model))
    _check_study(config)
    if onnx_meta.is_quantized(source):
        return _copy_through(config, source, source_bytes)
    _ensure_tags(source, config)
    timings: dict[str, float] = {}
    with (tempfile.TemporaryDirectory(prefix="itm-onnx-quant-") as tmp,
          bar(f"quantize {config.scheme}", total=4, unit="step") as steps):
        work = Path(tmp)
        started = time.perf_counter()
        progress("preparing the float model (rewrites, quant_pre_process)")
        prepared, log_rewrites = _prepare(source, config, work)
        prepared_bytes = prepared.read_bytes()
        shape = _calibration_shape(source, config)
        timings["prepare"] = _since(started)
        steps.update(1)

        started = time.perf_counter()
        images = load_calibration_images(_calibration_dir(config), config.calibration_settings)
        scheme = SCHEMES[config.scheme]
        progress(f"calibrating ({config.calibration_settings.method}) on {len(images.used)} "
                 f"images for a {shape[0]}x{shape[1]} model")
        calib = calibrate(prepared, hashlib.sha256(prepared_bytes).hexdigest(),
                          _input_name(source), shape, images, config.calibration_settings,
                          _cache_dir(config), nodes=calibrated_nodes(prepared, scheme))
        timings["calibrate"] = _since(started)
        steps.update(1)

        started = time.perf_counter()
        progress(f"quantizing ({config.scheme})")
        to_quantize = prepared
        if scheme.float_head:
            to_quantize, head_log = _rewrite_float_head(prepared, config, work)
            log_rewrites.update(head_log)
        model = scheme.build(to_quantize, calib.ranges_path, config.calibration_settings.method,
                             config.options, work)
        study = None
        if config.sensitivity or config.min_psnr is not None:
            timings["quantize"] = _since(started)
            started = time.perf_counter()
            onnx_meta.restore_tags(model, onnx_meta.tags_by_name(onnx.load(str(to_quantize))))
            model, study = _run_study(config, prepared, to_quantize, calib.ranges_path, model,
                                      images, shape, _input_name(source), scheme, work, progress)
            timings["study"] = _since(started)
            started = time.perf_counter()
        onnx_meta.restore_tags(model, onnx_meta.tags_by_name(onnx.load(str(to_quantize))))
        qdq_names = tuple(r for r in config.rewrites if r in QDQ_REWRITES)
        log_rewrites.update(apply_rewrites(model, qdq_names).applied)
        _write_metadata(model, source, config, calib.key, log_rewrites, scheme.session_options)
        if study is not None and study.metadata:
            onnx_meta.write_model_metadata(model, study.metadata)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ItmOnnxError(f"quantized model fails the ONNX checker: {exc}") from None
        model_bytes = model.SerializeToString(deterministic=True)
        timings["quantize"] = round(timings.get("quantize", 0.0) + _since(started), 2)
        steps.update(1)

        started = time.perf_counter()
        progress("analysing the quantized model")
        quantized_path = work / "quantized.onnx"
        quantized_path.write_bytes(model_bytes)
        precisions = qreport.node_precisions(model)
        errors, fidelity = _measure_errors(prepared, quantized_path, model_bytes, source,
                                           images, shape, config, scheme.session_options,
                                           native=calib.info.get("scale") == "native")
        timings["report"] = _since(started)
        steps.update(1)

    result = QuantizeReport(
        artifact=str(config.output), report_file=None,
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        source_model=str(config.model), source_sha256=hashlib.sha256(source_bytes).hexdigest(),
        scheme=config.scheme, already_quantized=False, input_shape=[1, 3, *shape],
        calibration={"cached": calib.cached, "ranges": str(calib.ranges_path), **calib.info,
                     "settings": dataclasses.asdict(config.calibration_settings)},
        rewrites=log_rewrites, session_options=scheme.session_options,
        counts=qreport.precision_counts(model, precisions),
        runtime=qreport.runtime_kernels(model_bytes, scheme.session_options),
        fidelity=fidelity, tensor_errors=errors,
        nodes=[p.to_dict() for p in precisions], seconds=timings,
    )
    if study is not None:
        result.sensitivity, result.search, result.charts = (study.sensitivity, study.search,
                                                            study.charts)
    _write_outputs(config, model_bytes, result)
    return result


def calibrated_nodes(prepared: Path, scheme: Scheme) -> list[str] | None:
    """The nodes whose tensors ``scheme`` needs ranges for: with a float head, the
    backbone's (the head's activations are never quantized); else all (None)."""
    if not scheme.float_head:
        return None
    model = onnx.load(str(prepared), load_external_data=False)
    head = set(onnx_meta.nodes_in_part(model, onnx_meta.HEAD))
    return [n.name for n in model.graph.node if n.name not in head]
def _check_study(config: QuantizeConfig) -> None:
    if not (config.sensitivity or config.min_psnr is not None):
        return
    if config.scheme != "mixed":
        raise UsageError("--sensitivity and --min-psnr apply to the --mixed scheme only")
    if config.min_psnr is not None and not 0 < config.min_psnr < 200:
        raise UsageError(f"--min-psnr must be between 0 and 200 dB, got {config.min_psnr}")
    if config.study_images < 1:
        raise UsageError("the study needs at least one calibration image")


def _run_study(config, prepared, to_quantize, ranges, model, images, shape, input_name, scheme,
               work, progress):
    """quantize/study.py on what this function already built (imported here: it builds
    on this module)."""
    from .study import StudyRequest, run_study

    request = StudyRequest(config.sensitivity, config.min_psnr, config.study_images)
    study = run_study(request, reference=prepared, float_model=to_quantize, ranges=ranges,
                      method=config.calibration_settings.method, options=config.options,
                      built=model, images=images, shape=shape, input_name=input_name,
                      session_options=scheme.session_options, work=work,
                      output=Path(config.output), progress=progress)
    return study.model, study


def _load_source(path: Path) -> tuple[onnx.ModelProto, bytes]:
    if not path.is_file():
        raise UsageError(f"model {path} does not exist")
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise ItmOnnxError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ItmOnnxError(f"{path}: not a readable ONNX model (empty graph)")
    if len(model.graph.input) != 1:
        raise ItmOnnxError(f"{path}: expected one image input, found {len(model.graph.input)}")
    return model, data


def _check_output(output: Path, model: Path) -> None:
    if not output.parent.is_dir():
        raise UsageError(f"output folder {output.parent} does not exist")
    if output.resolve() == model.resolve():
        raise UsageError("--output must differ from --model (the input is never edited in place)")


def _ensure_tags(model: onnx.ModelProto, config: QuantizeConfig) -> None:
    """Tags from the export, or from --head-nodes; an untagged model without it fails."""
    if config.head_nodes:
        try:
            onnx_meta.apply_tags(model, onnx_meta.tags_from_head_nodes(model, config.head_nodes))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return
    try:
        onnx_meta.require_tags(model, str(config.model))
    except ValueError as exc:
        raise ItmOnnxError(str(exc)) from None
    if not onnx_meta.nodes_in_part(model, onnx_meta.HEAD):
        raise ItmOnnxError(f"{config.model}: no node is tagged head; nothing to keep in float")


def _prepare(source: onnx.ModelProto, config: QuantizeConfig,
             work: Path) -> tuple[Path, dict[str, list[str]]]:
    """Rewritten, pre-processed float model on disk (the model that is calibrated)."""
    model = copy.deepcopy(source)
    unknown = [r for r in config.rewrites if r not in KNOWN_REWRITES]
    if unknown:
        raise UsageError(f"unknown rewrite(s) {unknown}; known: {', '.join(KNOWN_REWRITES)}")
    applied = apply_rewrites(model, tuple(r for r in config.rewrites if r in REWRITES)).applied
    rewritten, prepared = work / "rewritten.onnx", work / "prepared.onnx"
    onnx.save(model, str(rewritten))
    pre_process(rewritten, prepared, onnx_meta.tags_by_name(model), _is_dynamic(source))
    return prepared, applied


def _rewrite_float_head(prepared: Path, config: QuantizeConfig,
                        work: Path) -> tuple[Path, dict[str, list[str]]]:
    """The calibrated model with the float-head rewrites: the calibration (and its cache)
    stays shared by every scheme, and the head these rewrites touch is never calibrated."""
    names = tuple(r for r in config.rewrites if r in HEAD_REWRITES)
    if not names:
        return prepared, {}
    model = onnx.load(str(prepared))
    applied = apply_rewrites(model, names).applied
    path = work / "float-head.onnx"
    onnx.save(model, str(path))
    return path, applied


def pre_process(source: Path, output: Path, tags: dict[str, str], dynamic: bool) -> None:
    """ORT's ``quant_pre_process`` (symbolic shape inference needs fixed shapes), then the
    node tags its optimizer dropped are put back (by name; new nodes from neighbours)."""
    quant_pre_process(str(source), str(output), skip_symbolic_shape=dynamic)
    model = onnx.load(str(output))
    onnx_meta.restore_tags(model, tags)
    onnx_meta.require_tags(model, "pre-processed model")
    onnx.save(model, str(output))


def _is_dynamic(model: onnx.ModelProto) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return any(not d.HasField("dim_value") for d in dims[2:])


def _calibration_shape(model: onnx.ModelProto, config: QuantizeConfig) -> tuple[int, int]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ItmOnnxError(f"{config.model}: expected an NCHW image input, got rank {len(dims)}")
    if _is_dynamic(model):
        return tuple(config.dynamic_size)
    return dims[2].dim_value, dims[3].dim_value


def _input_name(model: onnx.ModelProto) -> str:
    return model.graph.input[0].name


def _calibration_dir(config: QuantizeConfig) -> Path:
    return Path(config.calibration) if config.calibration else default_calibration_dir()


def _cache_dir(config: QuantizeConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir() / "calibration"


def _write_metadata(model: onnx.ModelProto, source: onnx.ModelProto, config: QuantizeConfig,
                    calibration_key: str, rewrites: dict[str, list[str]],
                    session_options: dict[str, Any]) -> None:
    """Carry the export's metadata over and add what this stage decided (no timestamps or
    paths, so that the artifact is byte-identical for the same inputs)."""
    del model.metadata_props[:]
    model.metadata_props.extend(p for p in source.metadata_props
                                if p.key.startswith(onnx_meta.PREFIX))
    onnx_meta.write_model_metadata(model, {
        "quantization": {
            "format_version": FORMAT_VERSION,
            "scheme": config.scheme,
            "description": SCHEMES[config.scheme].description,
            "calibration_method": config.calibration_settings.method,
            "calibration_key": calibration_key,
            "per_channel": config.options.per_channel,
            "reduce_range": config.options.reduce_range,
            "rewrites": sorted(rewrites),
        },
        onnx_meta.SESSION_OPTIONS_KEY: session_options,
    })
    model.producer_name = "itm-onnx"


def _measure_errors(prepared: Path, quantized: Path, model_bytes: bytes, source: onnx.ModelProto,
                    images: CalibrationImages, shape: tuple[int, int], config: QuantizeConfig,
                    session_options: dict[str, Any],
                    native: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-tensor SQNR and output fidelity on the first ``error_images`` calibration images.

    These are calibration images (not held out): the figures say where quantization
    error arises; ``itm-onnx bench --peers`` measures fidelity on held-out images. When
    calibration ran at native scale, so do these (on copies of both models with a
    symbolic input size): at 1088x1920 the per-tensor comparison took ~8 minutes.
    """
    count = min(config.error_images, len(images.rgb))
    if count <= 0:
        return [], {}
    where = "at the model's input size"
    if native:
        arrays = native_arrays(images, shape, config.calibration_settings, count)
        float_path, quantized = prepared.with_name("errors-float.onnx"), \
            quantized.with_name("errors-quantized.onnx")
        onnx.save(with_symbolic_size(onnx.load(str(prepared))), str(float_path))
        model_bytes = with_symbolic_size(onnx.load_from_string(model_bytes)).SerializeToString()
        quantized.write_bytes(model_bytes)
        reader = FeedReader(_input_name(source), arrays)
        sizes = (1, 3, max(a.shape[2] for a in arrays), max(a.shape[3] for a in arrays))
        where = "at native scale"
    else:
        float_path, sizes = prepared, (1, 3, *shape)
        reader = ImageReader(images.rgb[:count], _input_name(source), shape)
    errors = qreport.tensor_errors(float_path, quantized, reader, sizes)
    reader.rewind()
    fidelity = output_fidelity(float_path.read_bytes(), model_bytes, reader, session_options)
    fidelity["images"] = f"first {count} calibration image(s) {where}, not held out"
    return errors, fidelity


def output_fidelity(float_model: bytes, quantized_model: bytes, reader: ImageReader,
                    session_options: dict[str, Any]) -> dict[str, Any]:
    """Output PSNR on the 10-bit scale (round(y * 1023)) with each model optimized as deployed."""
    float_session = ort.InferenceSession(float_model, providers=["CPUExecutionProvider"])
    quant_session = ort.InferenceSession(
        quantized_model, providers=["CPUExecutionProvider"],
        disabled_optimizers=session_options.get("disabled_optimizers", []))
    diffs = []
    while (feed := reader.get_next()) is not None:
        a = float_session.run(None, feed)[0]
        b = quant_session.run(None, feed)[0]
        diffs.append(np.abs(codes10(a) - codes10(b)).ravel())
    return code_error_summary(np.concatenate(diffs))


def codes10(y: np.ndarray) -> np.ndarray:
    """The 10-bit code values an integrator stores: round(clip(y, 0, 1) * 1023)."""
    return np.round(np.clip(y, 0.0, 1.0) * 1023.0).astype(np.int32)


def code_error_summary(abs_diff: np.ndarray) -> dict[str, Any]:
    """PSNR (peak 1023) and the share of pixels within 1 and 4 code values."""
    mse = float(np.mean(abs_diff.astype(np.float64) ** 2))
    return {
        "psnr_10bit_db": (round(float(10 * np.log10(1023.0**2 / mse)), 2) if mse > 0
                          else float("inf")),
        "within_1_code": round(float(np.mean(abs_diff <= 1)), 6),
        "within_4_codes": round(float(np.mean(abs_diff <= 4)), 6),
        "max_code_error": int(abs_diff.max()),
    }


def _copy_through(config: QuantizeConfig, source: onnx.ModelProto,
                  source_bytes: bytes) -> QuantizeReport:
    """An already quantized model (e.g. a QAT export) is not quantized again."""
    precisions = qreport.node_precisions(source)
    settings = onnx_meta.read_session_options(source)
    result = QuantizeReport(
        artifact=str(config.output), report_file=None,
        sha256=hashlib.sha256(source_bytes).hexdigest(), source_model=str(config.model),
        source_sha256=hashlib.sha256(source_bytes).hexdigest(), scheme="pre-quantized",
        already_quantized=True, input_shape=[],
        calibration={}, rewrites={}, session_options=settings,
        counts=qreport.precision_counts(source, precisions),
        runtime=qreport.runtime_kernels(source_bytes, settings), fidelity={},
        tensor_errors=[], nodes=[p.to_dict() for p in precisions], seconds={},
        notes=["the model already holds quantization nodes (e.g. a QAT export): copied "
               "through unchanged, not quantized again"],
    )
    _write_outputs(config, source_bytes, result)
    return result


def _write_outputs(config: QuantizeConfig, model_bytes: bytes, result: QuantizeReport) -> None:
    output = Path(config.output)
    try:
        with atomic_output(output) as tmp:
            tmp.write_bytes(model_bytes)
        if config.report:
            result.report_file = str(report_path(output))
            with atomic_output(report_path(output)) as tmp:
                tmp.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True,
                                          default=_json_default) + "\n")
    except OSError as exc:
        raise ItmOnnxError(f"cannot write {output}: {exc.strerror or exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


__all__ = ["QuantizeConfig", "QuantizeReport", "quantize_model", "default_cache_dir",
           "report_path", "output_fidelity", "codes10", "code_error_summary"]
