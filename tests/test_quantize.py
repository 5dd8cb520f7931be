"""itm-onnx quantize: node precisions per scheme, determinism, cache, shapes, error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from itm_onnx import onnx_meta
from itm_onnx.cli import main
from itm_onnx.quantize import CalibrationSettings, QuantizeConfig, quantize_model
from itm_onnx.quantize.api import code_error_summary, codes10
from itm_onnx.quantize.rewrite import REWRITES, apply_rewrites
from itm_onnx.quantize.schemes import QuantOptions

from .calibration_images import write_structured_images

MIN_IMAGES = 4


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    """Eight small structured 8-bit images plus a README that must be ignored."""
    folder = tmp_path_factory.mktemp("calib")
    write_structured_images(folder, 8, 80, 96, seed=1)
    (folder / "README.md").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _quantize(model: Path, out: Path, calib: Path, cache: Path, scheme: str = "mixed",
              **kwargs):
    return quantize_model(QuantizeConfig(
        model=model, output=out, scheme=scheme, calibration=calib, cache_dir=cache,
        calibration_settings=CalibrationSettings(min_images=MIN_IMAGES), error_images=1,
        **kwargs))


@pytest.fixture(scope="module")
def mixed(tiny_export, calib_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "mixed.onnx"
    report = _quantize(tiny_export[0], out, calib_dir, cache_dir)
    return out, report


@pytest.fixture(scope="module")
def full_int8(tiny_export, calib_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "full.onnx"
    return out, _quantize(tiny_export[0], out, calib_dir, cache_dir, scheme="full-int8")


# --- graph inspection helpers -------------------------------------------------------------


def _graph(path: Path):
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    return model, producers, inits


def _dq_type(dq, inits, producers) -> int:
    """Element type a DequantizeLinear reads (its zero point's type)."""
    if len(dq.input) > 2 and dq.input[2] in inits:
        return inits[dq.input[2]].data_type
    return inits[dq.input[0]].data_type if dq.input[0] in inits else -1


EIGHT_BIT = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)


