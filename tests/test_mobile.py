"""mobile-check / mobile-prepare: ORT's checker as data, the NNAPI EP rules, .ort round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from itm_onnx import onnx_meta
from itm_onnx.cli import main
from itm_onnx.mobile import (
    NNAPI_RULES_EP,
    ROI_NAME,
    MobileCheckConfig,
    analysed_model,
    check_mobile,
    checker_coverage,
    fill_resize_roi,
    nnapi_rules_coverage,
    prepare_for_nnapi,
)

OPSET = [helper.make_opsetid("", 20)]


def _save(tmp_path: Path, name: str, nodes, inputs, outputs, inits) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _float_input(shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def _conv_norm_model(tmp_path: Path, shape=(1, 3, 8, 8)) -> Path:
    """Conv -> InstanceNormalization (not an NNAPI op) -> Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(4, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(4, np.float32), "beta")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
             helper.make_node("InstanceNormalization", ["c", "gamma", "beta"], ["n"], "norm"),
             helper.make_node("Relu", ["n"], ["y"], "relu")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, *shape[2:]])
    return _save(tmp_path, "conv_norm", nodes, [_float_input(list(shape))], [out], inits)


def _qdq_gate_model(tmp_path: Path) -> Path:
    """A tiny mixed graph with what NNAPI's op-type list accepts but its EP rejects:
    a quantized Sigmoid gate, and a float 'head' Conv with an int8 per-channel weight."""
    rng = np.random.default_rng(1)

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    inits = [
        const("s", np.float32(1 / 255)), const("zp", np.uint8(0)),
        const("s_mid", np.float32(0.02)), const("zp_mid", np.uint8(128)),
        const("w_q", rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8)),
        const("w_s", np.full(4, 0.01, np.float32)), const("w_zp", np.zeros(4, np.int8)),
        const("h_q", rng.integers(-127, 128, (3, 4, 1, 1)).astype(np.int8)),
        const("h_s", np.full(3, 0.01, np.float32)), const("h_zp", np.zeros(3, np.int8)),
    ]
    q = lambda i, o, s="s_mid", z="zp_mid": helper.make_node(  # noqa: E731
        "QuantizeLinear", [i, s, z], [o], f"q_{o}")
    dq = lambda i, o, s="s_mid", z="zp_mid", **kw: helper.make_node(  # noqa: E731
        "DequantizeLinear", [i, s, z], [o], f"dq_{o}", **kw)
    nodes = [
        q("x", "xq", "s", "zp"), dq("xq", "xd", "s", "zp"),
        dq("w_q", "wd", "w_s", "w_zp", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], "conv"),
        q("c", "cq"), dq("cq", "c_gate"), dq("cq", "c_main"),
        helper.make_node("Sigmoid", ["c_gate"], ["g"], "gate"),
        q("g", "gq", "s", "zp"), dq("gq", "gd", "s", "zp"),
        helper.make_node("Mul", ["c_main", "gd"], ["m"], "gating"),
        q("m", "mq"), dq("mq", "md"),
        dq("h_q", "hd", "h_s", "h_zp", axis=0),
        helper.make_node("Conv", ["md", "hd"], ["y"], "head_conv"),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    return _save(tmp_path, "qdq_gate", nodes, [_float_input([1, 3, 8, 8])], [out], inits)


def test_checker_results_become_structured_coverage(tmp_path):
    model = analysed_model(_conv_norm_model(tmp_path))
    nnapi, coreml_nn, coreml_ml = checker_coverage(model)
    assert (nnapi.ep, coreml_nn.ep, coreml_ml.ep) == (
        "NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
    assert nnapi.unsupported_ops == {"InstanceNormalization": 1}
    assert nnapi.nodes_total == 3 and nnapi.nodes_covered == 2
    assert nnapi.partitions == 2 and sorted(nnapi.partition_sizes) == [1, 1]
    assert nnapi.unsupported_nodes == ["InstanceNormalization:norm"]
    assert nnapi.verdict == "NO" and not nnapi.whole_model
    assert any(c.startswith("ai.onnx:Conv") for c in nnapi.caveats)
    assert coreml_ml.whole_model  # MLProgram has InstanceNormalization


def test_dynamic_shapes_are_reported(tmp_path):
    report = check_mobile(MobileCheckConfig(
        model=_conv_norm_model(tmp_path, shape=(1, 3, "height", "width")), convert_ort=False))
    assert report.dynamic_inputs == ["x"]
    nnapi = report.ep("NNAPI")
    assert nnapi.nodes_covered == 0 and nnapi.partitions == 0
    assert "Conv:conv" in nnapi.dynamic_shape_nodes
    assert nnapi.unsupported_ops == {"InstanceNormalization": 1}


def test_exported_mqnet_is_one_nnapi_partition(tiny_export):
    path, _ = tiny_export
    resizes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
    assert resizes and all(n.input[1] == ROI_NAME for n in resizes)
    report = check_mobile(MobileCheckConfig(model=path, convert_ort=False))
    for ep in ("NNAPI", NNAPI_RULES_EP):
        coverage = report.ep(ep)
        assert coverage.whole_model, (ep, coverage.unsupported_nodes)
    # ORT's CoreML EP has no Log: the "hdr" output transform's identity prediction,
    # log(1 + 512 I^2.2), is the one node iOS runs on the CPU (README, mobile section).
    coreml = report.ep("CoreML MLProgram")
    assert [n.split(":")[0] for n in coreml.unsupported_nodes] == ["Log"], coreml.unsupported_nodes
    nodes = onnx.load(str(path)).graph.node
    assert not {n.op_type for n in nodes} & {"Neg", "Abs", "Reciprocal"}
    # NNAPI has quantized Add but not Sub: none in the int8 backbone
    assert not [n for n in nodes if n.op_type == "Sub" and onnx_meta.node_part(n) == "backbone"]


def test_fill_resize_roi_is_exact(tmp_path):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], "up", mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])
    path = _save(tmp_path, "resize", nodes, [_float_input([1, 2, 4, 4])], [out], [scales])
    model = onnx.load(str(path))
    assert checker_coverage(analysed_model(path))[0].dynamic_shape_nodes == ["Resize:up"]
    assert fill_resize_roi(model) == ["up"]
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.array_equal(before, after)


