"""Mobile readiness: what NNAPI and CoreML would run, and the `.ort` format.

``check_mobile(MobileCheckConfig(model=...))`` answers three questions about an ONNX
artifact, with ONNX Runtime's own tools wherever they exist:

1. **Partitioning by operator type.** ONNX Runtime's usability checker
   (``python -m onnxruntime.tools.check_onnx_model_mobile_usability``) is called through
   its Python API (``onnxruntime.tools.mobile_helpers.usability_checker``) on the same
   basic-optimized, shape-inferred model it analyses itself; its ``PartitioningInfo``
   results become :class:`EpCoverage` records (partitions, nodes covered, unsupported
   ops with counts, nodes with dynamic shapes, verdict) for NNAPI, CoreML NeuralNetwork
   and CoreML MLProgram.
2. **Partitioning by the NNAPI EP's own rules.** The checker only looks at operator
   types; the EP itself (``onnxruntime/core/providers/nnapi/nnapi_builtin/builders``)
   also rejects, among others, QDQ node groups of op types it cannot run quantized
   (only Conv, Resize, AveragePool, Add, Mul, Transpose, Reshape, Softmax, Concat, Gemm
   and MatMul), int8 or per-channel DequantizeLinear outside a quantized Conv, a float
   Conv whose weight is not an initializer, Clip other than ReLU6/ReLU1, non-constant
   Resize scales or ReduceMean axes, and inputs of rank > 4. :class:`NnapiEpRules`
   applies those rules (mirrored from the EP sources, ORT 1.2x) and feeds them to the
   checker's own partition estimator, so both views use the same partition algorithm.
   The NNAPI EP is only built for Android, so this is an estimate, but a much closer one.
3. **ORT format.** ``onnxruntime.tools.convert_onnx_models_to_ort`` writes the `.ort`
   file(s) (``Fixed`` and ``Runtime`` optimization styles, ARM target by default); each
   is then loaded in an ``InferenceSession`` and compared with the `.onnx` on probe inputs.

It also holds the graph passes that make MQNet NNAPI-friendly where the model code
cannot: :func:`fill_resize_roi` (exact, free on CPU; applied by ``itm-onnx export``) and
:func:`prepare_for_nnapi` (``itm-onnx mobile-prepare``: for a quantized model, exact
rewrites plus running the attention gates' Sigmoid in float, which NNAPI needs and the
CPU path does not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_meta
from .errors import ItmOnnxError, UsageError
from .utils.atomic import atomic_output
from .utils.graph import constant_value, drop_unused_initializers, index_nodes

# The EPs ORT's checker knows, with the function that estimates their partitions.
CHECKER_EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
NNAPI_RULES_EP = "NNAPI (EP rules)"
ORT_STYLES = ("Fixed", "Runtime")


@dataclass
class MobileCheckConfig:
    """What to check; the defaults are the CLI's defaults."""

    model: Path = Path("mqnet.onnx")
    # Keep the converted .ort files (and ORT's required-operators config) here; None:
    # convert into a temporary folder, check, and discard.
    ort_out: Path | None = None
    convert_ort: bool = True
    # ORT's checker analyses the model after ORT's basic optimizations, as they also run
    # before partitioning on the device; False analyses the graph as stored.
    optimize: bool = True
    ort_styles: tuple[str, ...] = ORT_STYLES
    # "arm" lets the .ort keep int8 QDQ patterns for ARM kernels (mobile); "amd64" or None.
    target_platform: str | None = "arm"
    # Max |.onnx - .ort| on the output for "matches"; None: 1e-4 for a float model (the
    # export's parity bound: the arm target fuses differently, ~1e-6 measured) and one
    # 10-bit code (1/1023) for a quantized one, whose int8 fusions may requantize apart.
    ort_tolerance: float | None = None
    seed: int = 0


@dataclass
class EpCoverage:
    """How one execution provider would take the model (one analysis)."""

    ep: str
    source: str  # "onnxruntime usability checker" or "NNAPI EP rules"
    partitions: int
    partition_sizes: list[int]
    nodes_covered: int
    nodes_total: int
    unsupported_ops: dict[str, int]  # op type -> nodes not supported because of the op
    dynamic_shape_nodes: list[str]  # "OpType:name" of nodes left out for a dynamic input
    other_unsupported: dict[str, int] = field(default_factory=dict)  # reason -> nodes
    unsupported_nodes: list[str] = field(default_factory=list)  # "OpType:name (part)"
    verdict: str = "NO"  # ORT's suitability: YES, MAYBE or NO
    caveats: list[str] = field(default_factory=list)  # what the checker did not verify

    @property
    def whole_model(self) -> bool:
        """One partition holding every node: no device/CPU switches at all."""
        return self.partitions == 1 and self.nodes_covered == self.nodes_total


@dataclass
class OrtArtifact:
    """One converted .ort file and whether it behaves like the .onnx."""

    path: str
    style: str
    size_bytes: int
    loads: bool
    max_abs_diff: float | None = None
    matches: bool = False
    error: str | None = None


