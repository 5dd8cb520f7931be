"""Edits of the quantized graph for ONNX Runtime's faster kernels: same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

from itm_onnx import onnx_meta
from itm_onnx.quantize.report import node_precisions, tensor_errors, weight_grid_proof
from itm_onnx.quantize.rewrite_qdq import pad_conv_input_channels, per_image_conv_as_matmul
from itm_onnx.quantize.schemes import GRID_KEY

SIZE = 16


class Reader(CalibrationDataReader):
    def __init__(self, channels: int) -> None:
        self.feeds = [{"x": np.random.default_rng(i).random((1, channels, SIZE, SIZE),
                                                           np.float32)} for i in range(3)]
        self.rewind()

    def get_next(self):
        return next(self.iterator, None)

    def rewind(self):
        self.iterator = iter(self.feeds)


def _qdq_conv(tmp_path: Path, channels: int, group: int = 1) -> tuple[Path, Path]:
    """float Abs, Conv(3x3, stride 2), Relu, and its QDQ model (per-channel int8 weights)."""
    rng = np.random.default_rng(channels)
    out = 16
    weight = rng.standard_normal((out, channels // group, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Abs", ["x"], ["photo"], name="abs"),
             helper.make_node("Conv", ["photo", "w", "b"], ["conv"], name="conv", pads=[1] * 4,
                              strides=[2, 2], group=group),
             helper.make_node("Relu", ["conv"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out, SIZE // 2, SIZE // 2])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), "b")])
    float_path, qdq_path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), float_path)
    quantize_static(str(float_path), str(qdq_path), Reader(channels), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    return float_path, qdq_path


def _run(model: onnx.ModelProto | Path, feed: dict) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_a_three_channel_int8_conv_reads_four_channels_and_computes_the_same(tmp_path):
    float_path, qdq_path = _qdq_conv(tmp_path, channels=3)
    model = onnx.load(str(qdq_path))
    feed = Reader(3).feeds[0]
    before = _run(model, feed)
    assert pad_conv_input_channels(model) == ["conv"]
    onnx.checker.check_model(model, full_check=True)
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 1
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_dq = producers[conv.input[1]]
    weight = numpy_helper.to_array(next(t for t in model.graph.initializer
                                        if t.name == weight_dq.input[0]))
    assert weight.shape[1] == 4 and not weight[:, 3].any()
    # The int8 conv computes the same integers: bit-identical outputs, fully optimized.
    np.testing.assert_array_equal(_run(model, feed), before)
    # The report still compares the padded tensor with the float model's, channel for
    # channel (the quantize report runs this on every artifact).
    onnx.save(model, str(tmp_path / "padded.onnx"))
    rows = {r["tensor"]: r for r in tensor_errors(float_path, tmp_path / "padded.onnx",
                                                   Reader(3), (1, 3, SIZE, SIZE))}
    assert rows["photo"]["qdq_sqnr"] > 30 and rows["y"]["xmodel_sqnr"] > 20


def test_convs_the_kernel_already_takes_are_left_alone(tmp_path):
    for channels, group in ((4, 1), (16, 16)):
        folder = tmp_path / f"c{channels}"
        folder.mkdir()
        _, qdq_path = _qdq_conv(folder, channels, group)
        model = onnx.load(str(qdq_path))
        assert pad_conv_input_channels(model) == []
        assert not any(n.op_type == "Pad" for n in model.graph.node)


def _per_image_convs() -> onnx.ModelProto:
    """Two head convs as ``rewrite_head.fold_instance_norm`` leaves them: 1x1, weights on
    an int8 grid scaled per image and input channel (Mul by the input's mean), the second
    with a tanh; dynamic H and W."""
    rng = np.random.default_rng(5)
    scale = np.full(6, 0.02, np.float32)
    grid = (rng.integers(-127, 128, (6, 12, 1, 1)) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    grid3 = (rng.integers(-127, 128, (3, 6, 1, 1)) * np.float32(0.01)).astype(np.float32)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1),  # [1, 12, 1, 1]
        helper.make_node("Mul", ["w2", "mean"], ["w2_scaled"], name="w2_scale"),
        helper.make_node("Conv", ["x", "w2_scaled", "b2"], ["c2"], name="conv2",
                         kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("ReduceMean", ["r2", "axes"], ["mean2"], keepdims=1),
        helper.make_node("Mul", ["w3", "mean2"], ["w3_scaled"], name="w3_scale"),
        helper.make_node("Conv", ["r2", "w3_scaled"], ["c3"], name="conv3", kernel_shape=[1, 1]),
        helper.make_node("Tanh", ["c3"], ["y"], name="tanh"),
    ]
    inits = [axes, numpy_helper.from_array(grid, "w2"), numpy_helper.from_array(grid3, "w3"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    for node in model.graph.node:
        node.metadata_props.add(key=onnx_meta.PART_KEY, value=onnx_meta.HEAD)
    for node, weight, channel_scale in (("w2_scale", "w2", scale), ("w3_scale", "w3",
                                                                      np.full(3, 0.01))):
        reader = next(n for n in model.graph.node if n.name == node)
        count = len(channel_scale)
        reader.metadata_props.add(key=GRID_KEY, value=json.dumps({
            "weight": weight, "dtype": "int8", "axis": 0, "scale": channel_scale.tolist(),
            "zero_point": [0] * count}))
    return model


def test_per_image_convs_run_as_matmul_with_the_same_outputs_at_any_size():
    model = _per_image_convs()
    rng = np.random.default_rng(6)
    feeds = [{"x": rng.standard_normal((1, 12, h, w)).astype(np.float32)}
             for h, w in ((16, 24), (40, 8))]
    before = [_run(model, f) for f in feeds]
    assert per_image_conv_as_matmul(model) == ["conv2", "conv3"]
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("MatMul") == 2
    assert "Conv" not in {n.op_type for n in model.graph.node}
    for feed, want in zip(feeds, before, strict=True):  # same SGEMM: bit-identical
        np.testing.assert_array_equal(_run(model, feed), want)
    # The report still sees int8 weights on their grid, read through the reshape.
    matmuls = [p for p in node_precisions(model) if p.op_type == "MatMul"]
    assert [p.weights for p in matmuls] == ["int8", "int8"]
    assert [p.precision for p in matmuls] == ["w8-float", "w8-float"]
    assert weight_grid_proof(model)["all_on_grid"]


def test_int8_convs_and_constant_weight_convs_stay_convs(tmp_path):
    _, qdq_path = _qdq_conv(tmp_path, channels=4)
    model = onnx.load(str(qdq_path))
    assert per_image_conv_as_matmul(model) == []
