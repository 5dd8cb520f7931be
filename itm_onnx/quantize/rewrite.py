"""Graph rewrites that are exact in real arithmetic and make the quantized model faster.

Each pass takes a ``ModelProto`` and returns the names of the nodes it changed; passes edit
the model they are given (the caller works on its own copy), keep every tensor name that
existed before (so that ``qdq_loss_debug`` can still match float and quantized tensors by
name), and tag each node they create with the part of the node it replaces (the
backbone/head split is never re-derived here).

Why hand-written: these are algebraic identities of *this* network's tail, which neither
onnxsim nor ONNX Runtime's optimizers know. They are applied to the float model before
calibration, so the float and quantized models compute the same (rewritten) function and
calibration sees the tensors that will actually be quantized.

- :func:`conv_before_upsample`: ``Conv1x1(Concat(Up(x), y)) = Up(Conv_a(x)) + Conv_b(y)``
  with ``W = [W_a | W_b]`` split along input channels and ``Up`` a nearest resize with an
  integer factor (a 1x1 conv commutes with nearest upsampling). Done only where the conv
  has no more output channels than ``x`` has, so the upsample never gets wider: for
  MQNet's last decoder stage it removes the full-resolution Concat and turns a 19->16
  full-resolution conv into a 16->16 conv at half resolution plus a 3->16 one.
- :func:`simplify_bounded_output`: the "bounded" output transform
  ``H = I + relu(t) * (1 - I) - relu(-t) * I`` equals ``H = I - I * |t| + relu(t)``
  (for ``t >= 0``: ``I + t - I t``; for ``t < 0``: ``I + I t``): 5 full-resolution
  element-wise ops instead of 8.
- :func:`float_photo_tail`: not a graph change but a precision one: the backbone's last
  layer (after ``conv_before_upsample``) joins the float part, which runs faster at full
  resolution in ONNX Runtime than the int8 version and its conversions.
- :func:`float_skip_fuse`: the layer before that one split as in
  :func:`conv_before_upsample` (wider upsample allowed), its upsampled branch float and
  its skip conv int8: no ``QLinearConcat`` and no int8 Resize at half resolution.
The float head's and float output transform's rewrites (applied after calibration, for
schemes that keep them float) are in :mod:`.rewrite_head` and :mod:`.rewrite_output`; the
graph-editing helpers they share in :mod:`.graph_edit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from .. import onnx_meta
from .graph_edit import (
    EditGraph,
    attr,
    channels,
    drop_unused,
    is_plain_1x1,
    tag_like,
    with_shapes,
)
from .rewrite_head import HEAD_REWRITES
from .rewrite_qdq import QDQ_REWRITES


@dataclass
class RewriteLog:
    """What the rewrites did, for the quantization report."""

    applied: dict[str, list[str]] = field(default_factory=dict)

    def add(self, rewrite: str, nodes: list[str]) -> None:
        if nodes:
            self.applied.setdefault(rewrite, []).extend(nodes)


def _nearest_factor(g: EditGraph, node: onnx.NodeProto) -> int | None:
    """The integer factor of a nearest x k spatial Resize (scales [1, 1, k, k]), else None."""
    if node.op_type != "Resize" or attr(node, "mode", b"nearest") != b"nearest":
        return None
    if len(node.input) < 3 or not node.input[2] or (len(node.input) > 3 and node.input[3]):
        return None
    if attr(node, "coordinate_transformation_mode", b"half_pixel") not in (b"asymmetric",):
        return None
    if attr(node, "nearest_mode", b"round_prefer_floor") != b"floor":
        return None
    scales = g.const(node.input[2])
    if scales is None or scales.shape != (4,) or list(scales[:2]) != [1.0, 1.0]:
        return None
    k = float(scales[2])
    return int(k) if k == scales[3] and k.is_integer() and k >= 1 else None


def conv_before_upsample(model: onnx.ModelProto) -> list[str]:
    """Apply 1x1 convs before the nearest upsample that feeds their Concat (see module doc)."""
    model = with_shapes(model)
    g = EditGraph(model)
    changed = []
    for conv in list(g.graph.node):
        match = _match_upsample_concat_conv(g, conv)
        if match is None:
            continue
        concat, up, widths, weight = match
        if weight.shape[0] > widths[0]:  # the upsample would get wider
            continue
        _split_conv(g, conv, concat, up, widths, weight)
        changed.append(conv.name)
    drop_unused(model)
    return changed


def _match_upsample_concat_conv(g: EditGraph, conv: onnx.NodeProto):
    """Match Conv1x1(Concat(Up(x), y...)) (channel axis, nearest integer upsample, the
    concat private to the conv); return (concat, up, the concat's input widths, W)."""
    if not is_plain_1x1(g, conv):
        return None
    concat = g.producer.get(conv.input[0])
    if (concat is None or concat.op_type != "Concat" or attr(concat, "axis") != 1
            or len(g.consumers.get(concat.output[0], [])) != 1
            or g.is_graph_output(concat.output[0])):
        return None
    up = g.producer.get(concat.input[0])
    widths = [channels(g, t) for t in concat.input]
    weight = g.const(conv.input[1])
    if (up is None or _nearest_factor(g, up) is None or None in widths
            or sum(widths) != weight.shape[1]):
        return None
    return concat, up, widths, weight


def _split_conv(g: EditGraph, conv, concat, up, widths, weight) -> None:
    """Replace Conv(Concat(Up(x), y...)) by Up(Conv_a(x)) + Conv_b(Concat(y...))."""
    x = up.input[0]
    rest = list(concat.input[1:])
    w_a = g.add_init(f"{conv.input[1]}_upsampled_part", weight[:, : widths[0]])
    w_b = g.add_init(f"{conv.input[1]}_direct_part", weight[:, widths[0]:])
    bias = [conv.input[2]] if len(conv.input) > 2 and conv.input[2] else []
    low, up_out, direct = (g.unique(f"{conv.output[0]}_{s}") for s in ("low", "up", "direct"))
    new = []
    if len(rest) > 1:
        rest_cat = g.unique(f"{concat.output[0]}_direct")
        new.append(helper.make_node("Concat", rest, [rest_cat], g.unique(f"{concat.name}_direct"),
                                    axis=1))
        rest = [rest_cat]
    new += [
        helper.make_node("Conv", [x, w_a, *bias], [low], g.unique(f"{conv.name}_low"),
                         kernel_shape=[1, 1]),
        helper.make_node("Resize", [low, *up.input[1:]], [up_out], g.unique(f"{up.name}_moved"),
                         **{a.name: helper.get_attribute_value(a) for a in up.attribute}),
        helper.make_node("Conv", [rest[0], w_b], [direct], g.unique(f"{conv.name}_direct"),
                         kernel_shape=[1, 1]),
        helper.make_node("Add", [up_out, direct], [conv.output[0]], g.unique(f"{conv.name}_sum")),
    ]
    for node in new:
        tag_like(node, conv)
    g.insert_before(conv, new)
    g.graph.node.remove(conv)
    for node in (concat, up):
        if not any(c is not concat and c is not conv for o in node.output
                   for c in g.consumers.get(o, [])):
            g.graph.node.remove(node)
    g.refresh()


def simplify_bounded_output(model: onnx.ModelProto) -> list[str]:
    """Rewrite ``I + relu(t)(1 - I) - relu(-t) I`` as ``I - I |t| + relu(t)`` (module doc)."""
    g = EditGraph(model)
    for final in list(g.graph.node):
        match = _match_bounded(g, final)
        if match is None:
            continue
        image, t, matched = match
        abs_t, scaled, kept, relu_t = (g.unique(f"{final.output[0]}_{s}")
                                       for s in ("abs_t", "image_abs_t", "kept", "relu_t"))
        names = [g.unique(f"{final.name}_{s}") for s in ("abs", "mul", "sub", "relu", "add")]
        new = [
            helper.make_node("Abs", [t], [abs_t], names[0]),
            helper.make_node("Mul", [image, abs_t], [scaled], names[1]),
            helper.make_node("Sub", [image, scaled], [kept], names[2]),
            helper.make_node("Relu", [t], [relu_t], names[3]),
            helper.make_node("Add", [kept, relu_t], [final.output[0]], names[4]),
        ]
        for node in new:
            tag_like(node, final)
        g.replace(matched, final, new)
        drop_unused(model)
        return [n.name for n in matched]
    return []


def _match_bounded(g: EditGraph, final: onnx.NodeProto):
    """Match Sub(Add(I, Mul(Relu(t), Sub(1, I))), Mul(Relu(Neg(t)), I)); return (I, t, nodes)."""
    if final.op_type != "Sub":
        return None
    add, mul_neg = (g.producer.get(i) for i in final.input)
    if add is None or mul_neg is None or add.op_type != "Add" or mul_neg.op_type != "Mul":
        return None
    image = add.input[0]
    mul_pos = g.producer.get(add.input[1])
    if mul_pos is None or mul_pos.op_type != "Mul":
        return None
    relu_pos, one_minus = (g.producer.get(i) for i in mul_pos.input)
    relu_neg = g.producer.get(mul_neg.input[0])
    if not all(n is not None for n in (relu_pos, one_minus, relu_neg)):
        return None
    neg = g.producer.get(relu_neg.input[0])
    ok = (relu_pos.op_type == "Relu" and one_minus.op_type == "Sub" and relu_neg.op_type == "Relu"
          and neg is not None and neg.op_type == "Neg" and mul_neg.input[1] == image
          and one_minus.input[1] == image and neg.input[0] == relu_pos.input[0])
    if not ok or g.scalar(one_minus.input[0]) != 1.0:
        return None
    matched = [final, add, mul_pos, relu_pos, one_minus, mul_neg, relu_neg, neg]
    internal = {o for n in matched[1:] for o in n.output}
    for name in internal:  # every intermediate must be private to the pattern
        if g.is_graph_output(name) or any(c not in matched for c in g.consumers.get(name, [])):
            return None
    return image, relu_pos.input[0], matched


def global_pool_for_mean(model: onnx.ModelProto) -> list[str]:
    """ReduceMean over H and W with keepdims -> GlobalAveragePool (the same function).

    ONNX Runtime's quantizer has no QDQ rule for ReduceMean, so the channel attention's
    pooling would stay a float node inside the int8 backbone; GlobalAveragePool has one.
    """
    g = EditGraph(model)
    changed = []
    for node in g.graph.node:
        if node.op_type != "ReduceMean" or attr(node, "keepdims", 1) != 1:
            continue
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            const = g.const(node.input[1])
            axes = None if const is None else const.tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        changed.append(node.name)
    drop_unused(model)
    return changed


def fold_input_affine(model: onnx.ModelProto) -> list[str]:
    """Fold the scale of ``Conv(a * x + c)`` (scalar a, c) into the conv weights.

    MQNet maps its [0, 1] input to [-1, 1] (``x * 2 - 1``) before the stem conv. ONNX
    Runtime has no int8 Sub, so that Sub would run in float on the full-resolution input
    in the middle of the int8 backbone. Since the conv's zero padding commutes with a
    scale but not with a shift, the exact rewrite is ``Conv(W, b)(a x + c) =
    Conv(a W, b)(x + c / a)``: one Add of a constant (int8 in ONNX Runtime) instead of
    Mul + Sub, and the border is unchanged.
    """
    g = EditGraph(model)
    changed = []
    for conv in list(g.graph.node):
        chain = _affine_chain(g, conv)
        weight = g.const(conv.input[1]) if chain is not None else None
        if weight is None:
            continue
        x, scale, shift, nodes = chain
        conv.input[1] = g.add_init(f"{conv.input[1]}_input_scaled",
                                   (scale * weight).astype(np.float32))
        if shift != 0.0:
            offset = g.add_init(f"{conv.name}_input_offset", np.array(shift / scale, np.float32))
            shifted = g.unique(f"{x}_offset")
            add = helper.make_node("Add", [x, offset], [shifted], g.unique(f"{conv.name}_offset"))
            g.insert_before(conv, [tag_like(add, conv)])
            x = shifted
        conv.input[0] = x
        for node in nodes:
            g.graph.node.remove(node)
        g.refresh()
        changed.append(conv.name)
    drop_unused(model)
    return changed


def _affine_chain(g: EditGraph, conv: onnx.NodeProto):
    """If ``conv``'s input is Mul/Add/Sub-by-scalar steps on x used only here, return
    ``(x, a, c, nodes)`` with ``input = a * x + c``."""
    if conv.op_type != "Conv" or attr(conv, "group", 1) != 1:
        return None
    scale, shift, nodes, tensor = 1.0, 0.0, [], conv.input[0]
    while True:
        node = g.producer.get(tensor)
        if node is None or node.op_type not in ("Mul", "Add", "Sub") or len(
                g.consumers.get(tensor, [])) != 1 or g.is_graph_output(tensor):
            break
        consts = [g.const(i) for i in node.input]
        if sum(c is not None for c in consts) != 1:
            break
        k = 1 if consts[1] is not None else 0
        v = g.scalar(node.input[k])
        if v is None:
            break
        # Walking backwards: input = scale * t + shift, with t this node's output.
        if node.op_type == "Mul":  # t = v u
            scale *= v
        elif node.op_type == "Add":  # t = u + v
            shift += scale * v
        elif k == 1:  # t = u - v
            shift -= scale * v
        else:  # t = v - u
            scale, shift = -scale, shift + scale * v
        nodes.append(node)
        tensor = node.input[1 - k]
    if not nodes or scale == 0:
        return None
    return tensor, scale, shift, nodes


# Ops the backbone's last layer may hold between its convs and the head (float_photo_tail).
_TAIL_JOINS = frozenset({"Relu", "Add", "Sum", "Resize"})


def float_photo_tail(model: onnx.ModelProto) -> list[str]:
    """Move the backbone's last layer into the float part: int8 weights, float activations.

    Not a change of the float graph (it only retags nodes ``head``), so exact; it changes
    what ``--mixed`` quantizes. After :func:`conv_before_upsample`, MQNet's last decoder
    layer is ``relu(Up(Conv_a(x)) + Conv_b(photo))`` feeding the head. Int8, it costs at
    full resolution an int8 3->16 conv, an int8 Resize and Add, a transpose and a
    16-channel DequantizeLinear, and then ONNX Runtime reorders that tensor for the head's
    NCHWc conv. Float, ``Conv_a`` runs at half resolution in NCHWc, ONNX Runtime upsamples
    in NCHWc, ``Conv_b`` reads the float photo directly and accumulates the sum with its
    ReLU fused, and the head's first conv takes the result without a reorder: measured at
    1088x1920 on 2 threads, ~80 ms less (docs/performance.md, "Where the time goes"). Only the
    half-resolution input of ``Conv_a`` is dequantized.

    Applied only when that layer is such a split (convs joined by Add/Relu/Resize, with at
    least one Resize); anything else (e.g. ``--rewrites none``) is left int8.
    """
    g = EditGraph(model)
    part = {n.name: onnx_meta.node_part(n) for n in g.graph.node}
    head_inputs = {t for n in g.graph.node if part[n.name] == onnx_meta.HEAD for t in n.input}
    pending = [g.producer[t] for t in head_inputs
               if t in g.producer and part[g.producer[t].name] == onnx_meta.BACKBONE]
    tail: dict[str, onnx.NodeProto] = {}
    while pending:
        node = pending.pop()
        if node.name in tail:
            continue
        if node.op_type != "Conv" and node.op_type not in _TAIL_JOINS:
            return []
        tail[node.name] = node
        if node.op_type == "Conv":
            continue
        sources = node.input[:1] if node.op_type == "Resize" else node.input
        for tensor in sources:
            producer = g.producer.get(tensor)
            if producer is not None and g.const(tensor) is None:
                if part[producer.name] != onnx_meta.BACKBONE:
                    return []
                pending.append(producer)
    if not any(n.op_type == "Resize" for n in tail.values()):
        return []
    for node in tail.values():
        onnx_meta.set_part(node, onnx_meta.HEAD)
    return [n.name for n in g.graph.node if n.name in tail]


def float_skip_fuse(model: onnx.ModelProto) -> list[str]:
    """Split the layer before the float tail: its upsampled branch float, its skip int8.

    After :func:`float_photo_tail`, the float part starts at the half-resolution conv of
    the last fuse layer (the one whose output is upsampled), and that conv reads the
    previous fuse layer, ``relu(Conv1x1(Concat(Up(x), skip)))``: int8, ONNX Runtime runs it
    as a nearest Resize of int8 ``x``, a ``QLinearConcat`` that requantizes the skip (its
    range is ReLU6's, the concat's is wider) and a ``QLinearConv``, and then dequantizes
    the result for the float conv. Split as in :func:`conv_before_upsample` into
    ``relu(Up(Conv_a(x)) + Conv_b(skip))``, with ``Conv_a``, the Resize, the Add and the
    ReLU float (``x`` has 8 channels at quarter resolution, cheap to dequantize, and ORT
    runs the float conv and upsample in NCHWc) and ``Conv_b`` int8 on the skip as it is
    (no requantizing concat). The upsample gets wider (``Conv_a``'s 16 outputs, not
    ``x``'s 8), which is why :func:`conv_before_upsample` leaves such a layer alone while
    it is int8. With ``rewrite_head.sum_into_nchwc_conv`` (``--mixed``), measured at
    1088x1920 on 2 threads in ORT's per-node profile: ~40 ms of half-resolution work
    (Resize 8, QLinearConcat 20, dequantize and reorder 12) became ~30 (int8 skip conv 4,
    dequantize and reorder 13, upsample 5, summing conv 5; docs/performance.md, "Where the
    time goes").

    Exact in real arithmetic (the split); it changes what ``--mixed`` quantizes: one
    int8 tensor fewer (the concat), a new one (``Conv_b``'s output), float where it was
    int8 (the rest). Applied only after :func:`float_photo_tail` (the conv it feeds must
    be a float conv whose output is upsampled), and only to a two-input concat.
    """
    g = EditGraph(with_shapes(model))
    changed = []
    for head_conv in [n for n in g.graph.node if n.op_type == "Conv"
                      and onnx_meta.node_part(n) == onnx_meta.HEAD]:
        if not any(c.op_type == "Resize" for c in g.consumers.get(head_conv.output[0], [])):
            continue
        relu = g.producer.get(head_conv.input[0])
        conv = g.producer.get(relu.input[0]) if relu is not None else None
        if (relu is None or relu.op_type != "Relu" or conv is None
                or onnx_meta.node_part(relu) != onnx_meta.BACKBONE
                or any(onnx_meta.node_part(c) != onnx_meta.HEAD
                       for c in g.consumers.get(relu.output[0], []))
                or len(g.consumers.get(conv.output[0], [])) != 1):
            continue
        match = _match_upsample_concat_conv(g, conv)
        if match is None or len(match[0].input) != 2:
            continue
        _split_conv(g, conv, *match)
        sum_node = g.producer[conv.output[0]]
        upsample = g.producer[sum_node.input[0]]
        low_conv = g.producer[upsample.input[0]]
        for node in (low_conv, upsample, sum_node, relu):
            onnx_meta.set_part(node, onnx_meta.HEAD)
            changed.append(node.name)
    drop_unused(model)
    return changed


REWRITES = {
    "fold_input_affine": fold_input_affine,
    "global_pool_for_mean": global_pool_for_mean,
    "conv_before_upsample": conv_before_upsample,
    "simplify_bounded_output": simplify_bounded_output,
    "float_photo_tail": float_photo_tail,
    "float_skip_fuse": float_skip_fuse,
}


# Every rewrite by name, in the order quantize runs them: REWRITES on the float export,
# HEAD_REWRITES on the calibrated float model (float-head schemes), QDQ_REWRITES on the
# quantized graph.
KNOWN_REWRITES = (*REWRITES, *HEAD_REWRITES, *QDQ_REWRITES)


def apply_rewrites(model: onnx.ModelProto, names: tuple[str, ...]) -> RewriteLog:
    """Run the named rewrites (of REWRITES, HEAD_REWRITES or QDQ_REWRITES) in order."""
    log = RewriteLog()
    for name in names:
        log.add(name, {**REWRITES, **HEAD_REWRITES, **QDQ_REWRITES}[name](model))
    return log
