"""quantize --sensitivity / --min-psnr: the study, the search and their charts, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from itm_onnx.cli import main
from itm_onnx.quantize import CalibrationSettings, QuantizeConfig, quantize_model
from itm_onnx.quantize.api import codes10
from itm_onnx.quantize.calibration import fit_to_shape, load_calibration_images
from itm_onnx.quantize.ptq import mse_range
from itm_onnx.quantize.sensitivity import build_switchable, psnr_db

from .calibration_images import write_structured_images

MIN_IMAGES = 4


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    write_structured_images(folder, MIN_IMAGES, 72, 88, seed=3)
    return folder


# The tiny random model's quantization error comes almost all from its last backbone
# layer; with that layer float (rewrite.float_photo_tail, the default) the emulated
# all-quantized output is within 0.3 dB of float and there is nothing to rank. Kept int8
# here so that the study has errors to find.
STUDY_REWRITES = tuple(r for r in QuantizeConfig().rewrites if r != "float_photo_tail")


def _config(model: Path, out: Path, calib: Path, cache: Path, **kwargs) -> QuantizeConfig:
    kwargs.setdefault("rewrites", STUDY_REWRITES)
    return QuantizeConfig(model=model, output=out, calibration=calib, cache_dir=cache,
                          calibration_settings=CalibrationSettings(min_images=MIN_IMAGES),
                          error_images=1, study_images=1, **kwargs)


@pytest.fixture(scope="module")
def studied(tiny_export, calib_dir, tmp_path_factory):
    """Two --sensitivity runs of the same inputs, in separate folders."""
    cache = tmp_path_factory.mktemp("cache")
    runs = []
    for k in range(2):
        out = tmp_path_factory.mktemp(f"sens{k}") / "mixed.onnx"
        runs.append((out, quantize_model(_config(tiny_export[0], out, calib_dir, cache,
                                                 sensitivity=True))))
    return runs


def test_sensitivity_report_and_chart(studied):
    out, report = studied[0]
    study = report.sensitivity
    kinds = {t["kind"] for t in study["tensors"]}
    assert kinds == {"activation", "weight"}
    # The all-float configuration leaves every backbone switch float; the head's weights
    # stay on their int8 grid as float constants (the --mixed head), so it is the float
    # model up to that rounding only, and the emulated all-quantized one is far from it.
    assert study["all_float_db"] > 55
    assert study["all_quantized_emulated_db"] < study["all_float_db"] - 10
    values = [t["only_quantized_db"] for t in study["tensors"]]
    assert values == sorted(values)  # most harmful first
    for t in study["tensors"]:
        assert t["only_float_db"] >= study["all_quantized_emulated_db"] - 3
        assert t["only_quantized_db"] >= study["all_quantized_emulated_db"] - 3
    chart = Path(report.charts[0])
    assert chart.name == "mixed.sensitivity.png" and chart.parent == out.parent
    with Image.open(chart) as image:
        assert image.size[0] >= 800 and image.size[1] >= 200
    saved = json.loads(out.with_suffix(".quant.json").read_text())
    assert saved["sensitivity"]["tensors"][0]["tensor"] == study["tensors"][0]["tensor"]


def test_sensitivity_is_stable_and_artifacts_identical(studied):
    (out_a, a), (out_b, b) = studied
    assert [t["tensor"] for t in a.sensitivity["tensors"]] == \
        [t["tensor"] for t in b.sensitivity["tensors"]]
    assert [t["only_float_db"] for t in a.sensitivity["tensors"]] == \
        [t["only_float_db"] for t in b.sensitivity["tensors"]]
    assert out_a.read_bytes() == out_b.read_bytes()
    assert Path(a.charts[0]).read_bytes() == Path(b.charts[0]).read_bytes()
    # --sensitivity alone changes nothing in the artifact: default mixed, int8 backbone
    assert a.counts["backbone_float_compute_nodes"] == 0
    assert a.search is None


def test_min_psnr_search_honours_the_target(studied, tiny_export, calib_dir, tmp_path):
    _, plain = studied[0]
    default_db = plain.sensitivity["all_quantized_emulated_db"]
    target = round(default_db + 2.0, 1)
    out = tmp_path / "searched.onnx"
    report = quantize_model(_config(tiny_export[0], out, calib_dir, tmp_path / "cache",
                                    min_psnr=target))
    search = report.search
    assert search["reached"], search
    assert search["chosen_psnr_db"] >= target
    assert search["default_psnr_db"] < target
    assert all(p["median_ms"] > 0 for p in search["points"])
    chosen = [p for p in search["points"] if p["choice"]["label"] == search["chosen"]["label"]]
    assert chosen and chosen[0]["meets_target"]
    # No configuration with fewer 16-bit tensors (on the same base) met the target.
    def promoted(choice):
        return len(choice["a16"]) + len(choice["w16"]) + len(choice["head_float"])

    n16 = promoted(search["chosen"])
    for p in search["points"]:
        if promoted(p["choice"]) < n16 and \
                p["choice"]["ranges"] == search["chosen"]["ranges"] and \
                p["choice"]["bias_correction"] == search["chosen"]["bias_correction"]:
            assert not p["meets_target"]
    # The written artifact measures what the search says, on the same image.
    assert _artifact_psnr(tiny_export[0], out, calib_dir) == pytest.approx(
        search["chosen_psnr_db"], abs=0.05)
    assert Path(report.charts[1]).name == "searched.tradeoff.png"
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["itm_onnx.mixed_search"])["target_db"] == target


def test_unreachable_target_exits_1_with_frontier(tiny_export, calib_dir, tmp_path, runner):
    out = tmp_path / "never.onnx"
    result = runner.invoke(main, [
        "quantize", "--mixed", "--model", str(tiny_export[0]), "-o", str(out),
        "--calibration", str(calib_dir), "--min-images", str(MIN_IMAGES),
        "--cache-dir", str(tmp_path / "cache"), "--study-images", "1", "--error-images", "0",
        "--min-psnr", "150", "--json"])
    assert result.exit_code == 1, result.output
    assert "not reached" in result.stderr
    saved = json.loads(out.with_suffix(".quant.json").read_text())
    assert not saved["search"]["reached"] and saved["search"]["bound_by"]
    assert len(saved["search"]["points"]) >= 4


def test_study_options_need_the_mixed_scheme(tiny_export, tmp_path, runner):
    result = runner.invoke(main, ["quantize", "--full-int8", "--model", str(tiny_export[0]),
                                  "-o", str(tmp_path / "x.onnx"), "--min-psnr", "40"])
    assert result.exit_code == 2
    assert "--mixed" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_switchable_model_reproduces_both_ends(studied, tiny_export):
    """Every unit on gives the fake-quant QDQ model exactly."""
    out, _ = studied[0]
    qdq = onnx.load(str(out))
    float_model = onnx.load(str(tiny_export[0]))
    switchable = build_switchable(qdq, float_model)
    assert len(switchable.units) > 20
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    name = float_model.graph.input[0].name
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(switchable.model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    every = set(range(len(switchable.units)))
    quantized = ort.InferenceSession(out.read_bytes(), options,
                                     providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    on = session.run(None, {name: x, **switchable.feeds(every)})[0]
    np.testing.assert_allclose(on, quantized, atol=1e-5)
    # Without the rewritten float model (the test has only the export), the weights the
    # rewrites created have no float original: they stay quantized, and are listed.
    assert all(name.endswith("_quantized") for name in switchable.fixed)


def test_mse_range_clips_outliers_and_keeps_zero():
    rng = np.random.default_rng(0)
    values = rng.exponential(1.0, 200_000).astype(np.float32)
    lo, hi = mse_range(values)
    assert lo == 0.0 and 3.0 < hi < 0.9 * values.max()  # the sparse tail is clipped
    # A lone far outlier is kept: its squared error outweighs the finer steps.
    assert mse_range(np.concatenate([values[:1000], [400.0]]).astype(np.float32))[1] > 300
    lo, hi = mse_range(rng.normal(0, 1, 50_000).astype(np.float32))
    assert lo < 0 < hi and abs(lo + hi) < 0.6 * hi
    assert psnr_db(np.zeros(4)) == 999.0


def _artifact_psnr(fp32: Path, quantized: Path, calib: Path) -> float:
    images = load_calibration_images(calib, CalibrationSettings(min_images=MIN_IMAGES))
    x = fit_to_shape(images.rgb[0], 64, 64)[0]
    name = onnx.load(str(fp32)).graph.input[0].name
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {name: x})
    got = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"]).run(
        None, {name: x})
    return psnr_db(np.abs(codes10(ref[0]) - codes10(got[0])).ravel())
