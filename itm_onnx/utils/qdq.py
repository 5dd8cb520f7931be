"""Passes that turn an exported QAT graph into the QDQ form ORT's int8 kernels take.

torch exports a fake-quantized weight as QuantizeLinear(float weight) -> DequantizeLinear
and a conv bias as a float initializer. ORT fuses DQ -> Conv -> Q into one int8 QLinearConv
only when the weight is a stored int8 tensor and the bias an int32 one behind its own
DequantizeLinear (scale = input scale x weight scale); otherwise the conv runs in float.
Both passes are exact: the QAT model already rounds weights and biases to those grids.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import constant_value, drop_unused_initializers, index_nodes


def _quantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
              axis: int) -> np.ndarray:
    """ONNX QuantizeLinear (round half to even, saturate) of a constant."""
    shape = [1] * values.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    steps = np.rint(values.astype(np.float64) / scale.astype(np.float64).reshape(shape))
    info = np.iinfo(zero_point.dtype)
    return np.clip(steps + zero_point.astype(np.int64).reshape(shape), info.min, info.max
                   ).astype(zero_point.dtype)


def fold_constant_quantizers(model: onnx.ModelProto) -> int:
    """Replace QuantizeLinear of a constant (a fake-quantized weight) by its int8 result."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer, _ = index_nodes(graph)
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        values, scale, zero_point = (constant_value(name, inits, producer) for name in node.input)
        if values is None or scale is None or zero_point is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        quantized = _quantize(values, scale, zero_point, axis)
        graph.initializer.append(numpy_helper.from_array(quantized, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    drop_unused_initializers(model)
    return len(folded)


def int32_conv_biases(model: onnx.ModelProto) -> int:
    """Give each Conv with quantized input and weight its bias as int32 -> DequantizeLinear.

    Only where the float bias lies exactly on the input scale x weight scale grid (the QAT
    model rounds it there); other convs are left as they are. Returns the number changed.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer, _ = index_nodes(graph)
    changed = 0
    new_nodes: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        x_scale = constant_value(x_dq.input[1], inits, producer)
        w_scale = constant_value(w_dq.input[1], inits, producer)
        if x_scale is None or w_scale is None or x_scale.size != 1:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        scale = (float(x_scale) * w_scale.astype(np.float64)).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape)
        steps = bias / scale
        if not np.array_equal(steps, np.rint(steps)) or np.abs(steps).max(initial=0) >= 2**31:
            continue
        stem = f"{node.name or node.output[0]}_bias_int32"  # one per conv: biases may be shared
        graph.initializer.extend([
            numpy_helper.from_array(steps.astype(np.int32), stem),
            numpy_helper.from_array(scale.astype(np.float32), f"{stem}_scale"),
            numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{stem}_zero_point"),
        ])
        dequantize = helper.make_node(
            "DequantizeLinear", [stem, f"{stem}_scale", f"{stem}_zero_point"],
            [f"{stem}_dq"], name=f"{stem}_DequantizeLinear", axis=0)
        node.input[2] = f"{stem}_dq"
        new_nodes.append((node, dequantize))
        changed += 1
    for conv, dequantize in new_nodes:  # keep topological order: the DQ right before its conv
        graph.node.insert(list(graph.node).index(conv), dequantize)
    drop_unused_initializers(model)
    return changed
