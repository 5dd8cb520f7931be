"""Post-training refinements of the int8 backbone, applied around ONNX Runtime's quantizer.

Both take what calibration and quantization produce as inputs (ranges in ORT's
``TensorsData``, a QDQ model, input feeds) and know nothing of how those were made.

- :func:`mse_ranges`: per-tensor clipping ranges that minimise that tensor's own uint8
  quantization error (mean squared error: clipping error outside the range plus
  ``step^2 / 12`` rounding error inside it), searched on a histogram of the float
  model's activations, instead of one percentile for every tensor.
- :func:`correct_biases`: empirical bias correction (Nagel et al., "Data-Free Quantization
  Through Weight Equalization and Bias Correction", 2019, here with measured means). Per
  output channel, a quantized conv's expected output differs from the float conv's by
  ``sum(W_q * E[Q(x)]) - sum(W * E[x])``: the weight rounding and the input's
  quantization (clipping included) shift the mean. Each conv's own shift is computed
  from the float model's input statistics (so corrections do not double-count errors
  that upstream corrections already remove) and subtracted from its int32 bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

_SAMPLES_PER_IMAGE = 65_536  # activation values kept per tensor and image (strided)
_BINS = 2048



def _tap_session(float_model: onnx.ModelProto, tensors, threads: int
                 ) -> tuple[ort.InferenceSession, list[str]]:
    """An unoptimised session of ``float_model`` that also outputs ``tensors`` (so their
    names survive), and its output names."""
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    outputs = {o.name for o in model.graph.output}
    wanted = [t for t in dict.fromkeys(tensors) if t not in outputs]
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session, [o.name for o in session.get_outputs()]

def collect(float_model: onnx.ModelProto, tensors: list[str],
            feeds: list[dict[str, np.ndarray]], threads: int = 2, extremes: bool = False
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(strided samples, per-channel means) of ``tensors`` of the float model over ``feeds``;
    with ``extremes``, (min, max) over every value instead of samples.

    Per-channel means are over batch and spatial positions (axis 1 is the channel).
    """
    session, names = _tap_session(float_model, tensors, threads)
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if name not in samples:
                continue
            flat = value.ravel()
            if extremes:
                low, high = float(flat.min()), float(flat.max())
                if samples[name]:
                    low, high = min(low, samples[name][0][0]), max(high, samples[name][0][1])
                samples[name] = [(low, high)]
                continue
            step = max(1, math.ceil(flat.size / _SAMPLES_PER_IMAGE))
            samples[name].append(flat[::step].astype(np.float32))
            if value.ndim >= 2:
                per_channel = value.reshape(value.shape[0], value.shape[1], -1)
                sums[name] = sums.get(name, 0) + per_channel.sum(axis=(0, 2), dtype=np.float64)
                counts[name] = counts.get(name, 0) + per_channel.shape[0] * per_channel.shape[2]
    if extremes:
        return {t: v[0] for t, v in samples.items() if v}, {}
    pooled = {t: np.concatenate(v) for t, v in samples.items() if v}
    means = {t: sums[t] / counts[t] for t in sums}
    return pooled, means


def mse_range(values: np.ndarray, levels: int = 256,
              start: tuple[float, float] | None = None) -> tuple[float, float]:
    """The [lo, hi] (containing 0, as ORT requires) minimising the expected squared error
    of asymmetric ``levels``-level quantization of ``values``.

    Candidates: hi from 2 % to 100 % of the maximum (geometric), lo likewise for negative
    minima (0 for non-negative tensors), plus ``start`` (the calibrated range).
    """
    lo_all, hi_all = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
    if hi_all - lo_all <= 0:
        return lo_all, hi_all
    counts, edges = np.histogram(values, bins=_BINS, range=(lo_all, hi_all))
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    weights = counts.astype(np.float64) / max(1, counts.sum())
    fractions = np.geomspace(0.02, 1.0, 64)
    his = hi_all * fractions if hi_all > 0 else np.array([0.0])
    los = lo_all * fractions if lo_all < 0 else np.array([0.0])
    candidates = [(float(lo), float(hi)) for lo in los for hi in his if hi - lo > 0]
    if start is not None and start[1] - start[0] > 0:
        candidates.append((min(float(start[0]), 0.0), max(float(start[1]), 0.0)))
    best, best_err = (lo_all, hi_all), math.inf
    for lo, hi in candidates:
        step = (hi - lo) / (levels - 1)
        below, above = centres < lo, centres > hi
        inside = ~(below | above)
        err = (weights[inside].sum() * step * step / 12.0
               + (weights[below] * (centres[below] - lo) ** 2).sum()
               + (weights[above] * (centres[above] - hi) ** 2).sum())
        if err < best_err - 1e-18:
            best, best_err = (lo, hi), err
    return best


def mse_ranges(base: TensorsData, samples: dict[str, np.ndarray], output: Path
               ) -> tuple[Path, dict[str, list[float]]]:
    """``base`` with the tensors of ``samples`` given their MSE-optimal ranges, saved in
    ORT's cache format at ``output``; returns the path and the ranges changed."""
    data = {}
    changed: dict[str, list[float]] = {}
    for name in base.keys():
        old = base[name]
        if name in samples and samples[name].size:
            lo, hi = old.range_value
            new = mse_range(samples[name], start=(float(np.min(lo)), float(np.max(hi))))
            data[name] = TensorData(lowest=np.array(new[0], np.float32),
                                    highest=np.array(new[1], np.float32))
            changed[name] = [round(new[0], 6), round(new[1], 6)]
        else:
            data[name] = old
    save_tensors_data(TensorsData(base.calibration_method, data), output)
    return output, changed


