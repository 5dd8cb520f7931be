"""Quantization schemes: which nodes get which precision, built with ONNX Runtime's quantizer.

Open this file to change how the head (or anything else) is quantized.

- ``mixed`` (the deployment scheme, MQNet's): the backbone fully int8 (uint8 activations,
  per-channel int8 weights), via ``quantize_static`` with the head nodes excluded; then
  the head's conv weights int8 per channel with float activations, and the output
  transform in float. The head weights are stored as float32 constants whose values are
  exactly ``DequantizeLinear(W_int8)`` (:func:`float_weights_on_grid`; the node reading
  each records its grid, which ``report.weight_grid_proof`` checks): the same numbers as
  a DequantizeLinear would give, but a constant weight lets ONNX Runtime pre-pack it
  (and take its NCHWc conv) instead of dequantizing it on every run. The float-head
  rewrites (``rewrite.HEAD_REWRITES``) run first; after ``fold_instance_norm`` a head
  conv's weight is ``W * a`` with ``W`` on its int8 grid and ``a`` the per-image
  InstanceNorm scale. On the CPU target the rewrites ``float_photo_tail`` and
  ``float_skip_fuse`` have by then tagged the backbone's last layer and the upsampled
  branch of the one before it ``head``, so they are built the same way (float
  activations, weights on their int8 grid).
- ``full-int8``: every node quantized by ``quantize_static`` (for comparison).
- ``a16w8-head``: the backbone as in ``mixed``; the head's chain up to its last conv with
  16-bit activations and int8 weights (``TensorQuantOverrides``; ORT uses its
  com.microsoft Q/DQ ops below opset 21); the tanh and output transform after that conv
  stay float.

The backbone/head split comes from the export tags (``itm_onnx.onnx_meta``), never from
node names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorsData, load_tensors_data
from onnxruntime.quantization.quant_utils import (
    TENSOR_NAME_QUANT_SUFFIX,
    compute_data_quant_params,
    quantize_onnx_initializer,
)

from .. import onnx_meta
from .calibration import METHODS

log = logging.getLogger(__name__)

WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class QuantOptions:
    """Quantizer settings shared by the schemes (the CLI's defaults)."""

    per_channel: bool = True
    # 7-bit weights for the int8 convs. Without VNNI (AVX2 only, as on this project's
    # x86 benchmark machine) ONNX Runtime's u8s8 kernels sum pairs of products in int16
    # with saturation; with full-range weights that took the backbone's output PSNR from
    # ~47 dB to ~23 dB against fp32 here. Phones (ARM dot-product kernels) do not need it.
    reduce_range: bool = True
    # One range for all inputs and the output of each Concat (the union of their
    # calibrated ranges). ONNX Runtime's QLinearConcat copies bytes when every input has
    # the output's scale and zero point, and otherwise requantizes element by element
    # through lookup tables (~30 ms for the 1/4-resolution concat at 1088x1920 here).
    # The cost: the tensors joined get the union range, i.e. slightly coarser steps.
    share_concat_ranges: bool = True


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    build: Callable[..., onnx.ModelProto]
    # ONNX Runtime settings the artifact needs, stored in its metadata so that `bench`
    # and `run` apply them (see itm_onnx.onnx_meta.SESSION_OPTIONS_KEY).
    session_options: dict[str, Any]
    float_head: bool = False  # the head keeps float activations: HEAD_REWRITES apply


def _static(model_path: Path, ranges_path: Path, method: str, options: QuantOptions,
            output: Path, *, exclude: list[str] | None = None,
            extra: dict[str, Any] | None = None) -> onnx.ModelProto:
    """``quantize_static`` on cached ranges (no data reader: calibration already ran)."""
    extra = dict(extra or {})
    if options.share_concat_ranges:
        shared = shared_concat_ranges(onnx.load(str(model_path), load_external_data=False),
                                      load_tensors_data(ranges_path), set(exclude or []))
        extra["TensorQuantOverrides"] = {**shared, **extra.get("TensorQuantOverrides", {})}
    quantize_static(
        str(model_path), str(output), calibration_data_reader=None,
        quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
        reduce_range=options.reduce_range, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
        calibrate_method=METHODS[method], calibration_cache_path=str(ranges_path),
        extra_options=extra,
    )
    return onnx.load(str(output))


# Ops whose output ORT's QDQ quantizer gives the quantization parameters of their input.
_SAME_AS_INPUT = frozenset({"Resize", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                            "MaxPool", "Slice"})


def shared_concat_ranges(model: onnx.ModelProto, ranges: TensorsData,
                         excluded: set[str]) -> dict[str, list[dict[str, float]]]:
    """``TensorQuantOverrides`` giving a quantized Concat's output range to the inputs
    that exist only to be concatenated, so that QLinearConcat copies them.

    An input is traced back through ops that pass their quantization parameters on (a
    Resize, say) to the tensor whose range is computed; it joins only if nothing else
    reads that tensor or the chain. Then widening its range to the output's loses
    nothing: the Concat requantizes it to the output's range anyway. Inputs used
    elsewhere (MQNet's encoder taps) keep their own range and a lookup-table requantize.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in model.graph.output}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in model.graph.node:
        if node.op_type != "Concat" or node.name in excluded or node.output[0] not in ranges:
            continue
        members = [m for t in node.input if t
                   if (m := _exclusive_source(t, producers, readers, outputs, excluded))]
        members = [m for m in members if m in ranges and m not in overrides]
        if not members:
            continue
        lowest, highest = ranges[node.output[0]].range_value
        low, high = np.float32(np.min(lowest)), np.float32(np.max(highest))
        for member in [node.output[0], *members]:
            overrides.setdefault(member, [{"rmin": low, "rmax": high}])
    return overrides


def _exclusive_source(tensor: str, producers, readers, outputs, excluded) -> str | None:
    """The tensor whose range ``tensor`` inherits, if read only along this chain."""
    while True:
        if readers.get(tensor, 0) != 1 or tensor in outputs:
            return None
        node = producers.get(tensor)
        if node is None or node.op_type not in _SAME_AS_INPUT or node.name in excluded:
            return tensor
        tensor = node.input[0]


def build_mixed(model_path: Path, ranges_path: Path, method: str, options: QuantOptions,
                workdir: Path) -> onnx.ModelProto:
    float_model = onnx.load(str(model_path), load_external_data=False)
    head = onnx_meta.nodes_in_part(float_model, onnx_meta.HEAD)
    model = _static(model_path, ranges_path, method, options, workdir / "mixed.onnx",
                    exclude=head)
    float_weights_on_grid(model, quantize_weights_only(model, head))
    read_float_inputs_directly(model, head)
    return model


def build_full_int8(model_path: Path, ranges_path: Path, method: str, options: QuantOptions,
                    workdir: Path) -> onnx.ModelProto:
    return _static(model_path, ranges_path, method, options, workdir / "full.onnx")


def build_a16w8_head(model_path: Path, ranges_path: Path, method: str, options: QuantOptions,
                     workdir: Path) -> onnx.ModelProto:
    float_model = onnx.load(str(model_path), load_external_data=False)
    head = onnx_meta.nodes_in_part(float_model, onnx_meta.HEAD)
    sixteen_bit, stays_float = _split_head_at_last_conv(float_model, head)
    inits = {t.name for t in float_model.graph.initializer}
    # Only tensors these head nodes produce: the backbone's output (the head's input)
    # stays uint8, and conv weights stay int8.
    overrides = {
        t: [{"quant_type": QuantType.QUInt16}]
        for n in float_model.graph.node if n.name in sixteen_bit
        for t in n.output if t and t not in inits
    }
    model = _static(model_path, ranges_path, method, options, workdir / "a16w8.onnx",
                    exclude=stays_float,
                    extra={"TensorQuantOverrides": overrides, "ActivationSymmetric": False})
    read_float_inputs_directly(model, stays_float)
    return model


def _split_head_at_last_conv(model: onnx.ModelProto, head: list[str]) -> tuple[set[str], list[str]]:
    """Head nodes up to its last Conv (get 16-bit activations) and those after it (float).

    Structural, within the head the tags define: everything downstream of the head's
    last Conv (tanh, output transform) and any head node not upstream of it stays float.
    """
    nodes = {n.name: n for n in model.graph.node}
    convs = [n for n in model.graph.node if n.name in head and n.op_type == "Conv"]
    if not convs:
        return set(), list(head)
    producers = {o: n for n in model.graph.node for o in n.output}
    upstream, stack = set(), [convs[-1]]
    while stack:
        node = stack.pop()
        if node.name in upstream or node.name not in head:
            continue
        upstream.add(node.name)
        stack.extend(producers[i] for i in node.input if i in producers)
    return upstream, [n for n in head if n not in upstream and n in nodes]


def quantize_weights_only(model: onnx.ModelProto, node_names: list[str]) -> list[str]:
    """Give the weights of these nodes int8 per-output-channel storage and a
    DequantizeLinear, leaving their activations float. Returns the weights quantized.

    Hand-written because ONNX Runtime's quantizer has no weight-only mode for Conv: its
    QDQ Conv rule always quantizes the activation input too, and ``quantize_dynamic``
    makes ConvInteger with dynamically quantized activations. The arithmetic is ORT's
    own (``compute_data_quant_params`` / ``quantize_onnx_initializer``), and names follow
    its conventions (``<w>_quantized``, ``<w>_scale``, ``<w>_zero_point``) so that
    ``qdq_loss_debug.create_weight_matching`` pairs them with the float weights.
    Symmetric full-range int8: these weights never meet an integer kernel, so the
    ``reduce_range`` concern of the int8 convs does not apply.
    """
    wanted = set(node_names)
    inits = {t.name: t for t in model.graph.initializer}
    done: dict[str, str] = {}
    new_nodes: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name not in wanted or node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        user, slot = _weight_slot(node, producers, inits)
        name = user.input[slot]
        weight = inits.get(name)
        if weight is None or weight.data_type != TensorProto.FLOAT:
            continue
        if name not in done:
            dq = _weight_dequantizer(model, weight)
            new_nodes.append((user, dq))
            done[name] = dq.output[0]
        user.input[slot] = done[name]
    for consumer, dq in new_nodes:
        model.graph.node.insert(list(model.graph.node).index(consumer), dq)
    _remove_unused_initializers(model)
    return sorted(done)


def _weight_slot(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto],
                 inits: dict[str, TensorProto]) -> tuple[onnx.NodeProto, int]:
    """Where a node's weight initializer is read: its own weight input, or, when the
    weight is scaled per image (``rewrite.fold_instance_norm``: ``Mul(W, a)``), that Mul's
    constant input."""
    scaled = producers.get(node.input[1])
    if scaled is not None and scaled.op_type == "Mul":
        for slot, name in enumerate(scaled.input):
            if name in inits:
                return scaled, slot
    return node, 1


def _weight_dequantizer(model: onnx.ModelProto, weight: TensorProto) -> onnx.NodeProto:
    array = numpy_helper.to_array(weight)
    channels = array.reshape(array.shape[0], -1)
    params = [compute_data_quant_params(c, TensorProto.INT8, symmetric=True) for c in channels]
    zero_point = np.array([p[0] for p in params], dtype=np.int8).reshape(-1)
    scale = np.array([p[1] for p in params], dtype=np.float32).reshape(-1)
    quantized = quantize_onnx_initializer(weight, TensorProto.INT8, zero_point, scale, axis=0,
                                          quant_weight_name=weight.name + TENSOR_NAME_QUANT_SUFFIX)
    scale_name, zp_name = weight.name + "_scale", weight.name + "_zero_point"
    model.graph.initializer.extend([
        quantized, numpy_helper.from_array(scale, scale_name),
        numpy_helper.from_array(zero_point, zp_name),
    ])
    return helper.make_node("DequantizeLinear", [quantized.name, scale_name, zp_name],
                            [weight.name + "_DequantizeLinear_Output"],
                            weight.name + "_DequantizeLinear", axis=0)


# Node metadata key: on the node that reads a float weight stored on an int8 grid, JSON
# {"weight": initializer, "dtype": "int8", "axis": 0, "scale": [...], "zero_point": [...]}.
GRID_KEY = "itm_onnx.int8_grid"


def float_weights_on_grid(model: onnx.ModelProto, weights: list[str]) -> list[str]:
    """Replace the DequantizeLinear of these weights (from :func:`quantize_weights_only`)
    by float32 constants holding exactly its output, and record each weight's int8 grid
    (per-channel scale and zero point) on the node that reads it. Returns the weights.

    Why: ONNX Runtime's CPU provider dequantizes a DequantizeLinear weight on every run
    and, since the weight is then not a constant, cannot pre-pack it nor run the conv in
    its NCHWc layout. The values are identical (``mobile.fold_weight_dequantize``
    computes ``(q - zp) * scale`` in float32, as DequantizeLinear does), so the model
    computes the same numbers; the recorded grid lets the report prove every value is
    an int8 integer times its channel's scale.
    """
    from ..mobile import fold_weight_dequantize

    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    grids, readers = {}, {}
    for weight in weights:
        dq = nodes.get(weight + "_DequantizeLinear")
        if dq is None:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]]).reshape(-1)
        zero_point = numpy_helper.to_array(inits[dq.input[2]]).reshape(-1)
        grids[dq.name] = {"weight": dq.output[0], "dtype": "int8", "axis": 0,
                          "scale": [float(v) for v in scale],
                          "zero_point": [int(v) for v in zero_point]}
        readers[dq.name] = [n for n in model.graph.node if dq.output[0] in n.input]
    folded = fold_weight_dequantize(model, only=set(grids))
    for name in folded:
        for reader in readers[name]:
            reader.metadata_props.add(key=GRID_KEY, value=json.dumps(grids[name]))
    return sorted(grids[name]["weight"] for name in folded)


def read_float_inputs_directly(model: onnx.ModelProto, node_names: list[str]) -> list[str]:
    """Let float nodes read a graph input itself rather than its Quantize-Dequantize copy.

    The quantizer gives a graph input one shared Q/DQ pair; float head nodes (the output
    transform reads the input image) then wait for a full-resolution DequantizeLinear
    of it. The input is the model's own float input, so reading it directly is exact
    and saves that pass. Returns the nodes rewired.
    """
    wanted = set(node_names)
    graph_inputs = {i.name for i in model.graph.input}
    producers = {o: n for n in model.graph.node for o in n.output}
    rewired = []
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            is_dq = dq is not None and dq.op_type == "DequantizeLinear"
            q = producers.get(dq.input[0]) if is_dq else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in graph_inputs:
                node.input[k] = q.input[0]
                rewired.append(node.name)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node
            if n.op_type == "DequantizeLinear" and not set(n.output) & used]
    for node in dead:
        model.graph.node.remove(node)
    return rewired


def _remove_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


_MIXED_SESSION = {
    # Intra-op worker threads sleep instead of spinning between ops. Measured with
    # `itm-onnx bench` at 1088x1920, 2 threads, on this project's shared 2-core machine:
    # 7-14 % lower median latency for this model (and for fp32 alike) while other
    # processes compete for the cores, no difference on an idle machine; `bench --peers`
    # shows fp32 with the same setting, so the table says what the setting alone is worth.
    # Re-measured on a 2-core AMD EPYC Zen 4 (`bench` of the same artifact with each
    # setting, 1088x1920, 2 threads), four runs within an hour: with nothing else running,
    # spinning was 9 % and 14 % faster in two (the model has ~190 short ops, each a wake-up
    # for a sleeping worker) and 8 % slower in the third; with a busy loop on one core,
    # sleeping was 7-12 % faster. What else the host runs decides, so sleeping stays: the
    # cores stay free for the rest of the device (and its battery). `bench --peers` also
    # shows mixed with ORT's defaults, spinning included. Spinning for a bounded time
    # (`session.intra_op.spin_duration_us`, ORT 1.31) splits the difference rather than
    # winning both ways: 200 us was 0.973 x idle and 1.031 x beside a busy loop
    # (docs/performance.md).
    # NchwcTransformer stays on: with the head weights stored as constants
    # (float_weights_on_grid) it runs the first head conv in its NCHWc layout, reorders
    # included cheaper than the plain conv. The head alone at 1088x1920, 2 threads, 10
    # alternating runs on a shared 2-core Xeon (AVX-512 VNNI, AMX), median CPU time per
    # run (wall time was swamped by other load): 344 ms with it, 390 ms with it disabled,
    # 392 ms with the former DequantizeLinear weights.
    "session.intra_op.allow_spinning": "0",
    # No memory-pattern planning: ORT then allocates each full-resolution float head
    # tensor when it is needed instead of reserving the whole planned block up front.
    # Measured on this model at 1088x1920, 2 threads (Xeon, AVX-512 VNNI, load < 1), one
    # process per setting, median of 3 after a warm-up, two rounds: peak RSS 610-611 MB
    # instead of 989 MB, latency 563-590 ms instead of 631-650 ms. (fp32 gains memory too,
    # 1880 -> 1179 MB, but loses 13 % latency, so its export keeps ORT's defaults.)
    "enable_mem_pattern": False,
}

SCHEMES: dict[str, Scheme] = {
    "mixed": Scheme("mixed", "backbone int8 (uint8 activations, per-channel int8 weights); head "
                    "int8 weights with float activations; output transform float",
                    build_mixed, _MIXED_SESSION, float_head=True),
    "full-int8": Scheme("full-int8", "every node int8 (uint8 activations, per-channel int8 "
                        "weights), for comparison", build_full_int8, {}),
    "a16w8-head": Scheme("a16w8-head", "backbone int8; head 16-bit activations with int8 "
                         "weights up to its last conv; tanh and output transform float",
                         build_a16w8_head, _MIXED_SESSION),
}
