"""Rewrites of the float head, applied after calibration for schemes that keep it float
(``--mixed``); those of the output transform are in :mod:`.rewrite_output`. Exact in real
arithmetic, like those of :mod:`.rewrite`:

- :func:`fold_instance_norm`: InstanceNorm + ReLU before a 1x1 conv into that conv.
- :func:`sum_into_nchwc_conv`: an identity 1x1 conv on the dequantized operand of a float
  ``Add(Upsample(...), DequantizeLinear(...))``, so that ONNX Runtime sums in NCHWc.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from .rewrite_output import OUTPUT_REWRITES


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
    model = with_shapes(model)
    g = EditGraph(model)
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
    drop_unused(model)
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


def _match_instance_norm(g: EditGraph, relu: onnx.NodeProto) -> _NormMatch | None:
    if relu.op_type != "Relu":
        return None
    users = g.consumers.get(relu.output[0], [])
    if len(users) != 1 or g.is_graph_output(relu.output[0]):
        return None
    conv = users[0]
    if not (is_plain_1x1(g, conv) and conv.input[0] == relu.output[0]):
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


def _is_spatial_mean_of(g: EditGraph, tensor: str, source: str) -> bool:
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
            perm = attr(node, "perm")
            if perm is None or len(perm) != 4:
                return False
            positions = [positions[p] for p in perm]
            continue
        if attr(node, "keepdims", 1) != 1:
            return False
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            const = g.const(node.input[1])
            axes = None if const is None else const.tolist()
        if axes is None:
            return False
        reduced |= {positions[a % 4] for a in axes}
    return reduced == {2, 3} and positions[1] == 1 and positions[0] == 0


def _is_variance_of(g: EditGraph, sqrt: onnx.NodeProto, centered: str) -> bool:
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


def _square_then_row_mean(g: EditGraph, sqrt: onnx.NodeProto, centered: str):
    """(Mul(c, c), ReduceMean(axes=[3])) at the start of the variance chain, if so."""
    for node in g.consumers.get(centered, []):
        if node.op_type == "Mul" and list(node.input) == [centered, centered]:
            users = g.consumers.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "ReduceMean":
                axes = attr(users[0], "axes")
                if axes is None and len(users[0].input) > 1:
                    const = g.const(users[0].input[1])
                    axes = None if const is None else const.tolist()
                if axes in ([3], [-1]) and attr(users[0], "keepdims", 1) == 1:
                    return node, users[0]
    return None


def _sum_of_squares(g: EditGraph, m: _NormMatch) -> list[onnx.NodeProto]:
    """Replace ``ReduceMean(c * c, axis W)`` by ``ReduceSumSquare(c, axis W) / W``: one
    full-resolution pass (reading c) instead of two and a write (the Mul); the result keeps
    the two-stage precision of the export. W is read from the tensor's shape at run time
    (ONNX Runtime folds it to a constant in a fixed-shape model), so that the artifact stays
    right at any input size: a constant 1 / W baked from the export's width scaled the
    variance wrongly wherever the model ran at another size (the quantization report runs
    the artifact at the calibration photos' native size)."""
    if m.square_mean is None:
        return []
    square, row_mean = m.square_mean
    axes = g.add_init(f"{row_mean.name}_axes", np.array([3], np.int64))
    width_index = g.add_init(f"{row_mean.name}_width_index", np.array(3, np.int64))
    sums, shape, width, width_f, inv = (g.unique(f"{row_mean.output[0]}_{s}") for s in (
        "sum", "shape", "width", "width_float", "inv_width"))
    new = [
        helper.make_node("ReduceSumSquare", [square.input[0], axes], [sums],
                         g.unique(f"{row_mean.name}_sumsq"), keepdims=1),
        helper.make_node("Shape", [m.x], [shape], g.unique(f"{row_mean.name}_shape")),  # = c's
        helper.make_node("Gather", [shape, width_index], [width],
                         g.unique(f"{row_mean.name}_width"), axis=0),
        helper.make_node("Cast", [width], [width_f], g.unique(f"{row_mean.name}_width_float"),
                         to=onnx.TensorProto.FLOAT),
        helper.make_node("Reciprocal", [width_f], [inv], g.unique(f"{row_mean.name}_inv_width")),
        helper.make_node("Mul", [sums, inv], [row_mean.output[0]],
                         g.unique(f"{row_mean.name}_scale")),
    ]
    for node in new:
        tag_like(node, row_mean)
    g.insert_before(row_mean, new)
    g.graph.node.remove(row_mean)
    g.graph.node.remove(square)
    g.refresh()
    # (insert copies the message: the graph's node is the producer of its output)
    _variance_from_moments(g, m, g.producer[new[0].output[0]])
    return new


def _variance_from_moments(g: EditGraph, m: _NormMatch, sum_squares: onnx.NodeProto) -> None:
    """``mean((x - mean)^2)`` as ``max(mean(x^2) - mean^2, 0)``: the sum of squares reads x
    itself, so the full-resolution ``x - mean`` (a read and a write of x) goes.

    In float32 the difference loses relative precision in proportion to (mean / std)^2; on
    the shipped model's head |mean| / std stays below 2.2 on the calibration photos, where
    this keeps the variance to ~1e-6 relative. The clamp keeps a flat image's variance
    (where rounding could make it negative) at 0, so that the norm's eps decides as before.
    """
    centered = sum_squares.input[0]
    sub = g.producer.get(centered)
    sqrt = g.producer.get(m.std)
    add = g.producer.get(sqrt.input[0]) if sqrt is not None else None
    if sub is None or sub.op_type != "Sub" or add is None or len(g.consumers[centered]) != 1:
        return
    var = next(i for i in add.input if g.const(i) is None)
    chain, tensor = [], var  # the nodes from the sum of squares to var
    while tensor != sum_squares.output[0]:
        node = g.producer.get(tensor)
        if node is None or len(node.output) != 1:
            return
        chain.append(node)
        tensor = node.input[0]
    # Tensors on the chain now hold moments of x, not of x - mean: new names, so that the
    # float/quantized comparison never pairs them with the export's tensors.
    renamed = {t: g.unique(f"{t}_of_x") for t in [sum_squares.output[0],
                                                   *(n.output[0] for n in chain)]}
    for node in [sum_squares, *chain]:
        node.output[0] = renamed[node.output[0]]
        node.input[0] = renamed.get(node.input[0], node.input[0])
    sum_squares.input[0] = m.x
    mean_sq, diff = g.unique(f"{m.mean}_squared"), g.unique(f"{var}_difference")
    zero = g.add_init(f"{var}_zero", np.array(0.0, np.float32))
    new = [
        helper.make_node("Mul", [m.mean, m.mean], [mean_sq], g.unique(f"{add.name}_mean_sq")),
        helper.make_node("Sub", [renamed[var], mean_sq], [diff], g.unique(f"{add.name}_moments")),
        helper.make_node("Max", [diff, zero], [var], g.unique(f"{add.name}_nonnegative")),
    ]
    for node in new:
        tag_like(node, add)
    g.replace([sub], add, new)



def _fold_instance_norm(g: EditGraph, relu: onnx.NodeProto, m: _NormMatch) -> None:
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
        tag_like(node, relu)
    g.insert_before(m.conv, nodes)
    del m.conv.input[:]
    m.conv.input.extend([clipped, weight, bias])
    for node in m.removed:
        g.graph.node.remove(node)
    _sum_of_squares(g, m)
    if np.any(flip < 0):
        _rename_sign_folded(g, m.x, m.conv)


def _rename_sign_folded(g: EditGraph, x: str, stop: onnx.NodeProto) -> None:
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


def _negate_output_channels(g: EditGraph, conv: onnx.NodeProto, flip: np.ndarray) -> None:
    weight = g.const(conv.input[1])
    conv.input[1] = g.add_init(f"{conv.input[1]}_sign_folded",
                               (weight * flip.reshape(-1, 1, 1, 1)).astype(np.float32))
    if len(conv.input) > 2 and conv.input[2]:
        conv.input[2] = g.add_init(f"{conv.input[2]}_sign_folded",
                                   (g.const(conv.input[2]) * flip).astype(np.float32))


def sum_into_nchwc_conv(model: onnx.ModelProto) -> list[str]:
    """``Add(Resize(a), b)``, ``b`` from the int8 part -> ``Add(Resize(a), Conv_I(b))``.

    ``Conv_I`` is a 1x1 conv with the identity matrix as weights (exact: every product is
    ``b * 1`` or ``b * 0``; its int8 grid is scale 1/127 and the integers 127 and 0). Why:
    after ``rewrite.float_skip_fuse`` the float Add joins ORT's NCHWc upsample with a
    dequantized int8 tensor in plain NCHW, and ORT's NCHWc transformer blocks an Add
    only when all its inputs are blocked: it reorders the upsample back, adds and
    applies the ReLU in NCHW and reorders the sum again for the next conv. A conv is
    blocked after one reorder of ``b``, and ORT folds the Add into it (the conv
    accumulates onto the upsample) and the ReLU after the Add as its activation:
    measured at 1088x1920 on 2 threads, 3 passes over a half-resolution 16-channel tensor
    fewer. Only where ``b`` has at least 8 channels (ORT blocks no narrower conv input).
    """
    g = EditGraph(with_shapes(model))
    changed = []
    for add in list(g.graph.node):
        if add.op_type != "Add" or onnx_meta.node_part(add) != onnx_meta.HEAD:
            continue
        sources = [g.producer.get(t) for t in add.input]
        if None in sources or [s.op_type for s in sources].count("Resize") != 1:
            continue
        other = 1 if sources[0].op_type == "Resize" else 0
        width = channels(g, add.input[other])
        if (onnx_meta.node_part(sources[1 - other]) != onnx_meta.HEAD
                or onnx_meta.node_part(sources[other]) == onnx_meta.HEAD
                or width is None or width < 8):
            continue
        identity = g.add_init(f"{add.name}_identity",
                              np.eye(width, dtype=np.float32).reshape(width, width, 1, 1))
        blocked = g.unique(f"{add.input[other]}_blocked")
        conv = helper.make_node("Conv", [add.input[other], identity], [blocked],
                                g.unique(f"{add.name}_into_nchwc"), kernel_shape=[1, 1])
        g.insert_before(add, [tag_like(conv, add)])
        add.input[other] = blocked
        g.refresh()
        changed.append(g.producer[blocked].name)
    drop_unused(model)
    return changed


# In the order they run (the defaults of --rewrites).
HEAD_REWRITES = {
    "fold_instance_norm": fold_instance_norm,
    **OUTPUT_REWRITES,
    "sum_into_nchwc_conv": sum_into_nchwc_conv,
}
