"""Edits of the quantized graph for ONNX Runtime's int8 kernels: same numbers, faster
kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

from itm_onnx.quantize.report import tensor_errors
from itm_onnx.quantize.rewrite_qdq import pad_conv_input_channels

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