@dataclass
class MobileReport:
    model: str
    optimized: bool
    nodes: int
    dynamic_inputs: list[str]
    coverage: list[EpCoverage]
    ort: list[OrtArtifact] = field(default_factory=list)
    ort_configs: list[str] = field(default_factory=list)  # operators for a minimal ORT build

    def ep(self, name: str) -> EpCoverage:
        return next(c for c in self.coverage if c.ep == name)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for entry, coverage in zip(data["coverage"], self.coverage, strict=True):
            entry["whole_model"] = coverage.whole_model
        return data


# --------------------------------------------------------------------------------------
# Loading and optimizing as ORT's checker does
# --------------------------------------------------------------------------------------


def load_model(path: Path) -> onnx.ModelProto:
    """Load an ONNX file or fail with one line (missing file -> usage error)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends carry multi-line text
        raise ItmOnnxError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ItmOnnxError(f"{path} is not an ONNX model (no graph nodes)")
    return model


@contextlib.contextmanager
def _quiet_ort_tools() -> Iterator[None]:
    """ORT's tools print progress to stdout and log to the root logger; keep ours clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def analysed_model(path: Path, optimize: bool = True) -> onnx.ModelProto:
    """The model ORT's checker analyses: basic-optimized by ORT, then shape-inferred."""
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="itm-onnx-mobile-") as tmp:
        target = Path(path)
        if optimize:
            target = Path(tmp) / Path(path).name
            try:
                with _quiet_ort_tools():
                    optimize_model(Path(path), target, use_external_initializers=True)
            except Exception as exc:
                raise ItmOnnxError(
                    f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None
        try:
            return ModelProtoWithShapeInfo(target).model_with_shape_info
        except Exception as exc:
            raise ItmOnnxError(f"shape inference failed on {path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# 1. ORT's usability checker -> EpCoverage
# --------------------------------------------------------------------------------------


def _checker_partitioning(model: onnx.ModelProto, ep: str, fixed_sizes: bool = True):
    """ORT's ``PartitioningInfo`` for ``ep`` (one of CHECKER_EPS)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    if ep == "NNAPI":
        return uc.check_nnapi_partitions(model, fixed_sizes)
    config = {"CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
              "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}[ep]
    return uc.check_coreml_partitions(model, fixed_sizes, config)


def coverage_from_partitioning(info: Any, model: onnx.ModelProto, ep: str, source: str,
                               reasons: dict[str, str] | None = None,
                               parts: dict[str, str] | None = None) -> EpCoverage:
    """Turn ORT's ``PartitioningInfo`` (checker output) into an :class:`EpCoverage`.

    The checker reports unsupported op types as a set and nodes left out for dynamic
    shapes as a count; the per-op counts and the node lists come from comparing its
    supported groups with the graph it analysed. ``reasons`` (node name -> why) refines
    the ops that are supported by type but fail an EP rule.
    """
    covered = {id(n) for group in info.supported_groups for n in group}
    unsupported_ops: Counter[str] = Counter()
    other: Counter[str] = Counter()
    dynamic, listed = [], []
    for node in model.graph.node:
        if id(node) in covered:
            continue
        label = f"{node.op_type}:{node.name}"
        listed.append(label + (f" ({parts[node.name]})" if parts and node.name in parts else ""))
        reason = (reasons or {}).get(node.name)
        if not info.supported_ops_checker.is_op_supported(node) and reason is None:
            unsupported_ops[_op_key(node)] += 1
        elif reason is not None:
            other[reason] += 1
        else:
            dynamic.append(label)
    return EpCoverage(
        ep=ep,
        source=source,
        partitions=info.num_partitions,
        partition_sizes=[len(g) for g in info.supported_groups],
        nodes_covered=info.num_supported_nodes,
        nodes_total=info.num_nodes,
        unsupported_ops=dict(sorted(unsupported_ops.items())),
        dynamic_shape_nodes=dynamic,
        other_unsupported=dict(other.most_common()),
        unsupported_nodes=listed,
        verdict=info.suitability().name,
        caveats=list(info.supported_ops_checker.get_caveats()),
    )


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def checker_coverage(model: onnx.ModelProto, parts: dict[str, str] | None = None
                     ) -> list[EpCoverage]:
    """ORT's usability checker on an analysed model, one record per EP it knows."""
    source = "onnxruntime usability checker"
    return [coverage_from_partitioning(_checker_partitioning(model, ep), model, ep, source,
                                       parts=parts)
            for ep in CHECKER_EPS]


def dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    return [i.name for i in model.graph.input if not is_fixed_size_tensor(i)]


# --------------------------------------------------------------------------------------
# 2. The NNAPI EP's own rules
# --------------------------------------------------------------------------------------

# Op types the NNAPI EP runs as a quantized QDQ node group (helper.cc GetQuantizedOpType).
NNAPI_QDQ_GROUP_OPS = frozenset({"Conv", "Resize", "AveragePool", "Add", "Mul", "Transpose",
                                 "Reshape", "Softmax", "Concat", "Gemm", "MatMul"})
# Quantized inputs allowed to be int8 (and per-channel): the weight of a quantized Conv/MatMul.
_WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}
_UINT8, _INT8, _FLOAT = onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.FLOAT
_MAX_RANK = 4


class _GraphIndex:
    """Initializers, shapes, types, producers and consumers of an analysed model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.inits = {t.name: t for t in graph.initializer}
        self.values = {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}
        self.outputs = {o.name for o in graph.output}
        self.producer, self.consumers = index_nodes(graph)

    def const(self, name: str) -> np.ndarray | None:
        return constant_value(name, self.inits, self.producer)

    def dtype(self, name: str) -> int | None:
        if name in self.inits:
            return self.inits[name].data_type
        value = self.values.get(name)
        return value.type.tensor_type.elem_type if value is not None else None

    def rank(self, name: str) -> int | None:
        if name in self.inits:
            return len(self.inits[name].dims)
        value = self.values.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return None
        return len(value.type.tensor_type.shape.dim)

    def shape(self, name: str) -> list[int] | None:
        if name in self.inits:
            return list(self.inits[name].dims)
        value = self.values.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return None
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def qdq_units(model: onnx.ModelProto, index: _GraphIndex | None = None
              ) -> dict[str, list[onnx.NodeProto]]:
    """Target node name -> [target, its DequantizeLinear inputs, its QuantizeLinear outputs].

    An approximation of ONNX Runtime's QDQ selectors (the NodeUnits every EP sees): a
    node whose non-constant inputs all come from DequantizeLinear and whose outputs all
    go to QuantizeLinear only. ORT's basic optimizations give every such DQ a single
    consumer first (EnsureUniqueDQForNodeUnit), as in the analysed model.
    """
    g = index or _GraphIndex(model)
    units = {}
    for node in model.graph.node:
        if node.op_type in onnx_meta.QDQ_OPS or node.op_type == "Constant":
            continue
        data = [i for i in node.input if i and i not in g.inits and g.const(i) is None]
        dqs = [g.producer.get(i) for i in data]
        if not dqs or any(p is None or p.op_type != "DequantizeLinear" for p in dqs):
            continue
        outs = [c for o in node.output for c in g.consumers.get(o, [])]
        if (not outs or any(c.op_type != "QuantizeLinear" for c in outs)
                or any(o in g.outputs for o in node.output)):
            continue
        units[node.name] = [node, *dqs, *outs]
    return units


class NnapiEpRules:
    """Node predicate for ORT's partition estimator that applies the NNAPI EP's rules.

    Duck-types the checker's ``_SupportedOpsChecker`` (``is_op_supported(node)`` and
    ``get_caveats()``), so ``usability_checker.check_partitioning`` estimates the
    partitions with exactly the checker's algorithm. A node is supported when ORT's
    NNAPI op list has its type *and* the EP's op builder would accept it; the reasons
    for rejections are kept in ``reasons``. Rules (NNAPI EP sources, ORT 1.2x):

    - QDQ node groups only for NNAPI_QDQ_GROUP_OPS; their quantized inputs/outputs uint8
      per-tensor with constant scale/zero point, except a Conv/Gemm/MatMul weight
      (int8 with zero point 0 allowed, per-channel from API 29);
    - DequantizeLinear/QuantizeLinear alone: uint8, per-tensor, constant parameters;
    - Conv: 2-D, weight (and for QDQ the bias) an initializer;
    - Clip: constant bounds (0, 6) or (-1, 1) only (NNAPI RELU6 / RELU1);
    - Resize: 4-D, constant scales/sizes with N and C unchanged, nearest with
      asymmetric + floor or linear, no antialias/axes/keep_aspect_ratio_policy;
    - ReduceMean: constant axes; element-wise, Sigmoid, pools, Transpose: rank <= 4;
    - other ops take float input 0 (uint8 only inside a quantized group, or for
      Transpose/Resize/Concat/MaxPool fed by the partition).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnxruntime.tools.mobile_helpers import usability_checker as uc

        config = Path(uc.__file__).parent / "nnapi_supported_ops.md"
        self._ops = uc._SupportedOpsChecker(config)  # ORT's NNAPI op list and caveats
        self._index = _GraphIndex(model)
        self._units = qdq_units(model, self._index)
        self._unit_of = {n.name: target for target, nodes in self._units.items() for n in nodes}
        self.reasons: dict[str, str] = {}
        self._verdicts: dict[str, str | None] = {}

    def get_caveats(self) -> list[str]:
        """ORT's caveats for the ops seen that these rules do not check (none for MQNet)."""
        return [c for c in self._ops.get_caveats() if c.split(":")[1] not in _CHECKED_OPS]

    def is_op_supported(self, node: onnx.NodeProto) -> bool:
        reason = self._reason(node)
        if reason is not None:
            self.reasons[node.name] = reason
        return reason is None

    def _reason(self, node: onnx.NodeProto) -> str | None:
        target = self._unit_of.get(node.name)
        if target is not None:
            if target not in self._verdicts:
                self._verdicts[target] = self._unit_reason(self._units[target])
            return self._verdicts[target]
        if not self._ops.is_op_supported(node):
            return f"{node.op_type}: not an NNAPI op"
        return self._single_reason(node)

    # -- QDQ node groups --------------------------------------------------------------

    def _unit_reason(self, unit: list[onnx.NodeProto]) -> str | None:
        target = unit[0]
        if target.op_type not in NNAPI_QDQ_GROUP_OPS:
            return f"{target.op_type}: quantized (QDQ) {target.op_type} is not supported"
        g = self._index
        for dq in (n for n in unit[1:] if n.op_type == "DequantizeLinear"):
            position = list(target.input).index(dq.output[0])
            if position == 2 and target.op_type in _WEIGHT_INPUT:
                continue  # int32 bias: read from its initializer, checked below
            weight = _WEIGHT_INPUT.get(target.op_type) == position
            problem = self._quant_param_problem(dq, weight=weight)
            if problem:
                return f"{target.op_type}: quantized input {problem}"
        for q in (n for n in unit[1:] if n.op_type == "QuantizeLinear"):
            problem = self._quant_param_problem(q, weight=False)
            if problem:
                return f"{target.op_type}: quantized output {problem}"
        if target.op_type == "Conv":
            # The group's inputs are what its DequantizeLinear nodes read.
            weight, bias = (self._behind_dq(target.input[i]) if len(target.input) > i else ""
                            for i in (1, 2))
            if g.const(weight) is None:
                return "Conv: weight is not an initializer"
            if bias and g.const(bias) is None:
                return "Conv: quantized Conv bias is not an initializer"
            return self._conv_shape_reason(target, weight)
        return self._op_rules(target, quantized=True)

    def _behind_dq(self, name: str) -> str:
        producer = self._index.producer.get(name) if name else None
        return producer.input[0] if producer is not None and (
            producer.op_type == "DequantizeLinear") else name

    def _quant_param_problem(self, node: onnx.NodeProto, weight: bool) -> str | None:
        """Why a Q/DQ's parameters do not fit NNAPI (None when they do)."""
        g = self._index
        data = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
        zero_point = node.input[2] if len(node.input) > 2 else ""
        dtype = g.dtype(zero_point) if zero_point else _UINT8
        if node.op_type == "DequantizeLinear" and g.dtype(data) is not None:
            dtype = g.dtype(data)
        scale = g.const(node.input[1])
        if scale is None or (zero_point and g.const(zero_point) is None):
            return "has a non-constant scale or zero point"
        if dtype == _INT8 and weight:
            zp = g.const(zero_point) if zero_point else np.zeros(1)
            return None if not np.any(zp) else "int8 weight with a non-zero zero point"
        if dtype != _UINT8:
            return f"is {onnx.TensorProto.DataType.Name(dtype).lower()}, NNAPI needs uint8"
        if scale.size != 1:
            return "is per-channel, NNAPI needs per-tensor"
        return None

    # -- single nodes -----------------------------------------------------------------

    def _single_reason(self, node: onnx.NodeProto) -> str | None:
        g = self._index
        op = node.op_type
        if op in onnx_meta.QDQ_OPS:
            problem = self._quant_param_problem(node, weight=False)
            return f"{op}: {problem}" if problem else None
        if op == "Conv":
            weight = node.input[1]
            if g.const(weight) is None:
                producer = g.producer.get(weight)
                via = f" (it comes from {producer.op_type})" if producer is not None else ""
                return f"Conv: float Conv weight is not an initializer{via}"
            if len(node.input) > 2 and node.input[2] and g.const(node.input[2]) is None:
                return "Conv: bias is not an initializer"
            return self._conv_shape_reason(node, weight)
        dtype = g.dtype(node.input[0]) if node.input else None
        internal_u8 = op in ("Transpose", "Resize", "Concat", "MaxPool") and dtype == _UINT8
        if dtype not in (None, _FLOAT) and not internal_u8:
            return f"{op}: input type {onnx.TensorProto.DataType.Name(dtype).lower()}"
        return self._op_rules(node, quantized=False)

    def _conv_shape_reason(self, node: onnx.NodeProto, weight: str) -> str | None:
        if len(self._index.shape(weight) or []) != 4:
            return "Conv: only 2-D Conv is supported"
        return None

    def _op_rules(self, node: onnx.NodeProto, quantized: bool) -> str | None:
        rule = _OP_RULES.get(node.op_type)
        return rule(self._index, node) if rule else None


