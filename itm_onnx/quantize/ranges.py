"""Activation ranges computed in one streaming pass: the calibration model and the collector.

Why not ORT's calibrators: its ``HistogramCalibrater`` keeps every value of every float
tensor of a chunk of images before histogramming them (4.6 GB and ~20 minutes for 64
images at 1088x1920 on 2 cores), and it calibrates every tensor of the graph. Here:

- :func:`calibration_model` makes a copy of the float model that returns only the
  tensors to calibrate, with the input's height and width made symbolic when the graph
  allows it (:func:`size_agnostic`): a convolutional network's activations at native
  image scale are what it sees when deployed, so images need not be upscaled to the
  export's fixed size. Tensor names are unchanged, so ranges map 1:1 onto the fixed model.
- :class:`RangeCollector` reduces each image's tensors as soon as they come out of the
  session: the running min/max and, for the percentile method, the few extreme values
  that can still be the percentile (``np.partition``, exact: no histogram, no
  subsample), so memory stays that of one image's activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData

# Ops whose result does not depend on constants that encode the input's height or width
# (no Reshape/Expand/Slice/Pad/Tile/ConstantOfShape shape constants). A graph made only
# of these runs at any size the network's strides allow, with the same weights.
SIZE_AGNOSTIC_OPS = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv",
    "ConvTranspose", "DequantizeLinear", "Div", "Elu", "Erf", "Exp", "GlobalAveragePool",
    "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
    "LeakyRelu", "Log", "Max", "MaxPool", "Min", "Mul", "Neg", "PRelu", "Pow", "QuantizeLinear",
    "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Resize",
    "Sigmoid", "Softmax", "Softplus", "Sqrt", "Sub", "Tanh", "Transpose",
})


def size_agnostic(model: onnx.ModelProto) -> str | None:
    """None when the graph can run at another input size; else why not (one line)."""
    for node in model.graph.node:
        if node.op_type not in SIZE_AGNOSTIC_OPS:
            return f"node {node.name} ({node.op_type}) may hold size-dependent constants"
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            return f"node {node.name} (Resize) has fixed output sizes"
    return None


def float_tensors(model: onnx.ModelProto, nodes: Iterable[str] | None = None) -> list[str]:
    """Float activations (not initializers) read or written by ``nodes`` (all: None), in
    graph order: what the quantizer needs ranges for when it quantizes those nodes."""
    wanted = None if nodes is None else set(nodes)
    inits = {t.name for t in model.graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names: dict[str, None] = {}
    for node in model.graph.node:
        if wanted is not None and node.name not in wanted:
            continue
        for name in [*node.input, *node.output]:
            if not name or name in inits or name in constants:
                continue
            if types.get(name, onnx.TensorProto.FLOAT) in (onnx.TensorProto.FLOAT,
                                                           onnx.TensorProto.FLOAT16):
                names[name] = None
    return list(names)


def range_aliases(model: onnx.ModelProto, tensors: list[str],
                  nodes: Iterable[str] | None = None) -> dict[str, str]:
    """Tensors whose range the quantizer replaces by another's, so need not be measured.

    ORT's ``adjust_tensor_ranges`` gives the input of a quantized Clip or Relu that has
    no other reader the range of that node's output (a conv feeding a ReLU6 gets the
    ReLU6's range); this maps such inputs to those outputs, for ``nodes`` (None: all)
    quantized.
    """
    wanted = None if nodes is None else set(nodes)
    present = set(tensors)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in model.graph.output}
    aliases = {}
    for node in model.graph.node:
        if node.op_type not in ("Clip", "Relu") or (wanted is not None and node.name not in wanted):
            continue
        source, target = node.input[0], node.output[0]
        if (source in present and target in present and readers.get(source) == 1
                and source not in outputs and target not in aliases):
            aliases[source] = target
    return aliases


def spatial_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of the fixed model's tensors (from its value_info), by name."""
    shapes = {}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(d.dim_value for d in dims)
    return shapes


def global_tensors(model: onnx.ModelProto, tensors: Iterable[str]) -> list[str]:
    """Tensors of a fixed-size NCHW model whose height and width are 1 while the input's
    are not: a global pooling and what follows it (channel attention's FC layers). Their
    values are whole-image statistics, which a crop need not reproduce."""
    shapes = spatial_shapes(model)
    in_shape = shapes.get(model.graph.input[0].name, ())
    if len(in_shape) != 4 or in_shape[2] * in_shape[3] == 1:
        return []
    return [t for t in tensors
            if len(shape := shapes.get(t, ())) == 4 and shape[2] == shape[3] == 1]