def test_ort_conversion_loads_and_matches(tiny_export, tmp_path):
    path, _ = tiny_export
    report = check_mobile(MobileCheckConfig(model=path, ort_out=tmp_path))
    assert [a.style for a in report.ort] == ["Fixed", "Runtime"]
    for artifact in report.ort:
        assert artifact.loads and artifact.matches, artifact
        assert Path(artifact.path).is_file() and artifact.size_bytes > 0
        assert artifact.max_abs_diff <= 1e-4
    assert report.ort_configs and all(Path(c).is_file() for c in report.ort_configs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_nnapi_rules_see_what_the_op_list_misses_and_prepare_fixes_it(tmp_path):
    source = _qdq_gate_model(tmp_path)
    model = analysed_model(source)
    assert checker_coverage(model)[0].whole_model  # by op type, all fine
    rules = nnapi_rules_coverage(model)
    assert not rules.whole_model
    reasons = " | ".join(rules.other_unsupported)
    assert "quantized (QDQ) Sigmoid is not supported" in reasons
    assert "DequantizeLinear: is int8" in reasons
    assert "float Conv weight is not an initializer" in reasons

    report = prepare_for_nnapi(source, tmp_path / "prepared.onnx", fidelity_images=1)
    assert set(report.applied) == {"fold_weight_dequantize", "float_gates"}
    assert report.after.whole_model and not report.before.whole_model and not report.left
    # Only the gate's 8-bit rounding is gone (scale 1/255): the output moves by little.
    assert report.fidelity["max_abs_diff"] < 0.02 and report.fidelity["within_1_code"] > 0.98
    prepared = onnx.load(report.artifact)
    meta = {p.key: p.value for p in prepared.metadata_props}
    assert json.loads(meta["itm_onnx.mobile_passes"]) == ["float_gates", "fold_weight_dequantize"]
    assert onnx.load(str(source)).graph.node[2].op_type == "DequantizeLinear"  # input untouched


def test_cli_json_and_require_gate(tmp_path, runner):
    path = _conv_norm_model(tmp_path)
    result = runner.invoke(main, ["mobile-check", "--model", str(path), "--no-ort", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["ep"] for c in data["coverage"]] == [
        "NNAPI", NNAPI_RULES_EP, "CoreML NeuralNetwork", "CoreML MLProgram"]
    assert data["coverage"][0]["unsupported_ops"] == {"InstanceNormalization": 1}
    gated = runner.invoke(main, ["mobile-check", "--model", str(path), "--no-ort",
                                 "--require-nnapi", "checker"])
    assert gated.exit_code == 1
    assert gated.stderr.strip().splitlines()[-1].startswith("Error: NNAPI: 2 partitions")


@pytest.mark.parametrize("content", [None, b"this is not protobuf at all \xff\xfe"])
def test_errors_are_one_line(tmp_path, runner, content):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(main, ["mobile-check", "--model", str(path), "--json"])
    lines = result.stderr.strip().splitlines()
    if content is None:
        assert result.exit_code == 2 and "model file not found" in result.stderr
    else:
        assert result.exit_code == 1 and len(lines) == 1
        assert "is not an ONNX model" in lines[0] and "Traceback" not in result.output


def test_prepare_refuses_to_overwrite_its_input(tmp_path, runner):
    path = _conv_norm_model(tmp_path)
    result = runner.invoke(main, ["mobile-prepare", "--model", str(path), "-o", str(path)])
    assert result.exit_code == 2 and "must differ" in result.stderr
