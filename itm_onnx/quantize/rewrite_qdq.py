"""Edits of the quantized (QDQ) graph that let ONNX Runtime take faster kernels.

Exact: the convolutions compute the same numbers in the same order, so the artifact's
outputs are bit-identical (tested).

- :func:`pad_conv_input_channels`: an int8 conv whose input has a channel count that is
  not a multiple of 4 (MQNet's stem reads the 3-channel photo) gets its quantized input
  padded with channels at the zero point and its weights with zero channels. ONNX
  Runtime's symmetric int8 convolution (``MlasConvSym``: per-channel int8 weights with
  zero point 0, output requantized in the kernel) needs input channels in fours; without
  it the conv falls back to im2col and a separate requantization pass. Measured on the
  stem at 1088x1920 (2 threads, AMD EPYC Zen 4, AVX-512 VNNI): 11.5 ms -> 6.3 ms, plus
  1.8 ms for the Pad and 0.3 ms more for the wider transpose.
- :func:`per_image_conv_as_matmul`: a float 1x1 conv whose weights are computed per image
  (the head's second and third convs, after ``rewrite_head.fold_instance_norm``) becomes
  ``Reshape -> MatMul(W, x) + b -> Reshape``. ONNX Runtime cannot pre-pack such a conv
  nor run it in NCHWc, and its generic conv path is slower than a plain GEMM (which ORT
  gets by fusing the MatMul and Add into ``Gemm``); the last conv's fused tanh also ran
  in one thread after the GEMM, and now runs as a threaded ``Tanh``. Both compute with
  the same MLAS SGEMM kernel: bit-identical outputs. Measured at 1088x1920, 2 threads,
  AMD EPYC Zen 4 (per-node profile): 12 -> 6 conv 11.6 -> 10.2 ms, 6 -> 3 conv with its
  tanh 8.1 -> 6.4 ms.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_edit import (
    EditGraph,
    attr,
    channels,
    dim,
    has_plain_geometry,
    tag_like,
    with_shapes,
)

CHANNEL_MULTIPLE = 4


def pad_conv_input_channels(model: onnx.ModelProto) -> list[str]:
    """Pad the quantized input and int8 weights of narrow int8 convs (see module doc).

    A conv qualifies when it is ``Conv(DequantizeLinear(x_q), DequantizeLinear(W_q))``
    with group 1, an int8 weight constant with all zero points 0 (the symmetric kernel's
    condition), 8-bit activations with a per-tensor zero point, and a channel count
    known from shapes that is not a multiple of 4. Returns the convs padded.
    """
    g = EditGraph(with_shapes(model))
    padded = []
    for conv in list(g.graph.node):
        match = _match_narrow_conv(g, conv)
        if match is None:
            continue
        _pad(g, conv, *match)
        padded.append(conv.name)
        g.refresh()
    return padded


def _match_narrow_conv(g: EditGraph, conv: onnx.NodeProto):
    if conv.op_type != "Conv" or attr(conv, "group", 1) != 1 or len(conv.input) < 2:
        return None
    x_dq, w_dq = g.producer.get(conv.input[0]), g.producer.get(conv.input[1])
    if any(n is None or n.op_type != "DequantizeLinear" for n in (x_dq, w_dq)):
        return None
    weight = g.inits.get(w_dq.input[0])
    x_zero_point = g.const(x_dq.input[2]) if len(x_dq.input) > 2 else None
    w_zero_point = g.const(w_dq.input[2]) if len(w_dq.input) > 2 else None
    if weight is None or weight.data_type != onnx.TensorProto.INT8 or x_zero_point is None:
        return None
    if x_zero_point.size != 1 or x_zero_point.dtype not in (np.uint8, np.int8):
        return None  # the symmetric kernel takes 8-bit activations (and ORT pads no uint16)
    if w_zero_point is not None and np.any(w_zero_point != 0):
        return None
    count = channels(g, x_dq.input[0])
    if count is None or count % CHANNEL_MULTIPLE == 0:
        return None
    readers = [len(g.consumers.get(t, [])) for t in (x_dq.output[0], w_dq.output[0], weight.name)]
    if readers != [1, 1, 1]:
        return None  # shared: padding would change what the other readers see
    return x_dq, w_dq, weight, x_zero_point.reshape(()), count


def _pad(g: EditGraph, conv: onnx.NodeProto, x_dq: onnx.NodeProto, w_dq: onnx.NodeProto,
         weight: onnx.TensorProto, zero_point: np.ndarray, count: int) -> None:
    extra = -count % CHANNEL_MULTIPLE
    pads = g.add_init(conv.name + "_channel_pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64))
    value = g.add_init(conv.name + "_channel_pad_value", zero_point)
    padded = g.unique(x_dq.input[0] + "_channel_padded")
    pad = tag_like(helper.make_node("Pad", [x_dq.input[0], pads, value], [padded],
                                    name=g.unique(conv.name + "_channel_pad"), mode="constant"),
                   conv)
    g.insert_before(x_dq, [pad])
    x_dq.input[0] = padded
    w = numpy_helper.to_array(weight)
    zeros = np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)
    weight.CopyFrom(numpy_helper.from_array(np.concatenate([w, zeros], axis=1), weight.name))
    changed = {x_dq.output[0], w_dq.output[0]}
    stale = [v for v in g.graph.value_info if v.name in changed]
    for info in stale:  # their channel count changed; shape inference redoes them
        g.graph.value_info.remove(info)


def per_image_conv_as_matmul(model: onnx.ModelProto) -> list[str]:
    """Run float 1x1 convs with per-image weights as a MatMul (see module doc).

    A conv qualifies when its weight is computed in the graph (not a constant, nor a
    DequantizeLinear: those are int8 convs), it is 1x1 with group 1, no padding, unit
    strides and dilations, and its input's batch is 1 and its channel count known.
    H and W are read at run time, so the artifact still runs at any size. Returns the
    convs replaced.
    """
    g = EditGraph(with_shapes(model))
    replaced = []
    for conv in list(g.graph.node):
        weight = g.producer.get(conv.input[1]) if conv.op_type == "Conv" else None
        if (weight is None or weight.op_type == "DequantizeLinear"
                or attr(conv, "kernel_shape") != [1, 1] or not has_plain_geometry(conv)
                or dim(g, conv.input[0], 0) != 1):
            continue
        inputs, outputs = channels(g, conv.input[0]), channels(g, conv.output[0])
        if inputs is None or outputs is None:
            continue
        g.replace([conv], conv, _as_matmul(g, conv, inputs, outputs))
        replaced.append(conv.name)
    return replaced


def _as_matmul(g: EditGraph, conv: onnx.NodeProto, inputs: int, outputs: int
               ) -> list[onnx.NodeProto]:
    name = conv.name
    rows, flat_w, product = (g.unique(f"{conv.output[0]}_{s}") for s in ("rows", "weight_2d",
                                                                         "product"))
    nodes = [
        helper.make_node("Reshape", [conv.input[0], g.add_init(
            f"{name}_rows_shape", np.array([inputs, -1], np.int64))], [rows], g.unique(
            f"{name}_rows")),
        helper.make_node("Reshape", [conv.input[1], g.add_init(
            f"{name}_weight_shape", np.array([outputs, inputs], np.int64))], [flat_w],
            g.unique(f"{name}_weight_2d")),
        helper.make_node("MatMul", [flat_w, rows], [product], g.unique(f"{name}_matmul")),
    ]
    if len(conv.input) > 2 and conv.input[2]:
        column, biased = g.unique(f"{conv.output[0]}_bias_column"), g.unique(
            f"{conv.output[0]}_biased")
        nodes += [
            helper.make_node("Reshape", [conv.input[2], g.add_init(
                f"{name}_bias_shape", np.array([outputs, 1], np.int64))], [column],
                g.unique(f"{name}_bias_column")),
            helper.make_node("Add", [product, column], [biased], g.unique(f"{name}_bias")),
        ]
        product = biased
    plane, shape = g.unique(f"{conv.output[0]}_plane"), g.unique(f"{conv.output[0]}_shape")
    nodes += [
        helper.make_node("Shape", [conv.input[0]], [plane], g.unique(f"{name}_plane"), start=2),
        helper.make_node("Concat", [g.add_init(f"{name}_batch_channels", np.array(
            [1, outputs], np.int64)), plane], [shape], g.unique(f"{name}_shape"), axis=0),
        helper.make_node("Reshape", [product, shape], [conv.output[0]], g.unique(
            f"{name}_image")),
    ]
    return [tag_like(node, conv) for node in nodes]


QDQ_REWRITES = {
    "pad_conv_input_channels": pad_conv_input_channels,
    "per_image_conv_as_matmul": per_image_conv_as_matmul,
}
