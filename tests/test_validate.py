"""`itm-onnx validate` and its maths: 10-bit figures, pooled totals, CI gates, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from itm_onnx.cli import main
from itm_onnx.data import CALIBRATION_SEED
from itm_onnx.validate import (
    VALIDATION_SEED,
    compare_codes,
    compare_outputs,
    heldout_images,
    pool,
    report_size,
)

from .conftest import TINY
from .test_cli import assert_one_line_error

RNG = np.random.default_rng(11)
FIDELITY_KEYS = {"pixels", "psnr_db", "mse", "max_abs", "mean_abs", "histogram", "within_1",
                 "within_4", "peak"}


@pytest.fixture(scope="module")
def quantized(tiny_export, tmp_path_factory) -> Path:
    """A QDQ model of the tiny export (ORT's quantize_static, a few random calibration
    images): a stand-in for `itm-onnx quantize --mixed` output."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"ldr": rng.random((1, 3, TINY, TINY), dtype=np.float32)}
                               for _ in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    path = tmp_path_factory.mktemp("qdq") / "tiny-qdq.onnx"
    quantize_static(str(tiny_export[0]), str(path), Reader(), quant_format=QuantFormat.QDQ)
    return path


# --- maths ------------------------------------------------------------------------------


def test_compare_codes_figures():
    reference = np.zeros((2, 4, 3), np.uint16)
    candidate = reference.copy()
    candidate[0, 1, 2] = 1  # pixel differences: 0, 1, 3, 5, 9, 20, 0, 0
    candidate[0, 2] = [3, 0, 2]
    candidate[0, 3, 0] = 5
    candidate[1, 0, 1] = 9
    candidate[1, 1] = [20, 20, 20]
    f = compare_codes(reference, candidate)
    assert f.pixels == 8 and f.max_abs == 20
    assert f.histogram == {"0": 3, "1": 1, "2-3": 1, "4-7": 1, "8-15": 1, ">=16": 1}
    assert f.within_1 == 4 / 8 and f.within_4 == 5 / 8
    diff_sq = np.array([1, 9, 4, 25, 81, 400, 400, 400], float)
    assert f.mse == pytest.approx(diff_sq.sum() / 24)
    assert f.psnr_db == pytest.approx(10 * math.log10(1023**2 / f.mse))
    assert f.mean_abs == pytest.approx((1 + 3 + 2 + 5 + 9 + 60) / 24)
    assert set(f.to_dict()) == FIDELITY_KEYS


def test_identical_outputs_have_infinite_psnr_and_null_in_json():
    y = RNG.random((5, 6, 3)).astype(np.float32)
    f = compare_outputs(y, y)
    assert math.isinf(f.psnr_db) and f.max_abs == 0 and f.within_1 == 1.0
    assert f.to_dict()["psnr_db"] is None


def test_compare_outputs_works_on_the_10_bit_codes():
    y = np.full((4, 4, 3), 0.25, np.float32)  # 255.75 codes: rounds to 256
    assert compare_outputs(y, y + 0.4 / 1023).max_abs == 0  # rounds to the same code
    assert compare_outputs(y, y + 1.0 / 1023).max_abs == 1
    with pytest.raises(ValueError, match="cannot compare"):
        compare_outputs(y, y[:2])


def test_pool_equals_one_comparison_of_all_pixels():
    a = [RNG.integers(0, 1024, (h, w, 3)) for h, w in ((3, 5), (7, 2))]
    b = [np.clip(x + RNG.integers(-6, 7, x.shape), 0, 1023) for x in a]
    pooled = pool([compare_codes(x, y) for x, y in zip(a, b, strict=True)])
    whole = compare_codes(np.concatenate([x.reshape(-1, 3) for x in a]),
                          np.concatenate([y.reshape(-1, 3) for y in b]))
    for key in ("pixels", "max_abs", "histogram"):
        assert getattr(pooled, key) == getattr(whole, key)
    for key in ("psnr_db", "mse", "mean_abs", "within_1", "within_4"):
        assert getattr(pooled, key) == pytest.approx(getattr(whole, key))


def test_heldout_images_are_reproducible_and_not_the_calibration_set():
    assert VALIDATION_SEED != CALIBRATION_SEED
    first = list(heldout_images(2, (32, 48)))
    again = list(heldout_images(2, (32, 48)))
    assert [name for name, _ in first] == [name for name, _ in again]
    for (_, a), (_, b) in zip(first, again, strict=True):
        assert a.shape == (32, 48, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


# --- the command ------------------------------------------------------------------------


def run_validate(runner, *args):
    return runner.invoke(main, ["validate", "--threads", "1", *map(str, args)])


def test_three_way_json_shape_and_report(runner, random_checkpoint, tiny_export, quantized,
                                         tmp_path):
    report = tmp_path / "report.png"
    result = run_validate(runner, "--checkpoint", random_checkpoint, "--fp32", tiny_export[0],
                          "--quantized", quantized, "--count", 2, "--report", report,
                          "--min-psnr", 5, "--max-lsb", 1023, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"models", "images", "pairs", "thresholds", "passed", "failures",
                         "report", "notices", "seconds"}
    assert data["passed"] is True and data["failures"] == []
    assert set(data["models"]) == {"pytorch", "fp32", "quantized"}
    assert data["images"]["count"] == 2 and data["images"]["size"] == [TINY, TINY]
    pairs = [(p["reference"], p["candidate"]) for p in data["pairs"]]
    assert pairs == [("pytorch", "fp32"), ("pytorch", "quantized"), ("fp32", "quantized")]
    for pair in data["pairs"]:
        assert set(pair["overall"]) == FIDELITY_KEYS
        assert list(pair["per_image"]) == data["images"]["names"]
        assert pair["overall"]["pixels"] == 2 * TINY * TINY
    torch_vs_onnx = data["pairs"][0]["overall"]
    assert torch_vs_onnx["max_abs"] <= 1  # the export's parity, seen on the 10-bit scale
    with Image.open(report) as im:
        assert im.size == report_size(rows=2, columns=1 + 3 + 3)


def test_thresholds_gate_the_exit_code(runner, tiny_export, quantized, tmp_path):
    common = ["--fp32", tiny_export[0], "--quantized", quantized, "--count", 1, "--no-report"]
    assert run_validate(runner, *common, "--min-psnr", 1, "--max-lsb", 1023).exit_code == 0
    result = run_validate(runner, *common, "--min-psnr", 200, "--json")
    assert_one_line_error(result, 1, "fp32 vs quantized: PSNR")
    assert "< --min-psnr 200 on heldout_000" in result.stderr
    assert json.loads(result.stdout)["passed"] is False  # figures still reach CI
    result = run_validate(runner, *common, "--max-lsb", 0)
    assert_one_line_error(result, 1, "fp32 vs quantized: max error")
    assert "FAILED" in result.stdout


def test_folder_of_images_of_any_size(runner, tiny_export, quantized, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(src / "odd.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 10)
    result = run_validate(runner, "--fp32", tiny_export[0], "--quantized", quantized,
                          "--images", src, "--report", tmp_path / "r.png", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"]["names"] == ["odd.png"]
    assert [s["path"] for s in data["images"]["skipped"]] == [str(src / "broken.jpg")]
    assert data["pairs"][0]["overall"]["pixels"] == 70 * 90
    with Image.open(tmp_path / "r.png") as im:
        assert im.size == report_size(rows=1, columns=4)


def test_needs_two_models(runner, tiny_export):
    result = run_validate(runner, "--fp32", tiny_export[0])
    assert_one_line_error(result, 2, "at least two of --checkpoint, --fp32, --quantized")