def test_mixed_backbone_is_int8_and_head_has_int8_weights_float_activations(mixed):
    path, report = mixed
    model, producers, inits = _graph(path)
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    backbone_compute = 0
    for node in model.graph.node:
        if node.op_type in onnx_meta.QDQ_OPS:
            continue
        if node.op_type == "Pad":  # rewrite_qdq: the stem's quantized photo, 3 -> 4 channels
            assert producers[node.input[0]].op_type == "QuantizeLinear"
            assert [c.op_type for c in consumers[node.output[0]]] == ["DequantizeLinear"]
            continue
        part = onnx_meta.node_part(node)
        bias_index = 2 if node.op_type == "Conv" else None
        for k, name in enumerate(node.input):
            if not name or (name in inits and inits[name].data_type == onnx.TensorProto.FLOAT):
                continue  # float constants (Resize scales and the like)
            producer = producers.get(name)
            if part == onnx_meta.BACKBONE:
                # every backbone input is dequantized 8-bit data (int32 only for a bias)
                assert producer is not None and producer.op_type == "DequantizeLinear", (
                    node.name, name)
                if k != bias_index:
                    assert _dq_type(producer, inits, producers) in EIGHT_BIT, (node.name, name)
        if part == onnx_meta.BACKBONE:
            backbone_compute += 1
            for out in node.output:  # and its output is quantized again
                assert all(c.op_type == "QuantizeLinear" for c in consumers.get(out, [])), node.name
    assert backbone_compute > 50
    head_convs = [n for n in model.graph.node
                  if onnx_meta.node_part(n) == onnx_meta.HEAD and n.op_type in ("Conv", "MatMul")]
    # the head's three (its second and third, with per-image weights, as MatMul(W, x):
    # rewrite_qdq.per_image_conv_as_matmul); the backbone's last layer
    # (rewrite.float_photo_tail): its half-resolution conv and its conv on the photo; and
    # the layer before it (rewrite.float_skip_fuse): its quarter-resolution conv on the
    # upsampled branch and the identity conv that brings its int8 skip branch into NCHWc
    # (sum_into_nchwc_conv)
    assert len(report.rewrites["pad_conv_input_channels"]) == 1  # the stem
    assert len(report.rewrites["per_image_conv_as_matmul"]) == 2
    assert [n.op_type for n in head_convs].count("MatMul") == 2
    tail = set(report.rewrites["float_photo_tail"])
    skip = set(report.rewrites["float_skip_fuse"]) | set(report.rewrites["sum_into_nchwc_conv"])
    tail_convs = [c for c in head_convs if c.name in tail]
    skip_convs = [c for c in head_convs if c.name in skip]
    assert len(head_convs) == 7 and len(tail_convs) == 2 and len(skip_convs) == 2
    assert sorted(producers[c.input[0]].op_type if c.input[0] in producers else c.input[0]
                  for c in tail_convs) == ["Relu", "ldr"]  # ldr: the float photo
    # the only two dequantized activations the float part reads
    assert [producers[c.input[0]].op_type for c in skip_convs] == ["DequantizeLinear"] * 2
    grid = report.counts["head_weight_grid"]
    on_grid = {w["weight"] for w in grid["weights"] if w["on_grid"]}
    assert grid["all_on_grid"] and not grid["unproven"] and len(on_grid) == 7
    for conv in head_convs:
        # A float constant on its int8 grid: read directly, or scaled per image (Mul;
        # rewrite.fold_instance_norm), reshaped for a MatMul. No DequantizeLinear runs on
        # any head weight.
        weight = conv.input[1]
        if conv.op_type == "MatMul":
            assert producers[conv.input[0]].op_type == "Reshape"
            weight = producers[conv.input[0]].input[0]
        if weight in producers:
            assert producers[weight].op_type == "Mul"
            weight = next(i for i in producers[weight].input if i in inits)
        assert inits[weight].data_type == onnx.TensorProto.FLOAT and weight in on_grid
        for out in conv.output:  # float activations out of every head conv
            assert all(c.op_type != "QuantizeLinear" for c in consumers.get(out, []))
    for conv in head_convs:  # and into every one but those two
        if conv not in skip_convs:
            assert producers.get(conv.input[0]) is None or producers[
                conv.input[0]].op_type != "DequantizeLinear"
    final = producers[model.graph.output[0].name]
    assert final.op_type not in onnx_meta.QDQ_OPS and onnx_meta.node_part(final) == "head"
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
               for i in final.input)
    counts = report.counts
    assert counts["backbone_float_compute_nodes"] == 0
    assert counts["by_part"]["backbone"] == {"int8": counts["by_part"]["backbone"]["int8"]}
    assert report.runtime["backbone_float_kernels"] == []
    assert "com.microsoft.QLinearConv" in report.runtime["kernels_by_part"]["backbone"]


def _with_dequantized_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with each on-grid head weight as int8 + DequantizeLinear (the
    form before head weights were stored in float), rebuilt from the recorded grid."""
    from itm_onnx.quantize.schemes import GRID_KEY

    rebuilt = onnx.ModelProto()
    rebuilt.CopyFrom(model)
    inits = {t.name: t for t in rebuilt.graph.initializer}
    records = [json.loads(p.value) for n in rebuilt.graph.node for p in n.metadata_props
               if p.key == GRID_KEY]
    for k, record in enumerate(records):
        weight = onnx.numpy_helper.to_array(inits[record["weight"]])
        scale = np.array(record["scale"], np.float32)
        zp = np.array(record["zero_point"], np.int8)
        q = np.rint(weight / scale.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.int8)
        rebuilt.graph.initializer.remove(inits[record["weight"]])
        rebuilt.graph.initializer.extend([onnx.numpy_helper.from_array(q, f"q{k}"),
                                          onnx.numpy_helper.from_array(scale, f"s{k}"),
                                          onnx.numpy_helper.from_array(zp, f"z{k}")])
        rebuilt.graph.node.insert(0, onnx.helper.make_node(
            "DequantizeLinear", [f"q{k}", f"s{k}", f"z{k}"], [record["weight"]], f"dq{k}",
            axis=0))
    return rebuilt


def test_head_weights_on_grid_give_the_numbers_dequantize_gives(mixed):
    """Float head weights compute what DequantizeLinear(int8) did: bit for bit with the
    graph as written, within float rounding with ORT's optimizations (other kernels)."""
    path, _ = mixed
    model = onnx.load(str(path))
    rebuilt = _with_dequantized_head(model)
    x = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)
    for level, tolerance in ((ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 0.0),
                             (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 1e-5)):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        a, b = (ort.InferenceSession(m.SerializeToString(), options,
                                     providers=["CPUExecutionProvider"]).run(None, {"ldr": x})[0]
                for m in (model, rebuilt))
        assert np.max(np.abs(a - b)) <= tolerance


