"""The NNAPI EP's own rules, beyond ORT's checker's operator types.

The checker only looks at operator types; the EP itself
(``onnxruntime/core/providers/nnapi/nnapi_builtin/builders``) also rejects, among others,
QDQ node groups of op types it cannot run quantized, int8 or per-channel DequantizeLinear
outside a quantized Conv, a float Conv whose weight is not an initializer, Clip other
than ReLU6/ReLU1, non-constant Resize scales or ReduceMean axes, and inputs of rank > 4.
:class:`NnapiEpRules` applies those rules (mirrored from the EP sources, ORT 1.2x) and
feeds them to the checker's own partition estimator, so both views use the same
partition algorithm. The NNAPI EP is only built for Android, so this is an estimate, but
a much closer one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .. import onnx_meta
from ..utils.graph import constant_value, index_nodes
from .coverage import EpCoverage, coverage_from_partitioning

NNAPI_RULES_EP = "NNAPI (EP rules)"

# Op types the NNAPI EP runs as a quantized QDQ node group (helper.cc GetQuantizedOpType).
NNAPI_QDQ_GROUP_OPS = frozenset({"Conv", "Resize", "AveragePool", "Add", "Mul", "Transpose",
                                 "Reshape", "Softmax", "Concat", "Gemm", "MatMul"})
# Quantized inputs allowed to be int8 (and per-channel): the weight of a quantized Conv/MatMul.
_WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}
_UINT8, _INT8, _FLOAT = onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.FLOAT
_MAX_RANK = 4


class GraphIndex:
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


def node_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def qdq_units(model: onnx.ModelProto, index: GraphIndex | None = None
              ) -> dict[str, list[onnx.NodeProto]]:
    """Target node name -> [target, its DequantizeLinear inputs, its QuantizeLinear outputs].

    An approximation of ONNX Runtime's QDQ selectors (the NodeUnits every EP sees): a
    node whose non-constant inputs all come from DequantizeLinear and whose outputs all
    go to QuantizeLinear only. ORT's basic optimizations give every such DQ a single
    consumer first (EnsureUniqueDQForNodeUnit), as in the analysed model.
    """
    g = index or GraphIndex(model)
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
        self._index = GraphIndex(model)
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


def _rule_clip(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    low = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    high = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if low is None or high is None:
        return "Clip: bounds missing or not constant"
    bounds = (float(low.reshape(-1)[0]), float(high.reshape(-1)[0]))
    if bounds not in ((0.0, 6.0), (-1.0, 1.0)):
        return f"Clip: only [0, 6] and [-1, 1] are supported, not [{bounds[0]:g}, {bounds[1]:g}]"
    return None


def _rule_resize(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    if g.rank(node.input[0]) != 4:
        return "Resize: only 4-D input"
    mode = node_attr(node, "mode", "nearest")
    coordinates = node_attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        rounding = node_attr(node, "nearest_mode", "round_prefer_floor")
        if coordinates != "asymmetric" or rounding != "floor":
            return "Resize: nearest needs asymmetric coordinates and floor rounding"
    elif mode == "linear":
        if coordinates not in ("asymmetric", "half_pixel", "align_corners"):
            return f"Resize: linear with {coordinates} coordinates"
    else:
        return f"Resize: mode {mode}"
    if (node_attr(node, "antialias", 0) or node_attr(node, "axes")
            or node_attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch"):
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


def _rule_reduce_mean(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    if len(node.input) > 1 and node.input[1] and g.const(node.input[1]) is None:
        return "ReduceMean: axes are not constant"
    return _rule_rank(g, node)


def _rule_rank(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    ranks = [g.rank(i) for i in node.input[:2] if i]
    if any(r is None for r in ranks):
        return f"{node.op_type}: input without a known shape"
    if any(r > _MAX_RANK for r in ranks):
        return f"{node.op_type}: inputs of rank > 4"
    return None


def _rule_pool(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    return None if g.rank(node.input[0]) == 4 else f"{node.op_type}: only 2-D pooling"


_OP_RULES: dict[str, Callable[[GraphIndex, onnx.NodeProto], str | None]] = {
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

