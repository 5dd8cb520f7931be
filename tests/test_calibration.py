"""Streaming calibration: exact percentiles, native-scale crops, size-agnostic graph copies,
only the tensors a scheme needs, and byte-identical artifacts from the fast path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod
from PIL import Image

from itm_onnx.data import make_calibration_set
from itm_onnx.quantize import CalibrationSettings, QuantizeConfig, quantize_model
from itm_onnx.quantize.calibration import native_crop
from itm_onnx.quantize.ranges import (
    RangeCollector,
    calibration_model,
    global_tensors,
    range_aliases,
    size_agnostic,
)


def _order_statistic_range(values: list[np.ndarray], percentile: float) -> tuple[float, float]:
    """The definition RangeCollector implements, computed on every value at once."""
    everything = np.sort(np.concatenate([v.ravel() for v in values]))
    cut = math.floor((100.0 - percentile) / 200.0 * everything.size)
    return float(everything[cut]), float(everything[everything.size - 1 - cut])


@pytest.mark.parametrize("percentile", [99.999, 99.9, 99.0])
def test_percentile_is_exact_over_images_of_different_sizes(percentile):
    rng = np.random.default_rng(0)
    shapes = [(1, 8, 32, 32), (1, 8, 64, 96), (1, 8, 32, 64), (1, 8, 96, 96)]
    images = [rng.standard_t(3, size=s).astype(np.float32) for s in shapes]
    pooled = [rng.normal(size=(1, 8, 1, 1)).astype(np.float32) for _ in shapes]
    pixels = [s[2] * s[3] for s in shapes]
    collector = RangeCollector("percentile", percentile, len(shapes), sum(pixels))
    for image, pool, p in zip(images, pooled, pixels, strict=True):
        collector.add({"feature": image, "pooled": pool}, p)
    ranges = collector.result(CalibrationMethod.Percentile)
    assert ranges.calibration_method == CalibrationMethod.Percentile
    for name, values in (("feature", images), ("pooled", pooled)):
        low, high = _order_statistic_range(values, percentile)
        assert float(ranges[name].lowest) == low and float(ranges[name].highest) == high
    # The tails kept stay small: a few values per image, not the images themselves.
    kept = collector.high["feature"].size + collector.low["feature"].size
    assert kept < 0.05 * sum(i.size for i in images) or percentile < 99.9


def test_minmax_is_the_plain_extremes():
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(1, 4, 16, 16)).astype(np.float32) for _ in range(3)]
    collector = RangeCollector("minmax", 99.999, 3, 3 * 256)
    for image in images:
        collector.add({"t": image}, 256)
    ranges = collector.result(CalibrationMethod.MinMax)
    assert float(ranges["t"].lowest) == min(float(i.min()) for i in images)
    assert float(ranges["t"].highest) == max(float(i.max()) for i in images)


def test_native_crop_never_scales_and_keeps_the_stride():
    rgb = np.random.default_rng(2).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    array, decision = native_crop(rgb, (1088, 1920), 32, 10**9)
    assert array.shape == (1, 3, 288, 480) and "native scale" in decision
    top, left = (300 - 288) // 2, (500 - 480) // 2
    assert np.array_equal(array[0].transpose(1, 2, 0) * 255.0,
                          rgb[top:top + 288, left:left + 480].astype(np.float32))
    assert native_crop(rgb, (256, 256), 32, 10**9)[0].shape == (1, 3, 256, 256)
    capped = native_crop(rgb, (1088, 1920), 32, 128 * 128)[0]
    assert capped.shape[2] * capped.shape[3] <= 128 * 128 and capped.shape[2] % 32 == 0
    same = np.zeros((64, 96, 3), np.uint8)
    assert native_crop(same, (64, 96), 32, 10**9)[1].endswith("used as is")
    with pytest.raises(ValueError, match="stride 32"):
        native_crop(np.zeros((20, 100, 3), np.uint8), (64, 64), 32, 10**9)


def _attention_model(reshape: bool = False) -> onnx.ModelProto:
    """conv -> relu6 -> (global mean -> 1x1 conv -> sigmoid) * features, fixed 32x32."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "w2")
    lo = numpy_helper.from_array(np.array(0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(6, np.float32), "hi")
    axes = numpy_helper.from_array(np.array([-1, -2], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], "relu6"),
        helper.make_node("ReduceMean", ["r", "axes"], ["m"], "mean", keepdims=1),
        helper.make_node("Conv", ["m", "w2"], ["f"], "fc"),
        helper.make_node("Sigmoid", ["f"], ["g"], "gate"),
        helper.make_node("Mul", ["r", "g"], ["y"], "scale"),
    ]
    inits = [w1, w2, lo, hi, axes]
    if reshape:
        shape = numpy_helper.from_array(np.array([1, 4, 32, 32], np.int64), "shape")
        nodes.append(helper.make_node("Reshape", ["y", "shape"], ["z"], "reshape"))
        inits.append(shape)
    out = "z" if reshape else "y"
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 3, 32, 32])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def test_size_agnostic_copy_runs_at_other_sizes_with_the_same_tensor_names():
    model = _attention_model()
    assert size_agnostic(model) is None
    assert "Reshape" in size_agnostic(_attention_model(reshape=True))
    tensors = ["x", "c", "r", "m", "f", "g", "y"]
    assert global_tensors(model, tensors) == ["m", "f", "g"]
    assert range_aliases(model, tensors) == {"c": "r"}
    dynamic = ort.InferenceSession(calibration_model(model, tensors, dynamic=True))
    fixed = ort.InferenceSession(calibration_model(model, tensors, dynamic=False))
    assert [o.name for o in dynamic.get_outputs()] == tensors
    x = np.random.default_rng(4).random((1, 3, 32, 32), dtype=np.float32)
    for a, b in zip(dynamic.run(None, {"x": x}), fixed.run(None, {"x": x}), strict=True):
        assert np.array_equal(a, b)
    bigger = dynamic.run(["y"], {"x": np.ones((1, 3, 64, 96), np.float32)})[0]
    assert bigger.shape == (1, 4, 64, 96)


