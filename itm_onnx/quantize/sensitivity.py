"""Which quantized tensors cost output fidelity: a per-tensor sensitivity study.

For every tensor a QDQ model quantizes (each activation's QuantizeLinear/DequantizeLinear
pair, each dequantized weight), two figures on the 10-bit output scale against the float
model: the PSNR when *only* that tensor is quantized, and the PSNR when only it is left
float (everything else quantized). The first says how much error a tensor injects on its
own; the second how much fidelity promoting it would win back, which is what
``search.py`` ranks tensors by.

Cheap by construction: the QDQ model is edited once into a *switchable* model. Every
quantized activation reaches its readers through ``dq * f + x * (1 - f)`` with a scalar
flag ``f`` (a graph input, 0 or 1), and every dequantized weight becomes a graph input fed
either its dequantized or its float values. One ONNX Runtime session then evaluates every
configuration (2 per tensor, plus all-float and all-quantized) by feeding other values:
no model is rebuilt or reloaded between them. Quantization is emulated (fake-quant: the
Q/DQ pairs with float kernels), the usual way such studies are run (AIMET, NNCF,
``qdq_loss_debug``); the report also carries the figure of the real int8-kernel model so
that the two can be compared. The all-float configuration must reproduce the float
model (reported: it checks the graph edit itself).

Biases quantized to int32 (scale = input scale x weight scale) switch with their
conv's weight: alone they lose nothing measurable.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

from .. import onnx_meta
from ..utils.graph import drop_unused_initializers
from ..utils.progress import track
from .api import codes10
from .report import DATA_MOVEMENT

_FLAG_PREFIX = "itm_sensitivity_flag_"
_BITS = {TensorProto.UINT8: 8, TensorProto.INT8: 8, TensorProto.UINT16: 16,
         TensorProto.INT16: 16, TensorProto.INT32: 32}


@dataclass(frozen=True)
class QuantUnit:
    """One quantized tensor of a QDQ model and the nodes its quantization reaches."""

    tensor: str  # the float tensor's name (as in the float model)
    kind: str  # "activation" or "weight"
    part: str  # "backbone" or "head" (of the nodes that read it)
    bits: int  # storage bits (8 or 16)
    elements: int  # per image, for activations; the weight's size for weights
    readers: tuple[str, ...]  # compute nodes that read the dequantized tensor


@dataclass
class Switchable:
    model: onnx.ModelProto
    units: list[QuantUnit]
    flags: list[str]  # per unit: its flag input's name ("" for weights: they are fed)
    fixed: list[str]  # dequantized constants with no float original: always quantized
    weights: list[WeightFeed]

    def feeds(self, on: set[int]) -> dict[str, np.ndarray]:
        """The switch inputs for units ``on`` quantized, every other unit float."""
        result = {f: np.array(1.0 if k in on else 0.0, np.float32)
                  for k, f in enumerate(self.flags) if f}
        result.update({w.name: w.on if w.unit in on else w.off for w in self.weights})
        return result


@dataclass
class WeightFeed:
    name: str  # graph input (the removed DequantizeLinear's output)
    unit: int
    on: np.ndarray  # dequantized values, as DequantizeLinear computes them (float32)
    off: np.ndarray  # the float model's values


def build_switchable(qdq: onnx.ModelProto, float_model: onnx.ModelProto,
                     shapes: dict[str, int] | None = None) -> Switchable:
    """The QDQ model with a switch per quantized tensor (see the module docstring).

    ``float_model`` is the model the QDQ model was quantized from (same tensor names);
    its initializers give the float weights. ``shapes`` (tensor -> elements per image)
    only fills :attr:`QuantUnit.elements`.
    """
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    units: list[QuantUnit] = []
    unit_of: dict[str, int] = {}  # float tensor -> unit index
    switches: list[tuple[onnx.NodeProto, int, str]] = []  # (DQ node, unit, float tensor)
    fixed: list[str] = []
    added: list[onnx.TensorProto] = []
    extra_nodes: dict[str, list[onnx.NodeProto]] = {}  # after node name -> nodes to insert
    weights: list[WeightFeed] = []
    dropped: set[str] = set()

    def readers_of(dq: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [c for c in consumers.get(dq.output[0], [])]

    def new_unit(tensor: str, kind: str, bits: int, elements: int,
                 readers: list[onnx.NodeProto]) -> int:
        parts = {onnx_meta.node_part(r) for r in readers} - {None}
        part = onnx_meta.BACKBONE if onnx_meta.BACKBONE in parts or not parts else onnx_meta.HEAD
        units.append(QuantUnit(tensor, kind, part, bits, elements,
                               tuple(sorted(r.name for r in readers))))
        unit_of[tensor] = len(units) - 1
        return len(units) - 1

    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a stored constant: weight, bias or quantized scalar
            init = inits[source]
            name = source[:-len(TENSOR_NAME_QUANT_SUFFIX)] if source.endswith(
                TENSOR_NAME_QUANT_SUFFIX) else source
            original = float_inits.get(name)
            if original is None or original.data_type != TensorProto.FLOAT:
                fixed.append(source)
                continue
            readers = readers_of(node)
            if init.data_type == TensorProto.INT32:  # a bias: follows its conv's weight
                unit = _weight_unit_of_bias(readers, producers, inits, unit_of)
                if unit is None:
                    unit = new_unit(name, "weight", 32, int(np.prod(init.dims)), readers)
            else:
                unit = unit_of.get(name)
                if unit is None:
                    unit = new_unit(name, "weight", _BITS.get(init.data_type, 8),
                                    int(np.prod(init.dims)), readers)
            # Weights are fed, not switched in the graph: the DequantizeLinear goes and its
            # output becomes a graph input, given the dequantized or the float values.
            weights.append(WeightFeed(node.output[0], unit, _dequantized(node, inits),
                                      numpy_helper.to_array(original).astype(np.float32)))
            dropped.add(node.name)
            continue
        q = producers.get(source)
        if q is None or q.op_type != "QuantizeLinear":
            continue
        tensor = q.input[0]
        unit = unit_of.get(tensor)
        if unit is None:
            dq_nodes = [c for c in consumers.get(q.output[0], [])
                        if c.op_type == "DequantizeLinear"]
            readers = [r for d in dq_nodes for r in readers_of(d)]
            unit = new_unit(tensor, "activation", _quant_bits(q, inits),
                            (shapes or {}).get(tensor, 0), readers)
        switches.append((node, unit, _float_source(tensor, float_model, producers, inits,
                                                    extra_nodes, added)))

    # A switch is dq * f + x * (1 - f) with a float flag f of 0 or 1: exact for both values
    # (0 * x = 0 for finite x), and three vectorized element-wise kernels. ORT's Where with
    # a broadcast scalar condition was 30x slower than the whole model here.
    flags = [f"{_FLAG_PREFIX}{k}" for k in range(len(units))]
    after: dict[str, list[onnx.NodeProto]] = {}
    outputs = {o.name for o in graph.output}
    one = "itm_sensitivity_one"
    added.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    complements = []
    active_units = {u for _, u, _ in switches}
    for k, flag in enumerate(flags):
        if k not in active_units:
            continue
        complements.append(helper.make_node("Sub", [one, flag], [flag + "_off"],
                                            f"itm_sensitivity_off_{k}"))
    for dq, unit, tensor in switches:
        out = dq.output[0]
        switched = out + "_switched"
        flag = flags[unit]
        after.setdefault(dq.name, []).extend([
            helper.make_node("Mul", [out, flag], [out + "_on"], dq.name + "_switch_on"),
            helper.make_node("Mul", [tensor, flag + "_off"], [out + "_off"],
                             dq.name + "_switch_off"),
            helper.make_node("Add", [out + "_on", out + "_off"], [switched],
                             dq.name + "_switch"),
        ])
        for reader in consumers.get(out, []):
            for k, name in enumerate(reader.input):
                if name == out:
                    reader.input[k] = switched
        if out in outputs:
            raise ValueError(f"quantized tensor {out} is a graph output; cannot switch it")
    nodes = list(complements)
    for node in graph.node:
        if node.name in dropped:
            continue
        nodes.append(node)
        nodes.extend(extra_nodes.get(node.name, []))
        nodes.extend(after.get(node.name, []))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    active = {u for _, u, _ in switches}
    flags = [f if k in active else "" for k, f in enumerate(flags)]
    graph.input.extend(helper.make_tensor_value_info(f, TensorProto.FLOAT, []) for f in flags if f)
    graph.input.extend(helper.make_tensor_value_info(w.name, TensorProto.FLOAT, w.on.shape)
                       for w in weights)
    drop_unused_initializers(model)
    return Switchable(model, units, flags, fixed, weights)


def _float_source(tensor: str, float_model: onnx.ModelProto, producers, inits,
                  extra_nodes: dict[str, list[onnx.NodeProto]],
                  added: list[onnx.TensorProto]) -> str:
    """The float value a quantized activation stands for, in the QDQ graph.

    ORT's quantizer drops a Relu/Clip whose clipping the uint8 range already does (the
    conv then writes the clipped tensor's name); left float, that tensor needs the
    activation back. It is re-inserted from the float model on the float path only.
    """
    float_producer = next((n for n in float_model.graph.node if tensor in n.output), None)
    qdq_producer = producers.get(tensor)
    if (float_producer is None or float_producer.op_type not in ("Relu", "Clip")
            or qdq_producer is None or qdq_producer.op_type == float_producer.op_type):
        return tensor
    float_inits = {t.name: t for t in float_model.graph.initializer}
    have = set(inits) | {a.name for a in added}
    for name in float_producer.input[1:]:
        if name and name not in have and name in float_inits:
            added.append(float_inits[name])
            have.add(name)
    restored = helper.make_node(float_producer.op_type, [tensor, *float_producer.input[1:]],
                                [tensor + "_float_activation"],
                                float_producer.name + "_restored")
    restored.attribute.extend(float_producer.attribute)
    extra_nodes.setdefault(qdq_producer.name, []).append(restored)
    return restored.output[0]


def _dequantized(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """DequantizeLinear of a stored constant, in float32 as ONNX Runtime computes it."""
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zp = (numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32)
          if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale))
    if scale.size > 1 or scale.ndim == 1 and q.ndim > 1:
        axis = int(next((a.i for a in dq.attribute if a.name == "axis"), 1))
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return np.asarray((q - zp) * scale, dtype=np.float32)


def _quant_bits(q: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> int:
    if len(q.input) > 2 and q.input[2] in inits:
        return _BITS.get(inits[q.input[2]].data_type, 8)
    return 8


def _weight_unit_of_bias(readers, producers, inits, unit_of) -> int | None:
    """The unit of the weight read by the conv that reads this bias."""
    for reader in readers:
        if reader.op_type in ("Conv", "ConvTranspose", "Gemm") and len(reader.input) > 1:
            dq = producers.get(reader.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear":
                source = dq.input[0]
                name = source[:-len(TENSOR_NAME_QUANT_SUFFIX)] if source.endswith(
                    TENSOR_NAME_QUANT_SUFFIX) else source
                if name in unit_of:
                    return unit_of[name]
    return None


@dataclass
class SensitivityConfig:
    images: int = 4  # calibration images the study runs on
    # Intra-op threads of the study's session. One: the switchable model has ~1000 small
    # nodes, and with two threads the per-node synchronisation cost more than it saved
    # on this busy 2-core machine (0.07 s vs 0.23 s a run at 64x64).
    threads: int = 1


@dataclass
class TensorSensitivity:
    tensor: str
    kind: str
    part: str
    bits: int
    elements: int
    only_quantized_db: float  # output PSNR with only this tensor quantized
    only_float_db: float  # output PSNR with everything else quantized
    gain_if_float_db: float  # only_float_db - all-quantized PSNR
    readers: list[str]


@dataclass
class SensitivityReport:
    images: int
    shape: list[int]
    all_quantized_emulated_db: float
    all_float_db: float  # the switchable model with every flag off vs the float model
    tensors: list[TensorSensitivity]  # most harmful first (lowest only_quantized_db)
    seconds: dict[str, float]
    runs: int
    fixed_constants: int
    notes: list[str]
    # Activations tied by a data-movement op (Resize, MaxPool, shared-range Concat...) with
    # identical quantization parameters: leaving one float gains nothing while its
    # partner requantizes it on the same grid, so they are also measured together.
    groups: list[GroupSensitivity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ranked_by_gain(self, part: str | None = "backbone") -> list[list[TensorSensitivity]]:
        """Promotion candidates, most won back when left float first (ties: by name): a
        tied group as one candidate, every other tensor alone."""
        by_name = {t.tensor: t for t in self.tensors}
        tied = {name for g in self.groups for name in g.tensors}
        items = [([by_name[n] for n in g.tensors], g.gain_if_float_db) for g in self.groups]
        items += [([t], t.gain_if_float_db) for t in self.tensors if t.tensor not in tied]
        items = [(members, gain) for members, gain in items
                 if part is None or any(m.part == part for m in members)]
        items.sort(key=lambda item: (-item[1], item[0][0].tensor))
        return [members for members, _ in items]


@dataclass
class GroupSensitivity:
    tensors: list[str]
    only_quantized_db: float
    only_float_db: float
    gain_if_float_db: float


def tied_groups(qdq: onnx.ModelProto, units: list[QuantUnit]) -> list[list[int]]:
    """Groups (of unit indices, two or more) of activations joined by a data-movement node
    whose input and output are quantized with the same scale and zero point."""
    inits = {t.name: t for t in qdq.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    index = {u.tensor: k for k, u in enumerate(units) if u.kind == "activation"}
    params: dict[str, tuple] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in index:
            params[node.input[0]] = tuple(
                numpy_helper.to_array(inits[name]).tobytes() if name in inits else name
                for name in node.input[1:])
    parent = list(range(len(units)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for node in qdq.graph.node:
        if node.op_type not in DATA_MOVEMENT or not node.output or node.output[0] not in index:
            continue
        out = node.output[0]
        for name in node.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == \
                "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in index:
                continue
            if params.get(q.input[0]) == params.get(out):
                parent[root(index[q.input[0]])] = root(index[out])
    members: dict[int, list[int]] = {}
    for k in index.values():
        members.setdefault(root(k), []).append(k)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])


class Evaluator:
    """Runs a switchable model on fixed inputs against the float model's 10-bit codes."""

    def __init__(self, switchable: Switchable, feeds: list[dict[str, np.ndarray]],
                 reference_codes: list[np.ndarray], threads: int = 2) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(switchable.model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.switchable, self.feeds, self.reference = switchable, feeds, reference_codes
        self.runs = 0

    def psnr(self, on: set[int]) -> float:
        """Output PSNR (10-bit, pooled over the images) with units ``on`` quantized."""
        flags = self.switchable.feeds(on)
        diffs = []
        for feed, ref in zip(self.feeds, self.reference, strict=True):
            out = self.session.run(None, {**feed, **flags})[0]
            diffs.append(np.abs(codes10(out) - ref).ravel())
            self.runs += 1
        return psnr_db(np.concatenate(diffs))


def psnr_db(abs_diff: np.ndarray) -> float:
    """PSNR (peak 1023) of 10-bit code differences, to 0.001 dB (999 for identical):
    finer than the report's 0.01 dB, so that small gains still order the tensors."""
    mse = float(np.mean(abs_diff.astype(np.float64) ** 2))
    return 999.0 if mse == 0 else round(10 * math.log10(1023.0**2 / mse), 3)


def reference_codes(float_model: bytes, feeds: list[dict[str, np.ndarray]],
                    threads: int = 2) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(float_model, options, providers=["CPUExecutionProvider"])
    return [codes10(session.run(None, feed)[0]) for feed in feeds]


def analyse(qdq: onnx.ModelProto, float_model_path: Path, feeds: list[dict[str, np.ndarray]],
            config: SensitivityConfig | None = None,
            quantized_db: float | None = None) -> SensitivityReport:
    """The sensitivity of every quantized tensor of ``qdq`` on ``feeds``.

    ``float_model_path``: the float model ``qdq`` was quantized from (reference output and
    float weights). ``quantized_db``: the real (int8-kernel) model's PSNR, for the notes.
    """
    config = config or SensitivityConfig()
    started = time.perf_counter()
    float_bytes = Path(float_model_path).read_bytes()
    float_model = onnx.load_from_string(float_bytes)
    switchable = build_switchable(qdq, float_model, activation_sizes(float_model))
    reference = reference_codes(float_bytes, feeds, config.threads)
    evaluator = Evaluator(switchable, feeds, reference, config.threads)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    everything = set(range(len(switchable.units)))
    all_float = evaluator.psnr(set())
    all_quant = evaluator.psnr(everything)
    rows = []
    for k in track(range(len(switchable.units)), "sensitivity", len(switchable.units)):
        unit = switchable.units[k]
        alone = evaluator.psnr({k})
        left_float = evaluator.psnr(everything - {k})
        rows.append(TensorSensitivity(
            unit.tensor, unit.kind, unit.part, unit.bits, unit.elements, alone, left_float,
            round(left_float - all_quant, 3), list(unit.readers)))
    rows.sort(key=lambda r: (r.only_quantized_db, -r.gain_if_float_db, r.tensor))
    groups = []
    for members in tied_groups(qdq, switchable.units):
        alone, left_float = evaluator.psnr(set(members)), evaluator.psnr(everything - set(members))
        groups.append(GroupSensitivity(sorted(switchable.units[k].tensor for k in members),
                                       alone, left_float, round(left_float - all_quant, 3)))
    notes = ["fake-quant emulation (Q/DQ with float kernels) on calibration images, "
             "not held out"]
    if quantized_db is not None:
        notes.append(f"the int8-kernel model measures {quantized_db} dB on the same images, "
                     f"the emulation {all_quant} dB")
    if all_float < 80:
        notes.append(f"warning: the all-float configuration is only {all_float} dB from the "
                     "float model; the switch edit may be wrong")
    return SensitivityReport(
        images=len(feeds), shape=list(next(iter(feeds[0].values())).shape),
        all_quantized_emulated_db=all_quant, all_float_db=all_float, tensors=rows,
        seconds={"build": round(build_s, 2), "measure": round(time.perf_counter() - started, 2)},
        runs=evaluator.runs, fixed_constants=len(switchable.fixed), notes=notes, groups=groups)


def activation_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Elements per image of every tensor with a fully known shape (shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best-effort here: sizes only label the report
        return {}
    sizes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            sizes[info.name] = int(np.prod([d.dim_value for d in dims]))
    return sizes


__all__ = ["Evaluator", "GroupSensitivity", "QuantUnit", "SensitivityConfig",
           "SensitivityReport", "Switchable", "TensorSensitivity", "activation_sizes",
           "analyse", "build_switchable", "reference_codes", "tied_groups"]
