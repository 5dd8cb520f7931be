"""Graph passes that make MQNet NNAPI-friendly where the model code cannot:
:func:`fill_resize_roi` (exact, free on CPU; applied by ``itm-onnx export``) and
:func:`prepare_for_nnapi` (``itm-onnx mobile-prepare``: for a quantized model, exact
rewrites plus running the attention gates' Sigmoid in float, which NNAPI needs and the
CPU path does not)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import onnx_meta
from ..errors import ItmOnnxError, UsageError
from ..utils.atomic import atomic_output
from ..utils.graph import drop_unused_initializers
from .coverage import EpCoverage, analysed_model, first_line, load_model
from .nnapi_rules import NNAPI_QDQ_GROUP_OPS, GraphIndex, nnapi_rules_coverage, node_attr, qdq_units

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
    g = GraphIndex(model)
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
                             node_attr(node, "axis", 1))
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
    g = GraphIndex(inferred)
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


def _pools_plane(g: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean" or node_attr(node, "keepdims", 1) != 1:
        return False
    axes = node_attr(node, "axes")
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
    g = GraphIndex(model)
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
        raise ItmOnnxError(f"prepared model fails the ONNX checker: {first_line(exc)}") from None
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

    from ..arm64 import code_difference, synthetic_inputs

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