def test_grid_proof_catches_a_weight_off_its_grid(mixed):
    from itm_onnx.quantize.report import weight_grid_proof

    model = onnx.load(str(mixed[0]))
    proof = weight_grid_proof(model)
    assert proof["all_on_grid"]
    first = proof["weights"][0]
    assert all(len(c["integers"]) > 0 and -128 <= min(c["integers"]) <= max(c["integers"]) <= 127
               for c in first["channels"])
    tensor = next(t for t in model.graph.initializer if t.name == first["weight"])
    values = onnx.numpy_helper.to_array(tensor).copy()
    values.reshape(values.shape[0], -1)[1, 0] = np.nextafter(
        values.reshape(values.shape[0], -1)[1, 0], np.float32(1))  # one ulp off
    tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    broken = weight_grid_proof(model)
    assert not broken["all_on_grid"]
    bad = next(w for w in broken["weights"] if w["weight"] == first["weight"])
    assert [c["channel"] for c in bad["channels"] if not c["on_grid"]] == [1]


def test_full_int8_quantizes_the_head_too(full_int8):
    path, report = full_int8
    model, producers, inits = _graph(path)
    head_convs = [n for n in model.graph.node
                  if onnx_meta.node_part(n) == onnx_meta.HEAD and n.op_type == "Conv"]
    for conv in head_convs:
        assert producers[conv.input[0]].op_type == "DequantizeLinear"
    assert report.counts["by_part"]["head"].get("int8", 0) >= 3
    assert report.counts["QuantizeLinear"] > 0


def test_a16w8_head_gives_the_head_16_bit_activations(tiny_export, calib_dir, cache_dir,
                                                      tmp_path):
    report = _quantize(tiny_export[0], tmp_path / "a16.onnx", calib_dir, cache_dir,
                       scheme="a16w8-head")
    convs = [n for n in report.nodes if n["part"] == "head" and n["op_type"] == "Conv"]
    assert convs and all(n["weights"] == "int8" for n in convs)
    assert any(n["output"] == "uint16" for n in convs)
    assert report.counts["backbone_float_compute_nodes"] == 0


def test_report_file_lists_every_node_and_worst_tensors_first(mixed):
    path, report = mixed
    saved = json.loads(path.with_suffix(".quant.json").read_text())
    assert saved["sha256"] == report.sha256
    names = {n["name"] for n in saved["nodes"]}
    model = onnx.load(str(path))
    assert names == {n.name for n in model.graph.node if n.op_type not in onnx_meta.QDQ_OPS}
    sqnr = [e["xmodel_sqnr"] for e in saved["tensor_errors"] if e["xmodel_sqnr"] is not None]
    assert sqnr and sqnr == sorted(sqnr)
    assert saved["calibration"]["images"]["ignored_non_images"] == ["README.md"]
    meta = onnx_meta.read_model_metadata(model)
    assert json.loads(meta["quantization"])["scheme"] == "mixed"
    assert onnx_meta.read_session_options(model) == report.session_options


def test_same_inputs_give_byte_identical_models_and_calibration_is_cached(
        tiny_export, mixed, calib_dir, cache_dir, tmp_path):
    path, first = mixed
    again = _quantize(tiny_export[0], tmp_path / "again.onnx", calib_dir, cache_dir)
    assert again.calibration["cached"] is True
    fresh = _quantize(tiny_export[0], tmp_path / "fresh.onnx", calib_dir, tmp_path / "cache2")
    assert fresh.calibration["cached"] is False
    assert (tmp_path / "again.onnx").read_bytes() == path.read_bytes()
    assert (tmp_path / "fresh.onnx").read_bytes() == path.read_bytes()
    other = _quantize(tiny_export[0], tmp_path / "per-tensor.onnx", calib_dir, cache_dir,
                      options=QuantOptions(per_channel=False))
    assert other.calibration["cached"] is True  # other quantizer options reuse the ranges
    assert (tmp_path / "per-tensor.onnx").read_bytes() != path.read_bytes()