def _rule_clip(g: _GraphIndex, node: onnx.NodeProto) -> str | None:
    low = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    high = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if low is None or high is None:
        return "Clip: bounds missing or not constant"
    bounds = (float(low.reshape(-1)[0]), float(high.reshape(-1)[0]))
    if bounds not in ((0.0, 6.0), (-1.0, 1.0)):
        return f"Clip: only [0, 6] and [-1, 1] are supported, not [{bounds[0]:g}, {bounds[1]:g}]"
    return None


def _rule_resize(g: _GraphIndex, node: onnx.NodeProto) -> str | None:
    if g.rank(node.input[0]) != 4:
        return "Resize: only 4-D input"
    mode = _attr(node, "mode", "nearest")
    coordinates = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        rounding = _attr(node, "nearest_mode", "round_prefer_floor")
        if coordinates != "asymmetric" or rounding != "floor":
            return "Resize: nearest needs asymmetric coordinates and floor rounding"
    elif mode == "linear":
        if coordinates not in ("asymmetric", "half_pixel", "align_corners"):
            return f"Resize: linear with {coordinates} coordinates"
    else:
        return f"Resize: mode {mode}"
    if (_attr(node, "antialias", 0) or _attr(node, "axes")
            or _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch"):
        return "Resize: antialias, axes or keep_aspect_ratio_policy are not supported"
    scales = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = g.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if scales is not None and scales.size:
        if scales.size != 4 or float(scales[0]) != 1.0 or float(scales[1]) != 1.0:
            return "Resize: only H and W may be scaled"
        return None
    if sizes is None:
        return "Resize: scales or sizes must be constant"
    return None


def _rule_reduce_mean(g: _GraphIndex, node: onnx.NodeProto) -> str | None:
    if len(node.input) > 1 and node.input[1] and g.const(node.input[1]) is None:
        return "ReduceMean: axes are not constant"
    return _rule_rank(g, node)


def _rule_rank(g: _GraphIndex, node: onnx.NodeProto) -> str | None:
    ranks = [g.rank(i) for i in node.input[:2] if i]
    if any(r is None for r in ranks):
        return f"{node.op_type}: input without a known shape"
    if any(r > _MAX_RANK for r in ranks):
        return f"{node.op_type}: inputs of rank > 4"
    return None


def _rule_pool(g: _GraphIndex, node: onnx.NodeProto) -> str | None:
    return None if g.rank(node.input[0]) == 4 else f"{node.op_type}: only 2-D pooling"


_OP_RULES: dict[str, Callable[[_GraphIndex, onnx.NodeProto], str | None]] = {
    "Clip": _rule_clip,
    "Resize": _rule_resize,
    "ReduceMean": _rule_reduce_mean,
    **{op: _rule_rank for op in ("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Sigmoid",
                                 "Transpose")},
    **{op: _rule_pool for op in ("AveragePool", "GlobalAveragePool", "MaxPool",
                                 "GlobalMaxPool")},
}
# Ops whose caveats in ORT's NNAPI list the rules above check.
_CHECKED_OPS = frozenset({*_OP_RULES, "Conv", "DequantizeLinear", "QuantizeLinear"})


def nnapi_rules_coverage(model: onnx.ModelProto, parts: dict[str, str] | None = None
                         ) -> EpCoverage:
    """NNAPI partitions under the EP's own rules, estimated by ORT's partition algorithm."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    rules = NnapiEpRules(model)
    info = uc.check_partitioning(model.graph, rules, require_fixed_input_sizes=True)
    coverage = coverage_from_partitioning(info, model, NNAPI_RULES_EP, "NNAPI EP rules",
                                          reasons=rules.reasons, parts=parts)
    coverage.unsupported_ops = dict(Counter(
        reason.split(":")[0] for reason in rules.reasons.values()
        if reason.endswith("not an NNAPI op")))
    coverage.other_unsupported = {k: v for k, v in coverage.other_unsupported.items()
                                  if not k.endswith("not an NNAPI op")}
    return coverage


# --------------------------------------------------------------------------------------
# 3. The .ort format
# --------------------------------------------------------------------------------------


def convert_to_ort(model_path: Path, out_dir: Path, styles: tuple[str, ...] = ORT_STYLES,
                   target_platform: str | None = "arm"
                   ) -> tuple[list[tuple[str, Path]], list[Path]]:
    """Run ``convert_onnx_models_to_ort``; return ((style, .ort path), ...) and its configs
    (the operators a minimal ORT build needs).

    The converter writes beside its input or into a folder; it runs here in a staging
    folder inside ``out_dir`` and its files are then renamed into place, so ``out_dir``
    never holds a half-written .ort.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    unknown = [s for s in styles if s not in ORT_STYLES]
    if unknown:
        raise UsageError(f"unknown .ort optimization style {unknown[0]!r}; use {ORT_STYLES}")
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        raise UsageError(f"folder {out_dir.parent} (for the .ort output) does not exist")
    out_dir.mkdir(exist_ok=True)  # a folder of its own, like the converter's --output_dir
    with tempfile.TemporaryDirectory(prefix=".itm-onnx-ort-", dir=out_dir) as stage:
        source = Path(stage) / "in" / Path(model_path).name
        source.parent.mkdir()
        shutil.copyfile(model_path, source)  # the converter processes its input's folder
        try:
            with _quiet_ort_tools():
                convert_onnx_models_to_ort(
                    source, output_dir=Path(stage) / "out",
                    optimization_styles=[OptimizationStyle[s] for s in styles],
                    target_platform=target_platform)
        except Exception as exc:
            raise ItmOnnxError(f"conversion to .ort failed: {_first_line(exc)}") from None
        produced = sorted((Path(stage) / "out").iterdir())
        for path in produced:
            os.replace(path, out_dir / path.name)
    stem = Path(model_path).stem
    converted = []
    for style in styles:
        suffix = ".with_runtime_opt.ort" if style == "Runtime" else ".ort"
        converted.append((style, out_dir / f"{stem}{suffix}"))
    return converted, [out_dir / p.name for p in produced if p.suffix == ".config"]


def probe_inputs(model: onnx.ModelProto, seed: int = 0, default_side: int = 64
                 ) -> list[dict[str, np.ndarray]]:
    """Two float inputs per graph input (uniform noise, flat grey); dynamic dims -> 64."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds_noise, feeds_grey = {}, {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                 else (1 if i == 0 else default_side) for i, d in enumerate(dims)]
        feeds_noise[value.name] = rng.random(shape, dtype=np.float32)
        feeds_grey[value.name] = np.full(shape, 0.5, np.float32)
    return [feeds_noise, feeds_grey]


def verify_ort(onnx_path: Path, converted: list[tuple[str, Path]], tolerance: float,
               seed: int = 0) -> list[OrtArtifact]:
    """Load each .ort in an InferenceSession and compare its output with the .onnx."""
    import onnxruntime as ort

    reference = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = probe_inputs(onnx.load(str(onnx_path), load_external_data=False), seed)
    expected = [reference.run(None, f) for f in feeds]
    results = []
    for style, path in converted:
        artifact = OrtArtifact(path=str(path), style=style, loads=False,
                               size_bytes=path.stat().st_size if path.exists() else 0)
        options = ort.SessionOptions()
        if style == "Runtime":
            # Replay the saved optimizations, as a full build should: without them the
            # model runs at the basic level, i.e. a QDQ model's float reference semantics,
            # not the int8 kernels the .onnx gets by default (measured: 0.7 apart on a
            # model quantized without reduce_range, whose x86 u8s8 kernels saturate).
            options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            artifact.loads = True
            got = [session.run(None, f) for f in feeds]
        except Exception as exc:
            artifact.error = _first_line(exc)
            results.append(artifact)
            continue
        artifact.max_abs_diff = max(float(np.abs(a - b).max())
                                    for want, have in zip(expected, got, strict=True)
                                    for a, b in zip(want, have, strict=True))
        artifact.matches = artifact.max_abs_diff <= tolerance
        results.append(artifact)
    return results


# --------------------------------------------------------------------------------------
# The command: everything above on one model
# --------------------------------------------------------------------------------------


def check_mobile(config: MobileCheckConfig) -> MobileReport:
    """Coverage per EP (ORT's checker and the NNAPI EP rules), plus the .ort round trip."""
    source = load_model(config.model)
    parts = {n.name: p for n in source.graph.node if (p := onnx_meta.node_part(n))}
    model = analysed_model(config.model, config.optimize)
    coverage = checker_coverage(model, parts)
    coverage.insert(1, nnapi_rules_coverage(model, parts))
    report = MobileReport(model=str(config.model), optimized=config.optimize,
                          nodes=len(model.graph.node), dynamic_inputs=dynamic_inputs(model),
                          coverage=coverage)
    if config.convert_ort:
        tolerance = config.ort_tolerance
        if tolerance is None:
            quantized = any(n.op_type in onnx_meta.QDQ_OPS for n in source.graph.node)
            tolerance = 1.0 / 1023 if quantized else 1e-4
        report.ort, report.ort_configs = _ort_round_trip(config, tolerance)
    return report


def _ort_round_trip(config: MobileCheckConfig, tolerance: float
                    ) -> tuple[list[OrtArtifact], list[str]]:
    if config.ort_out is not None:
        converted, configs = convert_to_ort(config.model, config.ort_out, config.ort_styles,
                                            config.target_platform)
        return (verify_ort(config.model, converted, tolerance, config.seed),
                [str(c) for c in configs])
    with tempfile.TemporaryDirectory(prefix="itm-onnx-ort-") as tmp:
        converted, _ = convert_to_ort(config.model, Path(tmp), config.ort_styles,
                                      config.target_platform)
        results = verify_ort(config.model, converted, tolerance, config.seed)
    for result in results:  # the files are gone; say so instead of naming a dead path
        result.path = f"(temporary) {Path(result.path).name}"
    return results, []


# --------------------------------------------------------------------------------------
# Graph passes for mobile EPs
# --------------------------------------------------------------------------------------

ROI_NAME = "itm_onnx_resize_roi_empty"


def fill_resize_roi(model: onnx.ModelProto) -> list[str]:
    """Give every Resize an explicit empty ``roi`` initializer instead of a missing input.

    Exact (roi is only read by ``tf_crop_and_resize``) and free on every runtime. The
    exporter leaves roi out (input name ""); ORT's checker then counts the Resize as a
    node with a dynamic input, and the NNAPI EP's input check wants a shape for every
    input it is given: each of MQNet's five upsamplings would end an NNAPI partition.
    Edits ``model`` in place; returns the names of the Resize nodes changed.
    """
    changed = [n for n in model.graph.node
               if n.op_type == "Resize" and len(n.input) > 1 and not n.input[1]]
    if not changed:
        return []
    if ROI_NAME not in {t.name for t in model.graph.initializer}:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), ROI_NAME))
    for node in changed:
        node.input[1] = ROI_NAME
    return [n.name for n in changed]


