"""What a quantized model really contains, and how far each tensor is from the float model.

Three views, because excluding nodes from ORT's quantizer can silently change how their
neighbours are quantized (measurements.md), so the result is counted, not assumed:

- :func:`node_precisions`: the QDQ graph as written. For each compute node, the
  precision of its activation inputs (what feeds them: a DequantizeLinear of uint8/int16
  data, or a float tensor), of its weights, and of its output (all consumers are
  QuantizeLinear nodes, or not). ``int8`` means 8-bit in, 8-bit weights, 8-bit out: a
  group ONNX Runtime fuses into one integer kernel.
- :func:`runtime_kernels`: the graph ONNX Runtime actually executes after its
  optimizations (saved with ``optimized_model_filepath``): which kernels run in which
  part (QLinearConv vs a float Conv, leftover DequantizeLinear passes, ...).
- :func:`weight_grid_proof`: every head weight stored as float32 (``schemes.
  float_weights_on_grid``) checked against the int8 grid recorded beside it: per output
  channel its scale, zero point and integers, and that ``(q - zp) * scale`` in float32
  gives the stored value bit for bit.
- :func:`tensor_errors`: SQNR of every tensor present in both the float and the
  quantized model, computed with ``onnxruntime.quantization.qdq_loss_debug`` (tensor
  names are kept stable across every stage for this), worst first.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import (
    compute_activation_error,
    compute_signal_to_quantization_noice_ratio,
    create_activation_matching,
)
from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX, QUANT_INPUT_SUFFIX

from .. import onnx_meta

log = logging.getLogger(__name__)

# Ops that move or select data without arithmetic: not "compute" in the counts.
DATA_MOVEMENT = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "Split",
    "Slice", "Resize", "Pad", "Gather", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
    "MaxPool", "Shape", "Constant",
})
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_T = onnx.TensorProto
_BITS = {_T.UINT8: "uint8", _T.INT8: "int8", _T.UINT16: "uint16", _T.INT16: "int16",
         _T.FLOAT: "float32", _T.FLOAT16: "float16", _T.INT32: "int32"}
_FLOAT_CONSTANTS = (_T.FLOAT, _T.FLOAT16, _T.INT64)


@dataclass
class NodePrecision:
    name: str
    op_type: str
    part: str | None
    activations: str  # "uint8", "int16", "float32", "mixed: ...", or "-" (no activation input)
    weights: str | None  # precision of the weight input of Conv/Gemm/MatMul, else None
    output: str  # "uint8", "uint16", ... when every consumer is a QuantizeLinear, else "float32"
    precision: str  # summary: int8, int16, w8-float, float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_precisions(model: onnx.ModelProto) -> list[NodePrecision]:
    """One entry per node that is not QuantizeLinear/DequantizeLinear. A float weight
    proven on its int8 grid (:func:`weight_grid_proof`) counts as int8."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    on_grid = {g["weight"] for g in weight_grid_proof(model)["weights"] if g["on_grid"]}
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in model.graph.output}
    result = []
    for node in model.graph.node:
        if node.op_type in onnx_meta.QDQ_OPS:
            continue
        weight_index = weight_input(node, producers)
        acts, weights = [], None
        for k, name in enumerate(node.input):
            if not name:
                continue
            kind = _input_precision(name, inits, producers)
            if k == weight_index:
                source = _through_reshape(name, producers)
                weights = (_grid_precision(source, producers, on_grid)
                           or _weight_precision(source, inits, producers) or kind)
            elif weight_index is not None and k == weight_index + 1 and node.op_type != "MatMul":
                continue  # the bias: int32 (scale = input scale x weight scale) or float
            elif kind is not None:  # None: a float constant (scales, shapes, biases)
                acts.append(kind)
        out = _output_precision(node, consumers, graph_outputs, inits)
        act_text = "-" if not acts else acts[0] if len(set(acts)) == 1 else (
            "mixed: " + ", ".join(sorted(set(acts))))
        result.append(NodePrecision(node.name, node.op_type, onnx_meta.node_part(node), act_text,
                                    weights, out, _summary(act_text, weights, out)))
    return result


