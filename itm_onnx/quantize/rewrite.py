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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import onnx_meta
from ..utils.graph import constant_value, drop_unused_initializers, index_nodes


@dataclass
class RewriteLog:
    """What the rewrites did, for the quantization report."""

    applied: dict[str, list[str]] = field(default_factory=dict)

    def add(self, rewrite: str, nodes: list[str]) -> None:
        if nodes:
            self.applied.setdefault(rewrite, []).extend(nodes)


class _Graph:
    """Producer/consumer lookups over a graph that is being edited."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.names: set[str] = {n.name for n in self.graph.node}
        self.refresh()

    def refresh(self) -> None:
        self.producer, self.consumers = index_nodes(self.graph)

    def const(self, name: str) -> np.ndarray | None:
        return constant_value(name, self.inits, self.producer)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names or name in self.inits or name in self.producer:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def add_init(self, base: str, array: np.ndarray) -> str:
        name = self.unique(base)
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def is_graph_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _nearest_factor(g: _Graph, node: onnx.NodeProto) -> int | None:
    """The integer factor of a nearest x k spatial Resize (scales [1, 1, k, k]), else None."""
    if node.op_type != "Resize" or _attr(node, "mode", b"nearest") != b"nearest":
        return None
    if len(node.input) < 3 or not node.input[2] or (len(node.input) > 3 and node.input[3]):
        return None
    if _attr(node, "coordinate_transformation_mode", b"half_pixel") not in (b"asymmetric",):
        return None
    if _attr(node, "nearest_mode", b"round_prefer_floor") != b"floor":
        return None
    scales = g.const(node.input[2])
    if scales is None or scales.shape != (4,) or list(scales[:2]) != [1.0, 1.0]:
        return None
    k = float(scales[2])
    return int(k) if k == scales[3] and k.is_integer() and k >= 1 else None


def _is_plain_1x1(g: _Graph, conv: onnx.NodeProto) -> bool:
    weight = g.const(conv.input[1]) if len(conv.input) > 1 else None
    if conv.op_type != "Conv" or weight is None or weight.ndim != 4:
        return False
    pads = _attr(conv, "pads", [0, 0, 0, 0])
    return (weight.shape[2:] == (1, 1) and _attr(conv, "group", 1) == 1 and not any(pads)
            and all(s == 1 for s in _attr(conv, "strides", [1, 1]))
            and all(d == 1 for d in _attr(conv, "dilations", [1, 1])))


def _channels(g: _Graph, tensor: str) -> int | None:
    """Channel count of an activation, from value_info/graph inputs (shape inference)."""
    for vi in list(g.graph.value_info) + list(g.graph.input) + list(g.graph.output):
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            return dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else None
    return None


def _tag_like(node: onnx.NodeProto, reference: onnx.NodeProto) -> onnx.NodeProto:
    part = onnx_meta.node_part(reference)
    if part:
        node.metadata_props.add(key=onnx_meta.PART_KEY, value=part)
    return node


def conv_before_upsample(model: onnx.ModelProto) -> list[str]:
    """Apply 1x1 convs before the nearest upsample that feeds their Concat (see module doc)."""
    model = _with_shapes(model)
    g = _Graph(model)
    changed = []
    for conv in list(g.graph.node):
        if not _is_plain_1x1(g, conv):
            continue
        concat = g.producer.get(conv.input[0])
        if (concat is None or concat.op_type != "Concat" or _attr(concat, "axis") != 1
                or len(g.consumers.get(concat.output[0], [])) != 1
                or g.is_graph_output(concat.output[0])):
            continue
        up = g.producer.get(concat.input[0])
        factor = _nearest_factor(g, up) if up is not None else None
        if factor is None:
            continue
        x = up.input[0]
        widths = [_channels(g, t) for t in concat.input]
        weight = g.const(conv.input[1])
        if None in widths or sum(widths) != weight.shape[1] or weight.shape[0] > widths[0]:
            continue
        _split_conv(g, conv, concat, up, x, widths, weight)
        changed.append(conv.name)
    _drop_unused(model)
    return changed


def _split_conv(g: _Graph, conv, concat, up, x, widths, weight) -> None:
    """Replace Conv(Concat(Up(x), y...)) by Up(Conv_a(x)) + Conv_b(Concat(y...))."""
    nodes = g.graph.node
    index = list(nodes).index(conv)
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
        _tag_like(node, conv)
    del nodes[index]
    for offset, node in enumerate(new):
        nodes.insert(index + offset, node)
    for node in (concat, up):
        if not any(c is not concat and c is not conv for o in node.output
                   for c in g.consumers.get(o, [])):
            nodes.remove(node)
    g.refresh()


def simplify_bounded_output(model: onnx.ModelProto) -> list[str]:
    """Rewrite ``I + relu(t)(1 - I) - relu(-t) I`` as ``I - I |t| + relu(t)`` (module doc)."""
    g = _Graph(model)
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
            _tag_like(node, final)
        nodes = g.graph.node
        index = list(nodes).index(final)
        for node in new:
            nodes.insert(index, node)
            index += 1
        for node in matched:
            nodes.remove(node)
        g.refresh()
        _drop_unused(model)
        return [n.name for n in matched]
    return []


def _match_bounded(g: _Graph, final: onnx.NodeProto):
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
    one = g.const(one_minus.input[0]) if ok else None
    if one is None or one.size != 1 or float(one.reshape(-1)[0]) != 1.0:
        return None
    matched = [final, add, mul_pos, relu_pos, one_minus, mul_neg, relu_neg, neg]
    internal = {o for n in matched[1:] for o in n.output}
    for name in internal:  # every intermediate must be private to the pattern
        if g.is_graph_output(name) or any(c not in matched for c in g.consumers.get(name, [])):
            return None
    return image, relu_pos.input[0], matched


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill value_info in place (channel counts are needed to split concatenated weights)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def _drop_unused(model: onnx.ModelProto) -> None:
    drop_unused_initializers(model)
    produced = {o for n in model.graph.node for o in n.output}
    vis = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(vis)


def global_pool_for_mean(model: onnx.ModelProto) -> list[str]:
    """ReduceMean over H and W with keepdims -> GlobalAveragePool (the same function).

    ONNX Runtime's quantizer has no QDQ rule for ReduceMean, so the channel attention's
    pooling would stay a float node inside the int8 backbone; GlobalAveragePool has one.
    """
    g = _Graph(model)
    changed = []
    for node in g.graph.node:
        if node.op_type != "ReduceMean" or _attr(node, "keepdims", 1) != 1:
            continue
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            const = g.const(node.input[1])
            axes = None if const is None else const.tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        changed.append(node.name)
    _drop_unused(model)
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
    g = _Graph(model)
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
            g.graph.node.insert(list(g.graph.node).index(conv), _tag_like(add, conv))
            x = shifted
        conv.input[0] = x
        for node in nodes:
            g.graph.node.remove(node)
        g.refresh()
        changed.append(conv.name)
    _drop_unused(model)
    return changed


def _affine_chain(g: _Graph, conv: onnx.NodeProto):
    """If ``conv``'s input is Mul/Add/Sub-by-scalar steps on x used only here, return
    ``(x, a, c, nodes)`` with ``input = a * x + c``."""
    if conv.op_type != "Conv" or _attr(conv, "group", 1) != 1:
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
        value = consts[k]
        if value.size != 1:
            break
        v = float(value.reshape(-1)[0])
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


REWRITES = {
    "fold_input_affine": fold_input_affine,
    "global_pool_for_mean": global_pool_for_mean,
    "conv_before_upsample": conv_before_upsample,
    "simplify_bounded_output": simplify_bounded_output,
}


def apply_rewrites(model: onnx.ModelProto, names: tuple[str, ...]) -> RewriteLog:
    """Run the named rewrites (of REWRITES or HEAD_REWRITES) in order on ``model``."""
    log = RewriteLog()
    for name in names:
        log.add(name, {**REWRITES, **HEAD_REWRITES}[name](model))
    return log


# --- float-head rewrites: applied after calibration, for schemes whose head stays float ---


def fold_instance_norm(model: onnx.ModelProto) -> list[str]:
    """``Conv1x1(relu(InstanceNorm(x)))`` -> ``Conv1x1'(max(x, m))`` with per-image weights.

    The export writes InstanceNorm as precise statistics (mean and variance in two
    stages) and then ``relu((x - mean) * gamma / std + beta)``: three more
    full-resolution passes (Mul, Add, Relu) whose result only feeds a 1x1 conv. With
    ``a = gamma / std > 0`` (after the sign flip below) the identity
    ``relu(a (x - mean) + beta) = a (max(x, m) - m)``, ``m = mean - beta / a``, moves the
    per-channel scale into the conv's weights (``W' = W a``, computed per image on the
    tiny weight tensor) and the shift into its bias (``b' = b - W' m``): one
    full-resolution Max instead of Mul + Add + Relu, the statistics untouched. Channels
    with ``gamma < 0`` are made positive exactly by negating that output channel of the
    conv producing ``x`` (InstanceNorm is odd: IN(-x) = -IN(x)). Requires the next conv to
    be 1x1 without padding (a shift does not commute with zero padding), x to come from a
    conv with constant weights when a sign flip is needed, and gamma != 0.
    """
    model = _with_shapes(model)
    g = _Graph(model)
    changed = []
    # Last norm first: folding one turns the next conv's weights into a per-image tensor,
    # and a later norm may need to flip that conv's (still constant) output channels.
    for relu in reversed(list(g.graph.node)):
        match = _match_instance_norm(g, relu)
        if match is None:
            continue
        _fold_instance_norm(g, relu, match)
        changed.append(relu.name)
        g.refresh()
    _drop_unused(model)
    return changed


@dataclass
class _NormMatch:
    x: str
    mean: str  # [1, C, 1, 1]
    std: str  # sqrt(var + eps), [1, C, 1, 1]
    gamma: np.ndarray
    beta: np.ndarray | None
    conv: onnx.NodeProto  # the 1x1 conv after the Relu
    producer: onnx.NodeProto  # the conv that makes x
    removed: list[onnx.NodeProto]
    # (Mul(c, c), ReduceMean over W of it) when the variance starts that way, else None
    square_mean: tuple[onnx.NodeProto, onnx.NodeProto] | None = None


def _match_instance_norm(g: _Graph, relu: onnx.NodeProto) -> _NormMatch | None:
    if relu.op_type != "Relu":
        return None
    users = g.consumers.get(relu.output[0], [])
    if len(users) != 1 or g.is_graph_output(relu.output[0]):
        return None
    conv = users[0]
    if not (_is_plain_1x1(g, conv) and conv.input[0] == relu.output[0]):
        return None
    if len(conv.input) > 2 and conv.input[2] and g.const(conv.input[2]) is None:
        return None
    node, beta, removed = g.producer.get(relu.input[0]), None, [relu]
    if node is not None and node.op_type == "Add":
        consts = [g.const(i) for i in node.input]
        if sum(c is not None for c in consts) != 1:
            return None
        beta = next(c for c in consts if c is not None)
        removed.append(node)
        node = g.producer.get(next(i for i, c in zip(node.input, consts, strict=True) if c is None))
    if node is None or node.op_type != "Mul":
        return None
    removed.append(node)
    sub, div = (g.producer.get(i) for i in node.input)
    if sub is not None and sub.op_type == "Div":
        sub, div = div, sub
    if sub is None or div is None or sub.op_type != "Sub" or div.op_type != "Div":
        return None
    gamma = g.const(div.input[0])
    sqrt = g.producer.get(div.input[1])
    x, mean = sub.input
    if gamma is None or sqrt is None or sqrt.op_type != "Sqrt" or not np.all(gamma != 0):
        return None
    if not _is_spatial_mean_of(g, mean, x) or not _is_variance_of(g, sqrt, sub.output[0]):
        return None
    square_mean = _square_then_row_mean(g, sqrt, sub.output[0])
    producer = g.producer.get(x)
    if producer is None or producer.op_type != "Conv" or g.const(producer.input[1]) is None:
        return None
    private = {relu.input[0], node.output[0]}
    if beta is not None:
        private.add(removed[1].output[0])
    if any(len(g.consumers.get(t, [])) != 1 or g.is_graph_output(t) for t in private):
        return None
    if len(g.consumers.get(div.output[0], [])) == 1:
        removed.append(div)
    return _NormMatch(x, mean, div.input[1], gamma, beta, conv, producer, removed, square_mean)


def _is_spatial_mean_of(g: _Graph, tensor: str, source: str) -> bool:
    """``tensor`` = mean of ``source`` over H and W (ReduceMean/Transpose chain), [1,C,1,1]."""
    chain, name = [], tensor
    while name != source:
        node = g.producer.get(name)
        if node is None or node.op_type not in ("ReduceMean", "Transpose"):
            return False
        chain.append(node)
        name = node.input[0]
    positions = [0, 1, 2, 3]  # original axis at each position
    reduced: set[int] = set()
    for node in reversed(chain):
        if node.op_type == "Transpose":
            perm = _attr(node, "perm")
            if perm is None or len(perm) != 4:
                return False
            positions = [positions[p] for p in perm]
            continue
        if _attr(node, "keepdims", 1) != 1:
            return False
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            const = g.const(node.input[1])
            axes = None if const is None else const.tolist()
        if axes is None:
            return False
        reduced |= {positions[a % 4] for a in axes}
    return reduced == {2, 3} and positions[1] == 1 and positions[0] == 0


def _is_variance_of(g: _Graph, sqrt: onnx.NodeProto, centered: str) -> bool:
    """``sqrt`` = Sqrt(spatial_mean(centered * centered) + eps)."""
    add = g.producer.get(sqrt.input[0])
    if add is None or add.op_type != "Add":
        return False
    consts = [g.const(i) for i in add.input]
    if sum(c is not None for c in consts) != 1:
        return False
    var = next(i for i, c in zip(add.input, consts, strict=True) if c is None)
    chain_end = var
    while True:  # walk down to the Mul(c, c)
        node = g.producer.get(chain_end)
        if node is None:
            return False
        if node.op_type == "Mul":
            break
        chain_end = node.input[0]
    square = g.producer[chain_end]
    return list(square.input) == [centered, centered] and _is_spatial_mean_of(g, var, chain_end)


def _square_then_row_mean(g: _Graph, sqrt: onnx.NodeProto, centered: str):
    """(Mul(c, c), ReduceMean(axes=[3])) at the start of the variance chain, if so."""
    for node in g.consumers.get(centered, []):
        if node.op_type == "Mul" and list(node.input) == [centered, centered]:
            users = g.consumers.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "ReduceMean":
                axes = _attr(users[0], "axes")
                if axes is None and len(users[0].input) > 1:
                    const = g.const(users[0].input[1])
                    axes = None if const is None else const.tolist()
                if axes in ([3], [-1]) and _attr(users[0], "keepdims", 1) == 1:
                    return node, users[0]
    return None


def _sum_of_squares(g: _Graph, m: _NormMatch) -> list[onnx.NodeProto]:
    """Replace ``ReduceMean(c * c, axis W)`` by ``ReduceSumSquare(c, axis W) / W``: one
    full-resolution pass (reading c) instead of two and a write (the Mul). Only when W is
    known (fixed-shape models); the result keeps the two-stage precision of the export."""
    if m.square_mean is None:
        return []
    square, row_mean = m.square_mean
    width = _dim(g, square.input[0], 3)
    if not width:
        return []
    axes = g.add_init(f"{row_mean.name}_axes", np.array([3], np.int64))
    sums = g.unique(f"{row_mean.output[0]}_sum")
    inv = g.add_init(f"{row_mean.name}_inv_width", np.array(1.0 / width, np.float32))
    new = [
        helper.make_node("ReduceSumSquare", [square.input[0], axes], [sums],
                         g.unique(f"{row_mean.name}_sumsq"), keepdims=1),
        helper.make_node("Mul", [sums, inv], [row_mean.output[0]],
                         g.unique(f"{row_mean.name}_scale")),
    ]
    for node in new:
        _tag_like(node, row_mean)
    index = list(g.graph.node).index(row_mean)
    for k, node in enumerate(new):
        g.graph.node.insert(index + k, node)
    g.graph.node.remove(row_mean)
    g.graph.node.remove(square)
    return new


def _dim(g: _Graph, tensor: str, axis: int) -> int | None:
    for vi in list(g.graph.value_info) + list(g.graph.input) + list(g.graph.output):
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            return dims[axis].dim_value if len(dims) > axis and dims[axis].dim_value else None
    return None


def _fold_instance_norm(g: _Graph, relu: onnx.NodeProto, m: _NormMatch) -> None:
    channels = m.gamma.size
    flip = np.sign(m.gamma.reshape(-1)).astype(np.float32)
    if np.any(flip < 0):
        _negate_output_channels(g, m.producer, flip)
    shape = (1, channels, 1, 1)
    name = relu.name
    nodes = []

    def add(op: str, inputs: list[str], suffix: str, **attrs) -> str:
        out = g.unique(f"{relu.output[0]}_{suffix}")
        nodes.append(helper.make_node(op, inputs, [out], g.unique(f"{name}_{suffix}"), **attrs))
        return out

    abs_gamma = g.add_init(f"{name}_abs_gamma", np.abs(m.gamma).reshape(shape).astype(np.float32))
    scale = add("Div", [abs_gamma, m.std], "scale")  # a = |gamma| / std
    threshold = m.mean
    if m.beta is not None:  # m = mean - beta * std / |gamma| (beta is unchanged by a flip)
        beta = g.add_init(f"{name}_beta", m.beta.reshape(shape).astype(np.float32))
        shift = add("Div", [beta, scale], "shift")
        threshold = add("Sub", [m.mean, shift], "threshold")
    clipped = add("Max", [m.x, threshold], "max")
    weight = add("Mul", [m.conv.input[1], scale], "weight")
    moved = add("Mul", [weight, threshold], "moved")
    axes = g.add_init(f"{name}_axes", np.array([1, 2, 3], np.int64))
    offset = add("ReduceSum", [moved, axes], "offset", keepdims=0)
    if len(m.conv.input) > 2 and m.conv.input[2]:
        bias = add("Sub", [m.conv.input[2], offset], "bias")
    else:
        bias = add("Neg", [offset], "bias")
    for node in nodes:
        _tag_like(node, relu)
    graph_nodes = g.graph.node
    index = list(graph_nodes).index(m.conv)
    for k, node in enumerate(nodes):
        graph_nodes.insert(index + k, node)
    del m.conv.input[:]
    m.conv.input.extend([clipped, weight, bias])
    for node in m.removed:
        graph_nodes.remove(node)
    _sum_of_squares(g, m)
    if np.any(flip < 0):
        _rename_sign_folded(g, m.x, m.conv)


def _rename_sign_folded(g: _Graph, x: str, stop: onnx.NodeProto) -> None:
    """Give new names to ``x`` and the statistics computed from it once channels of x are
    negated: tensor names stay shared with the float model only where values agree, so
    that the per-tensor comparison (``qdq_loss_debug``) does not pair unlike tensors."""
    g.refresh()
    renamed = {x: g.unique(f"{x}_sign_folded")}
    queue = [x]
    while queue:
        tensor = queue.pop()
        for node in g.consumers.get(tensor, []):
            if node is stop:
                continue
            for out in node.output:
                if out not in renamed and not g.is_graph_output(out):
                    renamed[out] = g.unique(f"{out}_sign_folded")
                    queue.append(out)
    for node in g.graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
        for k, name in enumerate(node.output):
            if name in renamed:
                node.output[k] = renamed[name]
    g.refresh()


def _negate_output_channels(g: _Graph, conv: onnx.NodeProto, flip: np.ndarray) -> None:
    weight = g.const(conv.input[1])
    conv.input[1] = g.add_init(f"{conv.input[1]}_sign_folded",
                               (weight * flip.reshape(-1, 1, 1, 1)).astype(np.float32))
    if len(conv.input) > 2 and conv.input[2]:
        conv.input[2] = g.add_init(f"{conv.input[2]}_sign_folded",
                                   (g.const(conv.input[2]) * flip).astype(np.float32))


HEAD_REWRITES = {
    "fold_instance_norm": fold_instance_norm,
}