@dataclass
class PrepareReport:
    """What ``prepare_for_nnapi`` changed, and what it cost in output fidelity (CPU)."""

    source: str
    artifact: str
    applied: dict[str, list[str]]  # pass -> nodes it changed
    left: list[str]  # quantized groups NNAPI cannot run that no pass could handle
    before: EpCoverage | None = None  # NNAPI under the EP rules
    after: EpCoverage | None = None
    fidelity: dict[str, float] = field(default_factory=dict)  # prepared vs source, CPU

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("before", "after"):
            coverage = getattr(self, key)
            if coverage is not None:
                data[key]["whole_model"] = coverage.whole_model
        return data


def fold_weight_dequantize(model: onnx.ModelProto,
                           only: Collection[str] | None = None) -> list[str]:
    """Replace a DequantizeLinear of a constant that feeds float nodes by its float value.

    MQNet's head keeps int8 weights with float activations: ``DequantizeLinear(int8
    weight) -> Conv``. No NNAPI op runs that (its DequantizeLinear takes uint8 per-tensor
    data only, and a float Conv needs its weight as an initializer), and ORT's CPU
    provider has no such hybrid kernel either: it dequantizes the weight on every run.
    Storing the dequantized float32 values is exact (the same ``(q - zp) * scale`` in
    float32) and costs only the file size of the head's few thousand weights. ``only``:
    fold just the DequantizeLinear nodes of these names (``quantize --mixed`` uses it).
    """
    g = _GraphIndex(model)
    units = qdq_units(model, g)
    in_units = {n.name for nodes in units.values() for n in nodes}
    changed = []
    for node in list(model.graph.node):
        if node.op_type != "DequantizeLinear" or node.name in in_units or (
                only is not None and node.name not in only):
            continue
        values = [g.const(i) if i else None for i in node.input]
        if values[0] is None or values[1] is None or (len(values) > 2 and values[2] is None
                                                      and node.input[2]):
            continue
        weight = _dequantize(values[0], values[1], values[2] if len(values) > 2 else None,
                             _attr(node, "axis", 1))
        model.graph.initializer.append(numpy_helper.from_array(weight, node.output[0]))
        model.graph.node.remove(node)
        changed.append(node.name)
    drop_unused_initializers(model)
    return changed


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                axis: int) -> np.ndarray:
    """ONNX DequantizeLinear in float32, per-tensor or per-axis."""
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis % q.ndim] = scale.size
    zp = np.zeros(1, np.int32) if zero_point is None else zero_point.astype(np.int32)
    centred = (q.astype(np.int32) - zp.reshape(shape if zp.size > 1 else [1])).astype(np.float32)
    return centred * scale.astype(np.float32).reshape(shape if scale.size > 1 else [1])