def weight_input(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> int | None:
    """Index of a node's weight input (WEIGHT_INPUT), or 0 for ``MatMul(W, x)`` whose left
    operand is a reshaped per-image weight (``rewrite_qdq.per_image_conv_as_matmul``)."""
    if node.op_type == "MatMul":
        source = _through_reshape(node.input[0], producers)
        scaler = producers.get(source) if source != node.input[0] else None
        if scaler is not None and scaler.op_type == "Mul":
            return 0
    return WEIGHT_INPUT.get(node.op_type)


def _through_reshape(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The tensor a chain of Reshape nodes starts from (``name`` itself if none)."""
    node = producers.get(name)
    while node is not None and node.op_type == "Reshape":
        name = node.input[0]
        node = producers.get(name)
    return name


def _input_precision(name: str, inits: dict[str, onnx.TensorProto],
                     producers: dict[str, onnx.NodeProto]) -> str | None:
    """Precision of what feeds an input; None for a float constant that is not a weight."""
    if name in inits:
        dtype = inits[name].data_type
        return None if dtype in _FLOAT_CONSTANTS else _BITS.get(dtype, str(dtype))
    node = producers.get(name)
    if node is None:
        return "float32"  # a graph input
    if node.op_type == "DequantizeLinear":
        return _quant_dtype(node, inits, producers)
    if node.op_type == "QuantizeLinear":  # integer data moved before its DequantizeLinear
        return _quantized_dtype(node, inits)
    if node.op_type == "Constant":
        return None
    return "float32"


def _grid_precision(name: str, producers, on_grid: set[str]) -> str | None:
    """"int8" for a weight on its int8 grid, read directly or scaled per image (Mul)."""
    node = producers.get(name)
    if name in on_grid or (node is not None and node.op_type == "Mul"
                           and any(i in on_grid for i in node.input)):
        return "int8"
    return None


def weight_grid_proof(model: onnx.ModelProto, part: str | None = onnx_meta.HEAD
                      ) -> dict[str, Any]:
    """Check every float weight recorded as int8 (node metadata ``schemes.GRID_KEY``).

    For each: ``q = rint(W / scale) + zp`` per output channel must lie in [-128, 127]
    and ``(q - zp) * scale`` in float32 must equal the stored W bit for bit; then W is
    exactly what DequantizeLinear(q) gives. Also lists the weighted nodes of ``part``
    whose weight is float without such a record (``unproven``): ``all_on_grid`` holds
    only when there are none and every record checks.
    """
    from .schemes import GRID_KEY

    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weights, proven = [], set()
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == GRID_KEY:
                record = json.loads(prop.value)
                weights.append(_check_grid(record, inits, node.name))
                if weights[-1]["on_grid"]:
                    proven.add(record["weight"])
    unproven = []
    for node in model.graph.node:
        index = weight_input(node, producers)
        if index is None or len(node.input) <= index or (
                part is not None and onnx_meta.node_part(node) != part):
            continue
        name = _through_reshape(node.input[index], producers)
        scaler = producers.get(name)
        sources = ([i for i in scaler.input if i in inits] if scaler is not None
                   and scaler.op_type == "Mul" else [name])
        for source in sources:
            if (source in inits and inits[source].data_type == _T.FLOAT
                    and source not in proven):
                unproven.append(f"{node.name}: {source}")
    return {"weights": weights, "unproven": unproven,
            "all_on_grid": all(w["on_grid"] for w in weights) and not unproven}


def _check_grid(record: dict[str, Any], inits: dict[str, onnx.TensorProto],
                reader: str) -> dict[str, Any]:
    name = record["weight"]
    result: dict[str, Any] = {"weight": name, "read_by": reader, "dtype": record["dtype"],
                              "on_grid": False}
    if name not in inits or inits[name].data_type != _T.FLOAT:
        return {**result, "problem": "not a float32 initializer"}
    weight = numpy_helper.to_array(inits[name])
    rows = weight.reshape(weight.shape[0], -1)
    scale = np.asarray(record["scale"], np.float32)
    zero_point = np.asarray(record["zero_point"], np.int64)
    if scale.size != rows.shape[0] or zero_point.size != rows.shape[0] or np.any(scale <= 0):
        return {**result, "problem": "the grid does not match the weight's channels"}
    channels, exact = [], True
    for c, row in enumerate(rows):
        q = np.rint(row.astype(np.float64) / float(scale[c])).astype(np.int64) + zero_point[c]
        back = ((q - zero_point[c]).astype(np.float32) * scale[c]).astype(np.float32)
        ok = bool(q.min() >= -128 and q.max() <= 127
                  and np.array_equal(back.view(np.uint32), row.view(np.uint32)))
        exact &= ok
        channels.append({"channel": c, "scale": float(scale[c]), "zero_point": int(zero_point[c]),
                         "on_grid": ok, "integers": q.tolist()})
    return {**result, "on_grid": exact, "channels": channels}


def _weight_precision(name: str, inits, producers) -> str | None:
    """A weight scaled per image (``Mul(DequantizeLinear(W), a)``, see
    ``rewrite.fold_instance_norm``) is stored as the dequantized tensor's type."""
    node = producers.get(name)
    if node is None or node.op_type != "Mul":
        return None
    for value in node.input:
        source = producers.get(value)
        if source is not None and source.op_type == "DequantizeLinear":
            return _quant_dtype(source, inits, producers)
    return None


def _quant_dtype(dq: onnx.NodeProto, inits, producers) -> str:
    """The integer type a DequantizeLinear reads (its zero point's type, else its input's)."""
    if len(dq.input) > 2 and dq.input[2] in inits:
        return _BITS.get(inits[dq.input[2]].data_type, "int?")
    if dq.input[0] in inits:
        return _BITS.get(inits[dq.input[0]].data_type, "int?")
    q = producers.get(dq.input[0])
    if q is not None and len(q.input) > 2 and q.input[2] in inits:
        return _BITS.get(inits[q.input[2]].data_type, "int?")
    return "int8"


def _output_precision(node, consumers, graph_outputs, inits) -> str:
    types = set()
    for out in node.output:
        users = consumers.get(out, [])
        if out in graph_outputs or not users:
            return "float32"
        for user in users:
            if user.op_type == "DequantizeLinear":  # integer data (a Pad between Q and DQ)
                types.add(_quant_dtype(user, inits, {}))
                continue
            if user.op_type != "QuantizeLinear":
                return "float32"
            types.add(_quantized_dtype(user, inits))
    return types.pop() if len(types) == 1 else "mixed"


def _quantized_dtype(quantize: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str:
    """The integer type a QuantizeLinear writes (its zero point's type; uint8 without)."""
    zp = quantize.input[2] if len(quantize.input) > 2 else ""
    return _BITS.get(inits[zp].data_type, "int?") if zp in inits else "uint8"


def _summary(acts: str, weights: str | None, out: str) -> str:
    ints = {"uint8", "int8"}
    wide = {"uint16", "int16"}
    act_ok = acts == "-" or acts in ints
    if act_ok and out in ints and weights in (None, *ints):
        return "int8"
    if (acts in wide or acts in ints) and out in wide | ints and weights in (None, *ints):
        return "int16"
    if weights in ints:
        return "w8-float"
    return "float"


def precision_counts(model: onnx.ModelProto, precisions: list[NodePrecision]) -> dict[str, Any]:
    """Q/DQ counts and per-part precision counts; the backbone's float compute nodes."""
    ops = collections.Counter(n.op_type for n in model.graph.node)
    per_part: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for p in precisions:
        per_part[p.part or "untagged"][p.precision] += 1
    float_backbone = [p.name for p in precisions if p.part == onnx_meta.BACKBONE
                      and p.precision != "int8" and p.op_type not in DATA_MOVEMENT]
    float_backbone_moves = [p.name for p in precisions if p.part == onnx_meta.BACKBONE
                            and p.precision != "int8" and p.op_type in DATA_MOVEMENT]
    head_convs = [p.to_dict() for p in precisions
                  if p.part == onnx_meta.HEAD and p.op_type in WEIGHT_INPUT]
    return {
        "QuantizeLinear": ops.get("QuantizeLinear", 0),
        "DequantizeLinear": ops.get("DequantizeLinear", 0),
        "by_part": {k: dict(sorted(v.items())) for k, v in sorted(per_part.items())},
        "backbone_float_compute_nodes": len(float_backbone),
        "backbone_float_compute_node_names": float_backbone,
        "backbone_float_data_movement_nodes": float_backbone_moves,
        "head_weighted_nodes": head_convs,
        "head_weight_grid": weight_grid_proof(model),
    }


def runtime_kernels(model_bytes: bytes, session_options: dict[str, Any]) -> dict[str, Any]:
    """Kernels ONNX Runtime (CPU EP) runs after graph optimization, counted per part.

    Parts are mapped through tensor names: a fused kernel's output tensor was produced in
    the QDQ model by a tagged node (or its QuantizeLinear). Layout transposes that ORT
    inserts get the part of a neighbour.
    """
    model = onnx.load_from_string(model_bytes)
    with tempfile.TemporaryDirectory(prefix="itm-onnx-opt-") as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=session_options.get("disabled_optimizers", []))
        optimized = onnx.load(options.optimized_model_filepath)
    parts = _optimized_parts(model, optimized)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    float_kernels = []
    for node in optimized.graph.node:
        part = parts.get(node.name) or "unknown"
        op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        counts[part][op] += 1
        if part == onnx_meta.BACKBONE and _is_float_kernel(node):
            float_kernels.append(f"{node.name} ({op})")
    return {
        "kernels_by_part": {k: dict(sorted(v.items())) for k, v in sorted(counts.items())},
        "backbone_float_kernels": float_kernels,
    }


def _optimized_parts(model: onnx.ModelProto, optimized: onnx.ModelProto) -> dict[str, str]:
    """Part of each node of ORT's optimized graph: by node name (ORT names fused and
    layout-transformed nodes ``<original>_token_<n>``), else by tensor names, else from
    the neighbours it was inserted between (layout transposes)."""
    by_node = {n.name: onnx_meta.node_part(n) for n in model.graph.node}
    by_tensor = {o: onnx_meta.node_part(n) for n in model.graph.node for o in n.output}
    parts: dict[str, str] = {}
    for node in optimized.graph.node:
        base = re.sub(r"(_token_\d+)+$", "", node.name)
        part = by_node.get(node.name) or by_node.get(base) or next(
            (by_tensor[t] for t in (*node.output, *node.input) if by_tensor.get(t)), None)
        if part:
            parts[node.name] = part
    producers = {o: n for n in optimized.graph.node for o in n.output}
    changed = True
    while changed:
        changed = False
        for node in optimized.graph.node:
            if node.name in parts:
                continue
            near = [parts.get(producers[i].name) for i in node.input if i in producers]
            near = [p for p in near if p]
            if near:
                parts[node.name] = near[0]
                changed = True
    return parts


def _is_float_kernel(node: onnx.NodeProto) -> bool:
    """A kernel computing in float: not QLinear*/Q/DQ and not a data-movement op."""
    if node.op_type.startswith("QLinear") or node.op_type in onnx_meta.QDQ_OPS:
        return False
    return node.op_type not in DATA_MOVEMENT


# Activation bytes (per image) each pass of the per-tensor comparison may hold: ORT's
# ``collect_activations`` keeps every tensor of every image, ~10 GB at 1088x1920 for the
# float and QDQ models together, so tensors are compared in groups under this budget.
SQNR_BUDGET_BYTES = 1_000_000_000


def tensor_errors(float_path: Path, qdq_path: Path, reader: CalibrationDataReader,
                  input_shape: tuple[int, ...], limit: int | None = None,
                  budget_bytes: int = SQNR_BUDGET_BYTES) -> list[dict[str, Any]]:
    """SQNR (dB) of every tensor the two models share by name, worst first.

    ``xmodel_sqnr``: float model's tensor vs the quantized model's (after its
    DequantizeLinear where there is one): the error accumulated up to that point.
    ``qdq_sqnr``: the quantized model's tensor before vs after its own Q/DQ pair: the
    error added by quantizing that tensor alone. Both models run with graph
    optimizations off (Q/DQ act as written), exposing the compared tensors as outputs.
    Matching and SQNR are ``qdq_loss_debug``'s (``create_activation_matching``,
    ``compute_activation_error``, ``compute_signal_to_quantization_noice_ratio``); the
    collection is done here in groups of tensors under ``budget_bytes`` (see above).
    """
    float_model = onnx.load(str(float_path))
    qdq_model = onnx.load(str(qdq_path))
    sizes = _float_tensor_bytes(float_model, input_shape)
    qdq_tensors = {o for n in qdq_model.graph.node for o in n.output}
    names = [t for t in sizes if t in qdq_tensors]
    rows = []
    for group in _groups(names, sizes, budget_bytes):
        related = [t + suffix for t in group for suffix in ("", DEQUANT_OUTPUT_SUFFIX,
                                                            QUANT_INPUT_SUFFIX)]
        float_acts = _collect(float_model, group, reader)
        qdq_acts = _collect(qdq_model, [t for t in related if t in qdq_tensors], reader)
        _crop_padded_channels(qdq_acts, group)
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
        for name in group:
            found = errors.get(name, {})
            # After the tensor's own Q/DQ where it has one, else the tensor itself.
            xmodel = found.get("xmodel_err")
            if xmodel is None and name in qdq_acts:
                xmodel = compute_signal_to_quantization_noice_ratio(float_acts[name],
                                                                    qdq_acts[name])
            row = {"tensor": name, "xmodel_sqnr": _finite(xmodel)}
            if "qdq_err" in found:
                row["qdq_sqnr"] = _finite(found["qdq_err"])
            if not any(np.any(value) for value in float_acts[name]):
                # No signal, so no ratio: qdq_loss_debug reports 0 dB for it, which reads
                # like the worst tensor of the model rather than a dead (all-zero) ReLU.
                row.update(xmodel_sqnr=None, qdq_sqnr=None, note="all zero in the float model")
            rows.append(row)
        del float_acts, qdq_acts
    rows.sort(key=lambda r: (r["xmodel_sqnr"] if r["xmodel_sqnr"] is not None else math.inf))
    return rows[:limit] if limit else rows


def _float_tensor_bytes(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Bytes of every float activation (node outputs), with the input fixed to input_shape."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = value
    del fixed.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(fixed)
    sizes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = vi.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            continue
        count = 1
        for dim in tensor.shape.dim:
            count *= dim.dim_value if dim.dim_value else 1
        sizes[vi.name] = 4 * count
    produced = [o for n in model.graph.node if n.op_type != "Constant" for o in n.output]
    return {t: sizes[t] for t in produced if t in sizes}


def _groups(names: list[str], sizes: dict[str, int], budget: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    used = 0
    for name in names:
        cost = 3 * sizes[name]  # float tensor + QDQ model's tensor before and after Q/DQ
        if groups[-1] and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += cost
    return [g for g in groups if g]


def _collect(model: onnx.ModelProto, tensors: list[str],
             reader: CalibrationDataReader) -> dict[str, list[np.ndarray]]:
    """Values of ``tensors`` for every input of ``reader`` (graph optimizations off)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    outputs = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in outputs:
            augmented.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = False  # give memory back between groups and nodes
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    session = ort.InferenceSession(augmented.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    collected: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            collected[name].append(value)
    return collected


def _crop_padded_channels(qdq_acts: dict[str, list[np.ndarray]], tensors: list[str]) -> None:
    """Compare a tensor whose quantized copy was padded with extra channels
    (``rewrite_qdq.pad_conv_input_channels``) on its own channels: the leading ones."""
    for name in tensors:
        before = qdq_acts.get(name) or qdq_acts.get(name + QUANT_INPUT_SUFFIX)
        after = qdq_acts.get(name + DEQUANT_OUTPUT_SUFFIX)
        if not before or not after or before[0].ndim != 4 or after[0].ndim != 4:
            continue
        channels = before[0].shape[1]
        if after[0].shape[1] > channels:
            qdq_acts[name + DEQUANT_OUTPUT_SUFFIX] = [a[:, :channels] for a in after]


def _finite(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), 2)
