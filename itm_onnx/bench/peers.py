"""The models `itm-onnx bench --peers FP32.onnx` compares, built from one fp32 export.

1. ``fp32``: the export itself, ONNX Runtime with default session options.
2. ``naive-mixed``: the obvious recipe with ORT's tools: ``quant_pre_process``, then
   ``quantize_static(QDQ, per_channel=True, QUInt8 activations, QInt8 weights,
   nodes_to_exclude=<head nodes>)``, nothing else (no rewrites, full-range weights,
   default session options), calibrated on the same images as ours, fed the same way
   (at native scale; ``itm_onnx.quantize.calibration``), with ``quantize_static``'s
   default method (MinMax), whatever ``--calibrate-method`` says for ours.
3. ``full-int8``: ``itm-onnx quantize --full-int8``.
4. ``mixed``: ``itm-onnx quantize --mixed`` (unless the caller brings its own model).
5. Not a peer: the fp32 export again, with the session settings the mixed artifact
   recommends, to show what those settings alone are worth.
6. PyTorch eager from the checkpoint, when one is given.
7. LiteRT with XNNPACK (:mod:`.litert`): fp32, static int8 and dynamic-range int8,
   converted from the checkpoint (``--checkpoint``, else the shipped one); without the
   optional ``[litert]`` extra, rows that say how to get it.

Built models land in ``work_dir``; the calibration cache makes rebuilding them cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from .. import onnx_meta
from ..errors import ItmOnnxError
from ..paths import default_calibration_dir, default_checkpoint
from ..quantize import SCHEMES, CalibrationSettings, QuantizeConfig, quantize_model
from ..quantize.api import default_cache_dir, pre_process
from ..quantize.calibration import METHODS, calibrate, fit_to_shape, load_calibration_images
from .core import ModelSpec, fixed_size

log = logging.getLogger(__name__)

NAIVE_CALIBRATION_METHOD = "minmax"  # quantize_static's default: the naive recipe's


@dataclass
class PeerConfig:
    fp32: Path
    work_dir: Path
    calibration: Path | None = None
    calibration_settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    cache_dir: Path | None = None
    dynamic_size: tuple[int, int] = (256, 256)
    build_mixed: bool = True
    # The mixed artifact to compare when it is already built (pipeline): its row and its
    # row with ORT's default settings come from it instead of a new quantize.
    mixed: Path | None = None
    checkpoint: Path | None = None
    model_name: str = "mqnet"
    litert: bool = False  # the LiteRT peers (rows saying how to get them if absent)
    litert_cache: Path | None = None  # None: default_cache_dir() / "litert"


def build_peers(config: PeerConfig, progress: Callable[[str], None] = lambda _: None
                ) -> list[ModelSpec]:
    fp32 = Path(config.fp32)
    if not fp32.is_file():
        raise ItmOnnxError(f"--peers: {fp32} does not exist")
    source = onnx.load(str(fp32), load_external_data=False)
    if onnx_meta.is_quantized(source):
        raise ItmOnnxError(f"--peers: {fp32} is already quantized; pass the fp32 export")
    try:
        onnx_meta.require_tags(source, str(fp32))
    except ValueError as exc:
        raise ItmOnnxError(str(exc)) from None
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    specs = [ModelSpec("fp32 (peer 1)", fp32)]
    progress("building peer 2: naive mixed (quant_pre_process + quantize_static)")
    naive = build_naive_mixed(config, work / "naive-mixed.onnx")
    specs.append(ModelSpec("naive mixed (peer 2)", naive))
    progress("building peer 3: itm-onnx quantize --full-int8")
    specs.append(ModelSpec("full-int8 (peer 3)", _quantize(config, "full-int8", work)))
    mixed = config.mixed
    if mixed is None and config.build_mixed:
        progress("building itm-onnx quantize --mixed")
        mixed = _quantize(config, "mixed", work)
    if mixed is not None:
        specs.append(ModelSpec("mixed (itm-onnx)", Path(mixed)))
    # Not peers: each side with the other's session settings, so that the table shows how
    # much of the gap those settings make. They trade idle speed for behaviour under load
    # (worker threads that sleep between ops: power, and the cores other processes need).
    tuned = dict(SCHEMES["mixed"].session_options)
    if tuned:
        specs.append(ModelSpec("fp32 + mixed's session options", fp32, session_options=tuned))
        if mixed is not None:
            specs.append(ModelSpec("mixed + ORT's default session options", Path(mixed),
                                   session_options={}))
    if config.litert:
        specs.extend(litert_peers(config, progress))
    if config.checkpoint is not None:
        specs.append(ModelSpec("pytorch eager", checkpoint=Path(config.checkpoint),
                               model_name=config.model_name))
    return specs


def litert_peers(config: PeerConfig, progress: Callable[[str], None]) -> list[ModelSpec]:
    """The LiteRT rows: built models, or rows that say why they cannot run here."""
    from . import litert

    missing = litert.missing_packages()
    if missing:
        why = f"not installed: {', '.join(missing)} ({litert.INSTALL_HINT})"
        return [ModelSpec(label, unavailable=why) for label in litert.VARIANTS]
    checkpoint = Path(config.checkpoint) if config.checkpoint else default_checkpoint(
        config.model_name)
    if checkpoint is None or not checkpoint.is_file():
        why = "no checkpoint to convert: pass --checkpoint"
        return [ModelSpec(label, unavailable=why) for label in litert.VARIANTS]
    size = fixed_size(Path(config.fp32)) or tuple(config.dynamic_size)
    settings = dataclasses.replace(config.calibration_settings,
                                   max_images=litert.CALIBRATION_IMAGES,
                                   min_images=min(config.calibration_settings.min_images,
                                                  litert.CALIBRATION_IMAGES))
    images = load_calibration_images(config.calibration or default_calibration_dir(), settings)
    calibration = [fit_to_shape(rgb, *size)[0] for rgb in images.rgb]
    built = litert.build_litert_models(
        checkpoint, config.model_name, size, calibration,
        config.litert_cache or default_cache_dir() / "litert", progress)
    return [ModelSpec(label, tflite=path) for label, path in built.items()]


def _quantize(config: PeerConfig, scheme: str, work: Path) -> Path:
    output = work / f"{scheme}.onnx"
    quantize_model(QuantizeConfig(
        model=Path(config.fp32), output=output, scheme=scheme, calibration=config.calibration,
        calibration_settings=config.calibration_settings, cache_dir=config.cache_dir,
        dynamic_size=config.dynamic_size, error_images=0))
    return output


def build_naive_mixed(config: PeerConfig, output: Path) -> Path:
    """Peer 2, exactly the recipe in the module doc (calibration cached like ours)."""
    fp32 = Path(config.fp32)
    size = fixed_size(fp32)
    pre = output.with_name(output.stem + "-pre.onnx")
    pre_process(fp32, pre, onnx_meta.tags_by_name(onnx.load(str(fp32))), dynamic=size is None)
    pre_model = onnx.load(str(pre))
    head = onnx_meta.nodes_in_part(pre_model, onnx_meta.HEAD)

    settings = dataclasses.replace(config.calibration_settings,
                                   method=NAIVE_CALIBRATION_METHOD)
    images = load_calibration_images(config.calibration or default_calibration_dir(), settings)
    ranges = calibrate(pre, hashlib.sha256(pre.read_bytes()).hexdigest(),
                       pre_model.graph.input[0].name, size or config.dynamic_size, images,
                       settings, config.cache_dir or default_cache_dir() / "calibration")
    quantize_static(str(pre), str(output), calibration_data_reader=None,
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=head,
                    calibrate_method=METHODS[settings.method],
                    calibration_cache_path=str(ranges.ranges_path))
    return output