@dataclass
class BiasCorrection:
    conv: str
    max_shift_lsb: float  # largest change of an int32 bias, in bias steps


def conv_inputs(qdq: onnx.ModelProto) -> dict[str, tuple[str, float, int]]:
    """Conv node -> (float input tensor, input scale, input zero point) for the int8 convs
    of a QDQ model (input from a Q/DQ pair with per-tensor parameters, int32 bias)."""
    inits = {t.name: t for t in qdq.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    found = {}
    for node in qdq.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        dq_x, dq_b = producers.get(node.input[0]), producers.get(node.input[2])
        if dq_x is None or dq_x.op_type != "DequantizeLinear":
            continue
        if dq_b is None or dq_b.op_type != "DequantizeLinear" or dq_b.input[0] not in inits:
            continue
        if inits[dq_b.input[0]].data_type != TensorProto.INT32:
            continue
        q = producers.get(dq_x.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        scale = numpy_helper.to_array(inits[dq_x.input[1]])
        zp = numpy_helper.to_array(inits[dq_x.input[2]]) if len(dq_x.input) > 2 else np.int64(0)
        if scale.size != 1:
            continue
        found[node.name] = (q.input[0], float(scale.ravel()[0]), int(np.ravel(zp)[0]))
    return found


def correct_biases(qdq: onnx.ModelProto, float_model: onnx.ModelProto,
                   stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[BiasCorrection]:
    """Subtract each int8 conv's own mean output shift from its int32 bias, in place.

    ``stats``: float input tensor -> (E[x], E[Q(x)]) per channel, with Q the conv's input
    quantization (see :func:`quantized_means`). Border effects of zero padding are
    ignored (the means are those of the whole plane).
    """
    inits = {t.name: t for t in qdq.graph.initializer}
    float_inits = {t.name: numpy_helper.to_array(t) for t in float_model.graph.initializer}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    done = []
    for conv_name, (tensor, _, _) in conv_inputs(qdq).items():
        if tensor not in stats:
            continue
        conv = next(n for n in qdq.graph.node if n.name == conv_name)
        dq_w, dq_b = producers.get(conv.input[1]), producers[conv.input[2]]
        if dq_w is None or dq_w.op_type != "DequantizeLinear" or dq_w.input[0] not in inits:
            continue
        w_name = dq_w.input[0].removesuffix("_quantized")
        if w_name not in float_inits:
            continue
        w_float = float_inits[w_name].astype(np.float64)
        w_quant = _dequantize(dq_w, inits).astype(np.float64)
        group = int(next((a.i for a in conv.attribute if a.name == "group"), 1))
        mean_f, mean_q = stats[tensor]
        shift = _conv_of_means(w_quant, mean_q, group) - _conv_of_means(w_float, mean_f, group)
        bias = inits[dq_b.input[0]]
        b_scale = numpy_helper.to_array(inits[dq_b.input[1]]).astype(np.float64)
        b_int = numpy_helper.to_array(bias).astype(np.int64)
        steps = np.round(shift / b_scale).astype(np.int64)
        if not steps.any():
            continue
        new = np.clip(b_int - steps, np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        bias.CopyFrom(numpy_helper.from_array(new.astype(np.int32), bias.name))
        done.append(BiasCorrection(conv_name, float(np.abs(steps).max())))
    return done


def collect_quantized_means(float_model: onnx.ModelProto,
                            params: dict[str, tuple[float, int]],
                            feeds: list[dict[str, np.ndarray]], threads: int = 2
                            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel E[x] and E[Q(x)] of the float model's tensors ``params`` (tensor ->
    (scale, zero point) of its uint8 quantization)."""
    session, names = _tap_session(float_model, params, threads)
    sums_f: dict[str, np.ndarray] = {}
    sums_q: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if name not in params or value.ndim < 2:
                continue
            scale, zp = params[name]
            fake = (np.clip(np.round(value / scale) + zp, 0, 255) - zp) * scale
            x = value.reshape(value.shape[0], value.shape[1], -1)
            xq = fake.reshape(x.shape)
            sums_f[name] = sums_f.get(name, 0) + x.sum(axis=(0, 2), dtype=np.float64)
            sums_q[name] = sums_q.get(name, 0) + xq.sum(axis=(0, 2), dtype=np.float64)
            counts[name] = counts.get(name, 0) + x.shape[0] * x.shape[2]
    return {t: (sums_f[t] / counts[t], sums_q[t] / counts[t]) for t in sums_f}


def _dequantize(dq: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zp = (numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64)
          if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale))
    if scale.size == 1:
        return (q - zp.ravel()[0]) * scale.ravel()[0]
    axis = int(next((a.i for a in dq.attribute if a.name == "axis"), 1))
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zp.reshape(shape)) * scale.reshape(shape)


def _conv_of_means(weight: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    """Per output channel: sum over its input channels and kernel taps of W * E[x]."""
    out_ch, in_per_group = weight.shape[0], weight.shape[1]
    taps = weight.reshape(out_ch, in_per_group, -1).sum(axis=2)  # (O, I/g)
    per_group_out = out_ch // group
    result = np.zeros(out_ch)
    for g in range(group):
        rows = slice(g * per_group_out, (g + 1) * per_group_out)
        result[rows] = taps[rows] @ mean[g * in_per_group:(g + 1) * in_per_group]
    return result