def with_symbolic_size(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an NCHW model whose input height and width are symbolic (``height``,
    ``width``); the fixed shapes of its other tensors are dropped (ORT infers them)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del m.graph.value_info[:]
    for output in m.graph.output:
        output.type.tensor_type.ClearField("shape")
    return m


def calibration_model(model: onnx.ModelProto, tensors: list[str], dynamic: bool) -> bytes:
    """``model`` returning exactly ``tensors``; with symbolic height/width if ``dynamic``."""
    known = {v.name: v for v in [*model.graph.input, *model.graph.value_info,
                                 *model.graph.output]}
    if dynamic:
        m = with_symbolic_size(model)
    else:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    del m.graph.output[:]
    for name in tensors:
        info = known.get(name)
        elem = info.type.tensor_type.elem_type if info is not None else onnx.TensorProto.FLOAT
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return m.SerializeToString(deterministic=True)


class RangeCollector:
    """Per-tensor ranges over a stream of images, one image's tensors at a time.

    ``method`` is ``minmax`` (lowest/highest value) or ``percentile``: ``lowest`` is the
    value below which a share (100 - percentile) / 200 of all values lie (order
    statistic ``floor(share * N)`` of the N values of all images), ``highest`` the same
    from the top, as in ORT's asymmetric percentile calibration but without its
    histogram's bin rounding. Exact, with no histogram and no subsample: each tensor
    keeps its ``k`` smallest and ``k`` largest values so far, ``k`` more than the number
    cut over all images, and a new image adds only the values beyond those (one
    comparison pass). With ``images`` and ``pixels_total`` (the count and summed pixel
    counts of all images to come), a tensor of ``n`` values on an image of ``p`` pixels
    has at most ``max(n * pixels_total / p, n * images)`` values in all, since its size
    is either proportional to its image's pixel count (feature maps) or independent of
    it (pooled tensors).
    """

    def __init__(self, method: str, percentile: float, images: int, pixels_total: int) -> None:
        if method not in ("minmax", "percentile"):
            raise ValueError(f"RangeCollector handles minmax and percentile, not {method}")
        self.method, self.images, self.pixels_total = method, images, pixels_total
        self.cut = (100.0 - percentile) / 200.0
        self.count: dict[str, int] = {}
        self.keep: dict[str, int] = {}  # k of each tensor
        self.low: dict[str, np.ndarray] = {}  # minmax: the minimum; percentile: k smallest
        self.high: dict[str, np.ndarray] = {}

    def add(self, tensors: dict[str, np.ndarray], pixels: int) -> None:
        for name, array in tensors.items():
            flat = array.reshape(-1)
            if flat.size == 0:
                continue
            self.count[name] = self.count.get(name, 0) + flat.size
            if self.method == "minmax":
                lo, hi = flat.min(keepdims=True), flat.max(keepdims=True)
                if name in self.low:
                    lo, hi = np.minimum(lo, self.low[name]), np.maximum(hi, self.high[name])
                self.low[name], self.high[name] = lo, hi
                continue
            if name not in self.keep:
                bound = flat.size * max(self.pixels_total / max(pixels, 1), self.images)
                self.keep[name] = math.floor(self.cut * bound) + 2  # + 1 spare
                self.low[name] = flat[:0].copy()
                self.high[name] = flat[:0].copy()
            k = self.keep[name]
            self.high[name] = _extreme(self.high[name], flat, k, largest=True)
            self.low[name] = _extreme(self.low[name], flat, k, largest=False)

    def result(self, method: CalibrationMethod) -> TensorsData:
        data = {}
        for name in self.count:
            if self.method == "minmax":
                lo, hi = self.low[name][0], self.high[name][0]
            else:
                cut = math.floor(self.cut * self.count[name])
                lows, highs = np.sort(self.low[name]), np.sort(self.high[name])
                lo = lows[min(cut, lows.size - 1)]
                hi = highs[max(highs.size - 1 - cut, 0)]
            data[name] = TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        return TensorsData(method, data)


def _extreme(kept: np.ndarray, new: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """The ``k`` largest (or smallest) of ``kept`` (at most ``k`` values) and ``new``."""
    if kept.size == k:  # only values beyond the k-th so far can enter
        new = new[new > kept.min()] if largest else new[new < kept.max()]
        if new.size == 0:
            return kept
    merged = np.concatenate([kept, new])
    if merged.size <= k:
        return merged
    if largest:
        return np.partition(merged, merged.size - k)[merged.size - k:].copy()
    return np.partition(merged, k - 1)[:k].copy()