def global_pool_as_average_pool(model: onnx.ModelProto) -> list[str]:
    """Quantized GlobalAveragePool / ReduceMean over H, W -> AveragePool over the whole plane.

    The NNAPI EP runs AveragePool quantized but neither GlobalAveragePool nor ReduceMean
    (the channel attention's pooling); with a fixed input size, an AveragePool whose
    kernel is the whole plane is the same function. Float poolings are left alone.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    g = _GraphIndex(inferred)
    units = qdq_units(model, g)
    changed = []
    for target, nodes in units.items():
        node = nodes[0]
        shape = g.shape(node.input[0])
        if shape is None or len(shape) != 4 or min(shape) <= 0 or not _pools_plane(g, node):
            continue
        node.op_type = "AveragePool"
        del node.input[1:]
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("kernel_shape", shape[2:]))
        changed.append(target)
    drop_unused_initializers(model)
    return changed


def _pools_plane(g: _GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean" or _attr(node, "keepdims", 1) != 1:
        return False
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        const = g.const(node.input[1])
        axes = None if const is None else const.tolist()
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def float_gates(model: onnx.ModelProto) -> list[str]:
    """Run quantized Sigmoid gates in float: drop the Q -> DQ pair after the Sigmoid.

    NNAPI has no quantized Sigmoid in QDQ form (only the QLinearSigmoid contrib op, with
    its output fixed to scale 1/256), so each attention gate ``DQ -> Sigmoid -> Q -> DQ
    -> Mul`` ends a partition. Without the pair, the Sigmoid and the gating Mul run in
    float between the DequantizeLinear of their inputs and the Mul's QuantizeLinear,
    which NNAPI supports. Not exact: the gate is no longer rounded to 8 bits (slightly
    *more* precise). Only done where every reader of the gate is an element-wise
    Mul/Add, so no quantized Conv loses its int8 input.
    """
    g = _GraphIndex(model)
    units = qdq_units(model, g)
    changed = []
    for target, nodes in units.items():
        node = nodes[0]
        if node.op_type != "Sigmoid":
            continue
        quantizers = [n for n in nodes[1:] if n.op_type == "QuantizeLinear"]
        readers = [d for q in quantizers for d in g.consumers.get(q.output[0], [])]
        if not readers or any(d.op_type != "DequantizeLinear" for d in readers):
            continue
        users = [u for d in readers for u in g.consumers.get(d.output[0], [])]
        if not users or any(u.op_type not in ("Mul", "Add") for u in users) or any(
                d.output[0] in g.outputs for d in readers):
            continue
        for dq in readers:
            for user in g.consumers.get(dq.output[0], []):
                for i, name in enumerate(user.input):
                    if name == dq.output[0]:
                        user.input[i] = node.output[0]
        for removed in quantizers + readers:
            model.graph.node.remove(removed)
        changed.append(target)
    drop_unused_initializers(model)
    return changed


NNAPI_PASSES: dict[str, Callable[[onnx.ModelProto], list[str]]] = {
    "fill_resize_roi": fill_resize_roi,
    "fold_weight_dequantize": fold_weight_dequantize,
    "global_pool_as_average_pool": global_pool_as_average_pool,
    "float_gates": float_gates,
}


def prepare_for_nnapi(source: Path, output: Path,
                      passes: tuple[str, ...] = tuple(NNAPI_PASSES), fidelity_images: int = 2,
                      seed: int = 0) -> PrepareReport:
    """Write a copy of ``source`` that the NNAPI EP can take in fewer partitions.

    A pass pipeline in the manner of Olive: the input artifact is never edited; the new
    one records the passes in its metadata (``itm_onnx.mobile_passes``) and keeps every
    node's backbone/head tag and every tensor name that still exists. The report gives
    NNAPI coverage under the EP rules before and after, and how far the prepared model's
    CPU output moves from the source's (10-bit codes) on synthetic images.
    """
    unknown = [p for p in passes if p not in NNAPI_PASSES]
    if unknown:
        raise UsageError(f"unknown pass {unknown[0]!r}; choose from {sorted(NNAPI_PASSES)}")
    model = load_model(source)
    output = Path(output)
    if output.resolve() == Path(source).resolve():
        raise UsageError("--output must differ from --model (passes never edit their input)")
    if not output.parent.is_dir():
        raise UsageError(f"output folder {output.parent} does not exist")
    applied = {name: NNAPI_PASSES[name](model) for name in passes}
    applied = {k: v for k, v in applied.items() if v}
    onnx_meta.write_model_metadata(model, {"mobile_passes": sorted(applied)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ItmOnnxError(f"prepared model fails the ONNX checker: {_first_line(exc)}") from None
    with atomic_output(output) as tmp:
        onnx.save(model, str(tmp))
    report = PrepareReport(source=str(source), artifact=str(output), applied=applied, left=[])
    report.before = nnapi_rules_coverage(analysed_model(Path(source)))
    analysed = analysed_model(output)
    report.after = nnapi_rules_coverage(analysed)
    units = qdq_units(analysed)
    report.left = sorted(f"{nodes[0].op_type}:{t}" for t, nodes in units.items()
                         if nodes[0].op_type not in NNAPI_QDQ_GROUP_OPS)
    if fidelity_images:
        report.fidelity = compare_on_cpu(Path(source), output, fidelity_images, seed)
    return report


def compare_on_cpu(reference: Path, candidate: Path, images: int = 2, seed: int = 0
                   ) -> dict[str, float]:
    """Max |difference| and 10-bit code agreement of two models on synthetic LDR images."""
    import onnxruntime as ort

    from .arm64 import code_difference, synthetic_inputs

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (reference, candidate)]
    name = sessions[0].get_inputs()[0].name
    shape = sessions[0].get_inputs()[0].shape
    height, width = (s if isinstance(s, int) and s > 0 else 256 for s in shape[2:4])
    outputs = [[], []]
    for image in synthetic_inputs(images, height, width, seed):
        for session, out in zip(sessions, outputs, strict=True):
            out.append(session.run(None, {name: image})[0])
    return code_difference(np.concatenate(outputs[0]), np.concatenate(outputs[1]))