def test_rewrites_are_exact_in_float(tiny_export):
    model = onnx.load(str(tiny_export[0]))
    rewritten = onnx.load(str(tiny_export[0]))
    log = apply_rewrites(rewritten, (*REWRITES, "sum_into_nchwc_conv"))
    assert log.applied.get("conv_before_upsample") and log.applied.get("fold_input_affine")
    assert len(log.applied["float_skip_fuse"]) == 4 and log.applied["sum_into_nchwc_conv"]
    assert sum(n.op_type == "Concat" for n in rewritten.graph.node) == sum(
        n.op_type == "Concat" for n in model.graph.node) - 2  # the two fuse layers'
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    a = ort.InferenceSession(model.SerializeToString()).run(None, {"ldr": x})[0]
    b = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"ldr": x})[0]
    assert np.abs(a - b).max() < 1e-5


def _dynamic_copy(fixed: Path, out: Path) -> Path:
    """The 64x64 export with symbolic height/width: the same graph as an ``--dynamic``
    export once onnxsim has folded the shapes (Resize by scales, no Reshape to fixed
    sizes), made in milliseconds instead of a second dynamo export."""
    model = onnx.load(str(fixed))
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out


def _trained_like_norms(path: Path) -> onnx.ModelProto:
    """The tiny export with InstanceNorm gammas of both signs and a beta Add, as a
    trained model has (random init exports gamma = 1 and no beta)."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(7)
    for relu in [n for n in model.graph.node if n.op_type == "Relu"]:
        mul = producers.get(relu.input[0])
        if mul is None or mul.op_type != "Mul":
            continue
        div = next((producers[i] for i in mul.input if i in producers
                    and producers[i].op_type == "Div"), None)
        if div is None or div.input[0] not in inits:
            continue
        gamma = onnx.numpy_helper.to_array(inits[div.input[0]])
        signs = np.where(np.arange(gamma.size) % 3 == 0, -1.0, 1.0).reshape(gamma.shape)
        new = (signs * rng.uniform(0.5, 2.0, gamma.shape)).astype(np.float32)
        inits[div.input[0]].CopyFrom(onnx.numpy_helper.from_array(new, div.input[0]))
        beta = onnx.numpy_helper.from_array(
            rng.normal(0, 0.5, gamma.shape).astype(np.float32), relu.name + "_beta")
        model.graph.initializer.append(beta)
        shifted = relu.input[0] + "_plus_beta"
        add = onnx.helper.make_node("Add", [relu.input[0], beta.name], [shifted],
                                    relu.name + "_add_beta")
        add.metadata_props.add(key=onnx_meta.PART_KEY, value=onnx_meta.HEAD)
        model.graph.node.insert(list(model.graph.node).index(relu), add)
        relu.input[0] = shifted
    return model


def test_instance_norm_fold_is_exact_with_negative_gammas_and_beta(tiny_export):
    model = _trained_like_norms(tiny_export[0])
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    log = apply_rewrites(folded, ("fold_instance_norm",))
    assert len(log.applied["fold_instance_norm"]) == 2
    onnx.checker.check_model(folded, full_check=True)
    ops = [n.op_type for n in folded.graph.node]
    # a Max per fold on the norm's input and a clamp per variance; the tanh's relu(t) stays
    assert ops.count("Max") == 4 and "Relu" in ops
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    a = ort.InferenceSession(model.SerializeToString()).run(None, {"ldr": x})[0]
    b = ort.InferenceSession(folded.SerializeToString()).run(None, {"ldr": x})[0]
    assert np.abs(a - b).max() < 1e-5
    shared = {o for n in model.graph.node for o in n.output} & {
        o for n in folded.graph.node for o in n.output}
    assert not any(name.endswith("_sign_folded") for name in shared)


def test_folded_norm_statistics_hold_at_other_sizes_and_on_flat_images(tiny_export, tmp_path):
    """The folded norms' variance (sum of squares / W, minus mean^2) reads W at run time:
    the quantization report runs a fixed-shape artifact at the calibration photos' size,
    where a 1 / W baked from the export scaled the variance wrongly."""
    model = _trained_like_norms(tiny_export[0])
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    apply_rewrites(folded, ("fold_instance_norm",))
    producers = {o: n for n in folded.graph.node for o in n.output}
    squared = {n.input[0] for n in folded.graph.node if n.op_type == "ReduceSumSquare"}
    # the sums of squares read the norms' inputs (conv outputs), not x - mean
    assert len(squared) == 2 and {producers[t].op_type for t in squared} == {"Conv"}
    sessions = []
    for graph, name in ((model, "float.onnx"), (folded, "folded.onnx")):
        onnx.save(graph, str(tmp_path / name))
        dynamic = _dynamic_copy(tmp_path / name, tmp_path / f"dyn-{name}")
        sessions.append(ort.InferenceSession(str(dynamic)))
    rng = np.random.default_rng(2)
    for x in (rng.random((1, 3, 96, 160), dtype=np.float32),
              np.full((1, 3, 64, 64), 0.5, np.float32), np.zeros((1, 3, 32, 96), np.float32)):
        a, b = (s.run(None, {"ldr": x})[0] for s in sessions)
        assert np.abs(a - b).max() < 1e-4, x.shape


def test_dynamic_model_is_calibrated_at_the_default_size_and_runs_at_any(
        tiny_export, calib_dir, cache_dir, tmp_path):
    fp32 = _dynamic_copy(tiny_export[0], tmp_path / "dyn.onnx")
    report = _quantize(fp32, tmp_path / "dyn-mixed.onnx", calib_dir, cache_dir,
                       dynamic_size=(64, 96))
    assert report.input_shape == [1, 3, 64, 96]
    assert report.counts["backbone_float_compute_nodes"] == 0
    session = ort.InferenceSession(str(tmp_path / "dyn-mixed.onnx"))
    for shape in ((1, 3, 64, 64), (1, 3, 96, 128)):
        out = session.run(None, {"ldr": np.full(shape, 0.5, np.float32)})[0]
        assert out.shape == shape and np.isfinite(out).all()


def test_mixed_output_stays_close_to_fp32(tiny_export, mixed, full_int8):
    """Random weights: the figures are loose (a trained model is measured by `bench`),
    but the mixed model must not be worse than the full int8 one."""
    from itm_onnx.bench.fidelity import heldout_images

    fp32 = ort.InferenceSession(str(tiny_export[0]))
    sessions = {name: ort.InferenceSession(str(p[0]), disabled_optimizers=list(
        p[1].session_options.get("disabled_optimizers", [])))
        for name, p in (("mixed", mixed), ("full", full_int8))}
    figures = {}
    for name, session in sessions.items():
        diffs = []
        for x in heldout_images(64, 64, 3, seed=5):
            ref = codes10(fp32.run(None, {"ldr": x})[0])
            diffs.append(np.abs(codes10(session.run(None, {"ldr": x})[0]) - ref).ravel())
        figures[name] = code_error_summary(np.concatenate(diffs))
    assert figures["mixed"]["psnr_10bit_db"] > 30
    assert figures["mixed"]["psnr_10bit_db"] >= figures["full"]["psnr_10bit_db"]
    # int8 everywhere stays usable: no float-only rewrite (exp(p log x) has -inf at x = 0)
    # reaches it (it scored 6 dB on the trained model when one did).
    assert figures["full"]["psnr_10bit_db"] > 25


def test_already_quantized_model_is_copied_through(mixed, calib_dir, runner, tmp_path):
    out = tmp_path / "again.onnx"
    result = runner.invoke(main, ["quantize", "--model", str(mixed[0]), "--output", str(out),
                                  "--calibration", str(calib_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["already_quantized"] is True
    assert out.read_bytes() == mixed[0].read_bytes()


# --- error paths through the CLI -----------------------------------------------------------


def _cli(runner, model, out, *extra):
    return runner.invoke(main, ["quantize", "--mixed", "--model", str(model), "--output",
                                str(out), "--min-images", str(MIN_IMAGES), *extra])


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_missing_calibration_folder(runner, tiny_export, tmp_path):
    out = _one_line_error(_cli(runner, tiny_export[0], tmp_path / "q.onnx", "--calibration",
                               str(tmp_path / "nope")), 2)
    assert "does not exist" in out


def test_empty_calibration_folder(runner, tiny_export, tmp_path):
    (tmp_path / "empty").mkdir()
    out = _one_line_error(_cli(runner, tiny_export[0], tmp_path / "q.onnx", "--calibration",
                               str(tmp_path / "empty")), 2)
    assert "0 usable image(s)" in out


def test_non_images_are_named(runner, tiny_export, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("this is not a png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "notes.txt").write_text("text")
    out = _one_line_error(_cli(runner, tiny_export[0], tmp_path / "q.onnx", "--calibration",
                               str(folder)), 2)
    assert "a.png" in out and "b.jpg" in out and "non-image" in out
    assert not (tmp_path / "q.onnx").exists()


def test_untagged_model_needs_head_nodes(runner, tiny_export, calib_dir, tmp_path):
    model = onnx.load(str(tiny_export[0]))
    head = onnx_meta.nodes_in_part(model, onnx_meta.HEAD)
    for node in model.graph.node:
        del node.metadata_props[:]
    untagged = tmp_path / "untagged.onnx"
    onnx.save(model, str(untagged))
    out = _one_line_error(_cli(runner, untagged, tmp_path / "q.onnx", "--calibration",
                               str(calib_dir)), 1)
    assert "no backbone/head tag" in out and "--head-nodes" in out
    first_head = head[0]
    result = _cli(runner, untagged, tmp_path / "q.onnx", "--calibration", str(calib_dir),
                  "--head-nodes", first_head, "--cache-dir", str(tmp_path / "c"), "--json",
                  "--error-images", "0")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["counts"]["backbone_float_compute_nodes"] == 0
    wrong = _cli(runner, untagged, tmp_path / "q.onnx", "--calibration", str(calib_dir),
                 "--head-nodes", "no_such_node")
    assert "no_such_node" in _one_line_error(wrong, 2)


@pytest.mark.parametrize("args", [
    ["--calibrate-method", "median"],
    ["--dynamic-size", "big"],
    ["--min-images", "0"],
    ["--min-images", "70", "--max-images", "64"],
    ["--rewrites", "warp_drive"],
])
def test_bad_flags_are_usage_errors(runner, tiny_export, tmp_path, args):
    _one_line_error(_cli(runner, tiny_export[0], tmp_path / "q.onnx", *args), 2)


def test_missing_model_and_output_folder(runner, tiny_export, tmp_path):
    _one_line_error(_cli(runner, tmp_path / "none.onnx", tmp_path / "q.onnx"), 2)
    _one_line_error(_cli(runner, tiny_export[0], tmp_path / "no" / "q.onnx"), 2)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    _one_line_error(_cli(runner, bad, tmp_path / "q.onnx"), 1)


def test_target_nnapi_gives_one_partition_covering_every_node(runner, tiny_export, calib_dir,
                                                              cache_dir, tmp_path):
    from itm_onnx.mobile import analysed_model, checker_coverage

    out = tmp_path / "nnapi.onnx"
    result = _cli(runner, tiny_export[0], out, "--target", "nnapi", "--calibration",
                  str(calib_dir), "--cache-dir", str(cache_dir), "--error-images", "0", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    checker = data["target"]["nnapi_checker"]
    assert checker["whole_model"] and checker["partitions"] == 1
    assert data["rewrites"] == {}  # the recipe's --rewrites none
    assert "float_gates" in data["target"]["mobile_passes"]
    # The artifact on disk is the one reported, and ORT's checker agrees on it.
    assert data["sha256"] == __import__("hashlib").sha256(out.read_bytes()).hexdigest()
    nnapi = checker_coverage(analysed_model(out))[0]
    assert nnapi.whole_model and nnapi.nodes_total == checker["nodes_total"]
    saved = json.loads(out.with_suffix(".quant.json").read_text())
    assert saved["target"]["name"] == "nnapi"
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert "float_gates" in json.loads(meta["itm_onnx.mobile_passes"])
    assert data["counts"]["head_weight_grid"]["all_on_grid"]
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    y = ort.InferenceSession(str(out)).run(None, {"ldr": x})[0]
    assert y.shape == x.shape and np.isfinite(y).all()


def test_target_nnapi_refuses_other_schemes_and_dynamic_models(runner, tiny_export, tmp_path):
    result = runner.invoke(main, ["quantize", "--full-int8", "--target", "nnapi", "--model",
                                  str(tiny_export[0]), "-o", str(tmp_path / "q.onnx")])
    assert "--target nnapi supports --mixed" in _one_line_error(result, 2)
    dynamic = _dynamic_copy(tiny_export[0], tmp_path / "dyn.onnx")
    output = _one_line_error(_cli(runner, dynamic, tmp_path / "q.onnx", "--target", "nnapi"), 2)
    assert "fixed-shape export" in output
    assert not (tmp_path / "q.onnx").exists()


def test_a_dead_relu_gets_no_sqnr_figure(tmp_path):
    # An all-zero tensor has no signal to compare the noise with: it is marked, not ranked
    # as the model's worst tensor (qdq_loss_debug would say 0 dB).
    from onnx import TensorProto, helper
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from itm_onnx.quantize.report import tensor_errors

    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["alive"], name="alive"),
             helper.make_node("Add", ["conv", "shift"], ["shifted"], name="shift"),
             helper.make_node("Relu", ["shifted"], ["dead"], name="dead"),
             helper.make_node("Add", ["alive", "dead"], ["y"], name="out")]
    weight = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [onnx.numpy_helper.from_array(weight, "w"),
         onnx.numpy_helper.from_array(np.array(-100.0, np.float32), "shift")])
    float_path, qdq_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), float_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = [{"x": np.random.default_rng(i).random((1, 3, 8, 8), np.float32)}
                          for i in range(2)]
            self.rewind()

        def get_next(self):
            return next(self.iterator, None)

        def rewind(self):
            self.iterator = iter(self.feeds)

    quantize_static(str(float_path), str(qdq_path), Reader())
    rows = {r["tensor"]: r for r in tensor_errors(float_path, qdq_path, Reader(), (1, 3, 8, 8))}
    assert rows["dead"]["xmodel_sqnr"] is None and rows["dead"]["note"]
    assert rows["alive"]["xmodel_sqnr"] > 20 and "note" not in rows["alive"]


def test_output_transform_rewrites_keep_the_output(tmp_path):
    # A highlight-gated model has two clamps (gate, clip-floor ramp), two floors, one Pow.
    from itm_onnx import create_model
    from itm_onnx.checkpoint import save_checkpoint
    from itm_onnx.export import ExportConfig, export_model

    save_checkpoint(tmp_path / "gated.safetensors", create_model("mqnet", highlight_gate=0.95),
                    "mqnet")
    path = tmp_path / "gated.onnx"
    export_model(ExportConfig(output=path, checkpoint=tmp_path / "gated.safetensors",
                              height=64, width=64))
    original, rewritten = onnx.load(str(path)), onnx.load(str(path))
    log = apply_rewrites(rewritten, ("clamp_as_clip", "floor_as_max", "shrink_with_abs",
                                     "scale_into_clip", "pow_as_exp_log"))
    assert len(log.applied["clamp_as_clip"]) == 2 and len(log.applied["floor_as_max"]) == 2
    assert len(log.applied["pow_as_exp_log"]) == 1  # the identity prediction's I ** 2.2
    # the dead zone's magnitude from Abs; the floor's scale into its Clip
    assert len(log.applied["shrink_with_abs"]) == 1 and len(log.applied["scale_into_clip"]) == 1
    before = {n.name for n in original.graph.node}
    new = [n for n in rewritten.graph.node if n.name not in before]
    assert sorted(n.op_type for n in new) == ["Abs", "Add", "Clip", "Clip", "Clip", "Exp", "Log",
                                              "Max", "Max", "Mul", "Mul", "Sub"]
    # clamps 4 -> 1 each, floors 3 -> 1, Pow 1 -> 3, dead zone 7 -> 5, floor scale 1 -> 0
    assert len(rewritten.graph.node) == len(original.graph.node) - 6 - 4 + 2 - 2 - 1
    assert {onnx_meta.node_part(n) for n in new} == {onnx_meta.HEAD}  # output deploys with it
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64)).astype(np.float32) / 255
    x[:, :, :16] = 1.0
    a = ort.InferenceSession(original.SerializeToString()).run(None, {"ldr": x})[0]
    b = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"ldr": x})[0]
    assert np.abs(a - b).max() <= 1e-6
    assert (np.round(a * 1023) != np.round(b * 1023)).mean() < 1e-3
