"""QAT: BN folding, fake-quant placement, and export to a QDQ ONNX model with parity."""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from itm_onnx import onnx_meta
from itm_onnx.checkpoint import save_checkpoint
from itm_onnx.export import ExportConfig, export_model
from itm_onnx.models import create_model
from itm_onnx.models.blocks import ConvBnAct
from itm_onnx.train import qat

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def float_model_with_bn_statistics() -> torch.nn.Module:
    """A random MQNet whose BatchNorms hold non-trivial running statistics."""
    torch.manual_seed(0)
    model = create_model("mqnet")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, SIZE, SIZE))
    return model.eval()


@pytest.fixture(scope="module")
def qat_model() -> torch.nn.Module:
    model = qat.prepare_qat(float_model_with_bn_statistics())
    model.variant = "mqnet"
    generator = torch.Generator().manual_seed(1)
    qat.calibrate(model, [torch.rand(2, 3, SIZE, SIZE, generator=generator) for _ in range(3)])
    return model.eval()


@pytest.fixture(scope="module")
def exported(qat_model, tmp_path_factory) -> tuple[Path, onnx.ModelProto, dict]:
    folder = tmp_path_factory.mktemp("qat")
    checkpoint = save_checkpoint(folder / "qat.safetensors", qat_model, info={"test": True})
    report = export_model(ExportConfig(output=folder / "qat.onnx", checkpoint=checkpoint,
                                       height=SIZE, width=SIZE))
    return checkpoint, onnx.load(str(folder / "qat.onnx")), report.to_dict()


def test_bn_folding_preserves_the_function():
    torch.manual_seed(0)
    block = ConvBnAct(8, 16, 3)
    block.train()
    with torch.no_grad():
        block(torch.randn(4, 8, 16, 16) * 3 + 1)
    block.eval()
    folded = qat.fold_conv_bn(block[0], block[1])
    x = torch.randn(2, 8, 16, 16)
    expected = block[1](block[0](x))
    got = torch.nn.functional.conv2d(x, folded.weight, folded.bias, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_fake_quant_is_close_to_float_and_passes_gradients(qat_model):
    float_model = float_model_with_bn_statistics()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        gap = (qat_model(x) - float_model(x)).abs().mean()
    assert 0 < gap < 0.05  # quantized (not identical), but close
    clone = create_model("mqnet", qat=True)
    clone.load_state_dict(qat_model.state_dict())
    clone.train()
    clone(torch.rand(1, 3, SIZE, SIZE)).mean().backward()
    assert clone.backbone.encoder.stem.conv.weight.grad.abs().sum() > 0  # straight-through
    assert clone.head.conv1.weight.grad.abs().sum() > 0


def test_quantizer_placement(qat_model):
    names = [name for name, _ in qat.activation_quantizers(qat_model)]
    assert all(name.startswith("backbone.") for name in names)  # no head activations
    assert "backbone.input_quant" in names and "backbone.encoder.stem.input_quant" in names
    assert any(name.endswith("add_quant") for name in names)
    assert any(name.endswith("cat16_quant") for name in names)
    assert any(name.endswith("gate_quant") for name in names)
    convs = [m for m in qat_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(isinstance(m, qat.FakeQuantConv2d) for m in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in qat_model.modules())
    assert qat_model.backbone.input_quant.scale.item() == pytest.approx(1 / 255)


def test_checkpoint_rebuilds_the_qat_structure(exported, qat_model):
    checkpoint, _, _ = exported
    rebuilt = create_model("mqnet", checkpoint=checkpoint)
    assert rebuilt.config.qat and qat.is_qat(rebuilt)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), qat_model(x), rtol=0, atol=0)


def test_export_gives_qdq_onnx_that_matches_the_fake_quant_model(exported):
    _, proto, report = exported
    parity = report["parity"]
    assert parity["passed"] and parity["statistic"] == "max"
    assert parity["tolerance"] == pytest.approx(1 / 1023)
    # Power-of-two scales: ORT's int8 kernels and its unfused reference both compute
    # what the fake-quant model computes, up to the float head's last bits.
    assert parity["max_abs_error"] <= 0.01 / 1023
    assert parity["reference"]["max_abs_error"] <= 0.01 / 1023
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert all(onnx_meta.node_part(n) in (onnx_meta.BACKBONE, onnx_meta.HEAD)
               for n in proto.graph.node)


def test_qat_scales_are_powers_of_two_and_zero_points_even(qat_model):
    for name, quantizer in qat.activation_quantizers(qat_model):
        if quantizer.fixed:
            continue
        assert math.log2(float(quantizer.scale)).is_integer(), name
        assert int(quantizer.zero_point) % 2 == 0, name
    conv = qat_model.backbone.encoder.stem.conv
    assert all(math.log2(s).is_integer() for s in qat.weight_scale(conv.weight).tolist())


def test_ort_runs_the_qat_backbone_with_int8_kernels(exported, tmp_path):
    """The exported QDQ form is one ORT fuses: int8 weights, int32 biases, no float convs."""
    _, proto, _ = exported
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    ops = collections.Counter(n.op_type for n in optimized.graph.node)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    head = [n for n in convs if onnx_meta.node_part(n) == onnx_meta.HEAD]
    assert ops["QLinearConv"] == len(convs) - len(head)
    assert ops["QLinearAdd"] > 0 and ops["QLinearConcat"] > 0


def _producers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in proto.graph.node for out in node.output}


def _is_quantized_weight(name: str, producers, initializers) -> bool:
    """Weight fed through DequantizeLinear from int8 data (an initializer or Q of one)."""
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        return False
    source = node.input[0]
    if source in initializers:
        return numpy_helper.to_array(initializers[source]).dtype == np.int8
    quantize = producers.get(source)
    return quantize is not None and quantize.op_type == "QuantizeLinear" and \
        quantize.input[0] in initializers


def _quantized_downstream(conv: onnx.NodeProto, proto: onnx.ModelProto) -> bool:
    """The conv output reaches a QuantizeLinear, directly or through its fused Relu/Clip."""
    frontier = set(conv.output)
    for node in proto.graph.node:
        if frontier & set(node.input):
            if node.op_type == "QuantizeLinear":
                return True
            if node.op_type in ("Relu", "Clip"):
                frontier |= set(node.output)
    return False


def test_backbone_convs_are_int8_and_head_convs_have_float_activations(exported):
    _, proto, _ = exported
    producers = _producers(proto)
    initializers = {i.name: i for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    backbone = [n for n in convs if onnx_meta.node_part(n) == onnx_meta.BACKBONE]
    head = [n for n in convs if onnx_meta.node_part(n) == onnx_meta.HEAD]
    assert len(head) == 3 and len(backbone) > 60
    for conv in convs:
        assert _is_quantized_weight(conv.input[1], producers, initializers), conv.name
    consumers: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for conv in backbone:  # int8 in, int8 out
        assert producers[conv.input[0]].op_type == "DequantizeLinear", conv.name
        assert _quantized_downstream(conv, proto), conv.name
    # The head's first conv reads the (int8) backbone output; from there on it is float.
    for conv in head:
        assert "QuantizeLinear" not in consumers.get(conv.output[0], []), conv.name
    for conv in head[1:]:
        assert producers[conv.input[0]].op_type != "DequantizeLinear", conv.name
    # every Q/DQ node carries the tag of the part it belongs to
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert {onnx_meta.node_part(n) for n in qdq} == {onnx_meta.BACKBONE, onnx_meta.HEAD}


def test_prepare_qat_refuses_a_qat_model(qat_model):
    with pytest.raises(ValueError, match="already"):
        qat.prepare_qat(qat_model)