@pytest.fixture(scope="module")
def native_calib(tmp_path_factory) -> Path:
    """Calibration images larger than the 64x64 export and of two sizes (not upscaled)."""
    folder = tmp_path_factory.mktemp("native-calib")
    rng = np.random.default_rng(5)
    for i in range(6):
        h, w = (96, 160) if i % 2 else (128, 128)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"img_{i}.png")
    return folder


def _quantize(model: Path, out: Path, calib: Path, cache: Path, scheme: str = "mixed",
              **settings):
    return quantize_model(QuantizeConfig(
        model=model, output=out, scheme=scheme, calibration=calib, cache_dir=cache,
        calibration_settings=CalibrationSettings(min_images=4, **settings), error_images=1))


def test_fast_calibration_gives_byte_identical_artifacts(tiny_export, native_calib, tmp_path):
    first = _quantize(tiny_export[0], tmp_path / "a.onnx", native_calib, tmp_path / "c1")
    assert first.calibration["cached"] is False and first.calibration["scale"] == "native"
    assert first.calibration["fitting"] == {"128x128 -> 64x64: native scale, centre-cropped": 3,
                                            "160x96 -> 64x64: native scale, centre-cropped": 3}
    fresh = _quantize(tiny_export[0], tmp_path / "b.onnx", native_calib, tmp_path / "c2")
    again = _quantize(tiny_export[0], tmp_path / "c.onnx", native_calib, tmp_path / "c2")
    assert fresh.calibration["cached"] is False and again.calibration["cached"] is True
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() \
        == (tmp_path / "c.onnx").read_bytes()
    assert first.calibration["ranges"] != fresh.calibration["ranges"]
    assert Path(first.calibration["ranges"]).read_bytes() == \
        Path(fresh.calibration["ranges"]).read_bytes()


def test_mixed_calibrates_only_the_backbone_full_int8_everything(tiny_export, native_calib,
                                                                  tmp_path):
    mixed = _quantize(tiny_export[0], tmp_path / "m.onnx", native_calib, tmp_path / "c")
    full = _quantize(tiny_export[0], tmp_path / "f.onnx", native_calib, tmp_path / "c",
                     scheme="full-int8")
    assert full.calibration["cached"] is False  # more tensors: its own ranges
    assert mixed.calibration["tensors"] < full.calibration["tensors"]
    assert mixed.calibration["tensors_measured"] < mixed.calibration["tensors"]  # aliases
    assert mixed.calibration["whole_image_tensors"] > 0  # channel attention
    assert mixed.counts["backbone_float_compute_nodes"] == 0
    assert full.counts["backbone_float_compute_nodes"] == 0


def test_fitted_calibration_is_still_available(tiny_export, native_calib, tmp_path):
    report = _quantize(tiny_export[0], tmp_path / "f.onnx", native_calib, tmp_path / "c",
                       native_scale=False)
    assert report.calibration["scale"] == "fitted to the input shape"
    assert all("scaled" in d or "not scaled" in d for d in report.calibration["fitting"])


def test_deployed_scale_crops_are_windows_of_full_frames(tmp_path):
    crops = make_calibration_set(tmp_path / "crops", count=2, size=(32, 64),
                                 render_size=(64, 96))
    full = make_calibration_set(tmp_path / "full", count=2, size=(64, 96))
    for crop, frame in zip(crops, full, strict=True):
        small, big = np.asarray(Image.open(crop.path)), np.asarray(Image.open(frame.path))
        assert small.shape == (32, 64, 3)
        windows = [big[t:t + 32, x:x + 64] for t in range(33) for x in range(33)]
        assert any(np.array_equal(small, w) for w in windows)
    with pytest.raises(ValueError, match="smaller"):
        make_calibration_set(tmp_path / "bad", count=1, size=(64, 64), render_size=(32, 32))


def test_whole_image_tensors_can_be_calibrated_at_the_deployed_size(tiny_export, native_calib,
                                                                   tmp_path):
    native = _quantize(tiny_export[0], tmp_path / "n.onnx", native_calib, tmp_path / "c")
    deployed = _quantize(tiny_export[0], tmp_path / "d.onnx", native_calib, tmp_path / "c",
                         global_images=2)
    assert native.calibration["whole_image_images"] == 0
    assert deployed.calibration["whole_image_images"] == 2
    assert deployed.calibration["key"] != native.calibration["key"]
    ranges = [json.loads(Path(r.calibration["ranges"]).read_text())["data"]
              for r in (native, deployed)]
    assert ranges[0].keys() == ranges[1].keys()
    assert ranges[0] != ranges[1]  # the pooled tensors saw other images
