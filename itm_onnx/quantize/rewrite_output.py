"""Rewrites of the float output transform, applied after calibration for schemes that
keep it float (``--mixed``) on the CPU target: with int8 activations there (``--full-int8``)
they would be wrong (``exp(p log x)`` has a ``-inf`` intermediate at x = 0) or pointless,
and ``--target nnapi`` runs no rewrites (NNAPI's Clip takes only ReLU1/ReLU6 bounds; CoreML
has no Abs).

Exact in real arithmetic, like those of :mod:`.rewrite`; in float32 a result can move by
one rounding step (3 of 442k 10-bit codes changed on a 384x384 photo by the clamps and
floors; 32 of 6.3M at 1088x1920 by the dead zone and floor scale):

- :func:`clamp_as_clip` and :func:`floor_as_max`: the output transform's clamps
  ``relu(a) - relu(a - c)`` and clip floors ``x + relu(f - x)``, written in Relus for NNAPI,
  become one ``Clip`` / ``Max`` each.
- :func:`shrink_with_abs` and :func:`scale_into_clip`: the dead zone's magnitude from one
  Abs instead of two Relus, and the clip floor's scale folded into its Clip.
- :func:`pow_as_exp_log`: ``x ** p`` as ``exp(p log x)``, vectorised in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graph_edit import EditGraph, drop_unused, only_feeds, tag_like


def clamp_as_clip(model: onnx.ModelProto) -> list[str]:
    """``relu(a) - relu(a - c)`` (scalar c > 0) -> ``Clip(a, 0, c)``: 1 pass instead of 4.

    The export writes MQNet's clamps (highlight gate, clip-floor ramp) in Relus because
    NNAPI's Clip takes only the ReLU1/ReLU6 bounds; ONNX Runtime's CPU Clip is one pass
    (1088x1920x3: 1.7 ms against 7.7 ms for the four ops, measured alone). The NNAPI recipe
    (``--target nnapi``) runs no rewrites, so its graph keeps the Relus.
    """
    g = EditGraph(model)
    changed = []
    for sub in list(g.graph.node):
        match = _match_relu_difference(g, sub)
        if match is None:
            continue
        a, c, matched = match
        low = g.add_init(f"{sub.name}_clip_min", np.array(0.0, np.float32))
        high = g.add_init(f"{sub.name}_clip_max", np.array(c, np.float32))
        clip = tag_like(helper.make_node("Clip", [a, low, high], [sub.output[0]],
                                         g.unique(f"{sub.name}_clip")), sub)
        g.replace(matched, sub, [clip])
        changed.append(sub.name)
    drop_unused(model)
    return changed


def _match_relu_difference(g: EditGraph, sub: onnx.NodeProto):
    if sub.op_type != "Sub":
        return None
    upper, lower = (g.producer.get(i) for i in sub.input)
    if upper is None or lower is None or upper.op_type != "Relu" or lower.op_type != "Relu":
        return None
    shift = g.producer.get(lower.input[0])
    if shift is None or shift.op_type not in ("Sub", "Add") or shift.input[0] != upper.input[0]:
        return None
    c = g.scalar(shift.input[1])
    if c is None:
        return None
    c *= 1.0 if shift.op_type == "Sub" else -1.0
    if c <= 0 or not all(only_feeds(g, n.output[0], user)
                         for n, user in ((upper, sub), (lower, sub), (shift, lower))):
        return None
    return upper.input[0], c, [shift, upper, lower, sub]


def floor_as_max(model: onnx.ModelProto) -> list[str]:
    """``x + relu(f - x)`` -> ``Max(x, f)``: 1 pass instead of 3 (MQNet's clip floors)."""
    g = EditGraph(model)
    changed = []
    for add in list(g.graph.node):
        if add.op_type != "Add":
            continue
        for x, lifted in (add.input, reversed(add.input)):
            relu = g.producer.get(lifted)
            diff = g.producer.get(relu.input[0]) if relu is not None else None
            if (relu is None or relu.op_type != "Relu" or diff is None
                    or diff.op_type != "Sub" or diff.input[1] != x
                    or not only_feeds(g, relu.output[0], add)
                    or not only_feeds(g, diff.output[0], relu)):
                continue
            top = tag_like(helper.make_node("Max", [x, diff.input[0]], [add.output[0]],
                                            g.unique(f"{add.name}_max")), add)
            g.replace([diff, relu, add], add, [top])
            changed.append(add.name)
            break
    drop_unused(model)
    return changed


def pow_as_exp_log(model: onnx.ModelProto) -> list[str]:
    """``Pow(x, p)`` (scalar, non-integer p) -> ``Exp(Log(x) * p)``.

    MQNet's identity prediction starts with ``I ** 2.2`` on the full-resolution photo.
    ONNX Runtime's CPU Pow is a scalar ``std::pow`` per element; its Log and Exp are
    vectorised: 1088x1920x3 took 13.9 ms that way against 22.4 ms (measured alone). Equal
    in real arithmetic for every x, 0 included (``exp(-inf) = 0``), and NaN for x < 0 as
    Pow gives; in float32 within 3e-6 relative of Pow.
    """
    g = EditGraph(model)
    changed = []
    for node in list(g.graph.node):
        exponent = g.scalar(node.input[1]) if node.op_type == "Pow" else None
        if exponent is None or exponent.is_integer():
            continue
        log, scaled = g.unique(f"{node.output[0]}_log"), g.unique(f"{node.output[0]}_scaled")
        p = g.add_init(f"{node.name}_exponent", np.array(exponent, np.float32))
        new = [helper.make_node("Log", [node.input[0]], [log], g.unique(f"{node.name}_log")),
               helper.make_node("Mul", [log, p], [scaled], g.unique(f"{node.name}_mul")),
               helper.make_node("Exp", [scaled], [node.output[0]], g.unique(f"{node.name}_exp"))]
        g.replace([node], node, [tag_like(n, node) for n in new])
        changed.append(node.name)
    drop_unused(model)
    return changed


def shrink_with_abs(model: onnx.ModelProto) -> list[str]:
    """``B - B m + p`` with ``p = relu(u - d)``, ``m = p + relu(-u - d)`` ->
    ``B min(1, 1 + d - |u|) + p``: 5 full-resolution passes instead of 7.

    The export writes the dead zone's magnitude without Abs (CoreML has none) as two
    Relus and a sum; ``m = relu(|u| - d)`` for ``d >= 0``, so ``1 - m = min(1, 1 + d - |u|)``
    (one Sub of a constant and a one-sided Clip). Equal in real arithmetic; in float32
    a result can move by one rounding step. CPU target only, like every rewrite here.
    """
    g = EditGraph(model)
    changed = []
    for add in list(g.graph.node):
        match = _match_shrunk_residual(g, add)
        if match is None:
            continue
        base, u, d, positive, matched = match
        magnitude, share, kept, scaled = (g.unique(f"{add.output[0]}_{s}") for s in (
            "abs", "share", "kept", "scaled"))
        one_plus_d = g.add_init(f"{add.name}_one_plus_deadzone", np.array(1.0 + d, np.float32))
        one = g.add_init(f"{add.name}_one", np.array(1.0, np.float32))
        steps = (("Abs", [u], magnitude), ("Sub", [one_plus_d, magnitude], share),
                 ("Clip", [share, "", one], kept), ("Mul", [base, kept], scaled),
                 ("Add", [scaled, positive], add.output[0]))
        new = [helper.make_node(op, inputs, [out], g.unique(f"{add.name}_{op.lower()}"))
               for op, inputs, out in steps]
        g.replace(matched, add, [tag_like(n, add) for n in new])
        changed.append(add.name)
    drop_unused(model)
    return changed


def _match_shrunk_residual(g: EditGraph, add: onnx.NodeProto):
    """Match Add(Sub(B, Mul(B, Add(P, N))), P) with P = Relu(Sub(u, d)) and
    N = Relu(Sub(Mul(u, -1), d)); return (B, u, d, P, the nodes to replace)."""
    if add.op_type != "Add":
        return None
    for kept_name, positive in (tuple(add.input), tuple(reversed(add.input))):
        kept, relu_p = g.producer.get(kept_name), g.producer.get(positive)
        if kept is None or relu_p is None or kept.op_type != "Sub" or relu_p.op_type != "Relu":
            continue
        base, scaled = kept.input[0], g.producer.get(kept.input[1])
        if scaled is None or scaled.op_type != "Mul" or base not in scaled.input:
            continue
        magnitude = g.producer.get(_other(scaled, base))
        if magnitude is None or magnitude.op_type != "Add" or positive not in magnitude.input:
            continue
        relu_n = g.producer.get(_other(magnitude, positive))
        sub_p = g.producer.get(relu_p.input[0])
        sub_n = g.producer.get(relu_n.input[0]) if relu_n is not None else None
        if (relu_n is None or relu_n.op_type != "Relu" or sub_p is None or sub_n is None
                or sub_p.op_type != "Sub" or sub_n.op_type != "Sub"):
            continue
        d = g.scalar(sub_p.input[1])
        negated = g.producer.get(sub_n.input[0])
        u = sub_p.input[0]
        if (d is None or d < 0 or g.scalar(sub_n.input[1]) != d or negated is None
                or negated.op_type != "Mul" or u not in negated.input
                or g.scalar(_other(negated, u)) != -1.0):
            continue
        chain = ((kept, add), (scaled, kept), (magnitude, scaled), (relu_n, magnitude),
                 (sub_n, relu_n), (negated, sub_n))
        if not all(only_feeds(g, n.output[0], user) for n, user in chain):
            continue
        return base, u, d, positive, [n for n, _ in chain] + [add]
    return None


def _other(node: onnx.NodeProto, known: str) -> str:
    """The input of a two-input node that is not ``known``."""
    return node.input[1] if node.input[0] == known else node.input[0]


def scale_into_clip(model: onnx.ModelProto) -> list[str]:
    """``Clip(v k, lo, hi) c`` (scalars, c > 0) -> ``Clip(v (k c), lo c, hi c)``: one pass fewer.

    MQNet's clip floor is ``clamp((I - 250/255) 255/4, 0, 1) c``; the scale moves into the
    ramp's Mul and the Clip's bounds. Equal in real arithmetic (a positive scale commutes
    with min and max); in float32 within a rounding step.
    """
    g = EditGraph(model)
    changed = []
    for mul in list(g.graph.node):
        if mul.op_type != "Mul":
            continue
        clip = next((g.producer[i] for i in mul.input if g.producer.get(i) is not None
                     and g.producer[i].op_type == "Clip"), None)
        scale = g.scalar(_other(mul, clip.output[0])) if clip is not None else None
        ramp = g.producer.get(clip.input[0]) if scale is not None else None
        if (scale is None or scale <= 0 or ramp is None or ramp.op_type != "Mul"
                or len(clip.input) != 3 or not only_feeds(g, clip.output[0], mul)
                or not only_feeds(g, ramp.output[0], clip)):
            continue
        k_name = next((i for i in ramp.input if g.const(i) is not None), None)
        k = g.scalar(k_name) if k_name is not None else None
        bounds = [g.scalar(b) for b in clip.input[1:]]
        if k is None or None in bounds:
            continue
        ramp.input[list(ramp.input).index(k_name)] = g.add_init(
            f"{ramp.name}_scaled", np.array(k * scale, np.float32))
        for slot, (bound, label) in enumerate(zip(bounds, ("min", "max"), strict=True), start=1):
            clip.input[slot] = g.add_init(f"{clip.name}_{label}_scaled",
                                          np.array(bound * scale, np.float32))
        clip.output[0] = mul.output[0]
        g.graph.node.remove(mul)
        g.refresh()
        changed.append(mul.name)
    drop_unused(model)
    return changed


OUTPUT_REWRITES = {
    "clamp_as_clip": clamp_as_clip,
    "floor_as_max": floor_as_max,
    "shrink_with_abs": shrink_with_abs,
    "scale_into_clip": scale_into_clip,
    "pow_as_exp_log": pow_as_exp_log,
}
