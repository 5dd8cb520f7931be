"""The gated network end to end: train (float, then --qat), export, quantize, validate,
bench, mobile-check and run, at small size through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from itm_onnx import create_model, onnx_meta
from itm_onnx.cli import main
from itm_onnx.models.gated import GatedUNet
from itm_onnx.train import qat

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 64


def test_structure_as_published():
    model = create_model("gated-unet-c12")
    assert isinstance(model, GatedUNet) and model.config.width == 12
    assert sum(p.numel() for p in model.parameters()) == 129_891
    x = torch.rand(2, 3, 48, 40)  # any multiple of 8
    gated, skip = model.backbone.down1(x)
    assert gated.shape == (2, 12, 24, 20) and skip.shape == (2, 24, 24, 20)
    with torch.no_grad():
        y = model.eval()(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1


def test_qat_structure_keeps_head_and_concats_float():
    qat_model = qat.prepare_qat(create_model("gated-unet-c12"))
    names = [name for name, _ in qat.activation_quantizers(qat_model)]
    assert names and all(name.startswith("backbone.") for name in names)
    assert type(qat_model.head) is torch.nn.Conv2d  # float weights and activations
    convs = [m for m in qat_model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(isinstance(m, qat.FakeQuantConv2d) for m in convs)
    assert float(qat_model.backbone.input_quant.scale) == 2.0 ** -8


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, runner):
    """A float run, then a QAT fine-tune of it; both two steps at 32x32."""
    folder = tmp_path_factory.mktemp("gated")
    common = ["--model", "gated-unet-c12", "--crop", "32", "--batch-size", "2",
              "--val-every", "2", "--val-images", "2", "--val-size", "32", "--threads", "1"]
    _ok(runner.invoke(main, ["train", *common, "--steps", "2", "--out-dir", str(folder / "f"),
                             "-o", str(folder / "float.safetensors")]))
    _ok(runner.invoke(main, ["train", *common, "--steps", "3", "--qat",
                             "--init", str(folder / "float.safetensors"),
                             "--qat-observer-steps", "1", "--select", "last",
                             "--out-dir", str(folder / "q"),
                             "-o", str(folder / "qat.safetensors")]))
    return folder


@pytest.fixture(scope="module")
def qat_export(trained, runner) -> tuple[Path, dict]:
    out = trained / "qat.onnx"
    result = _ok(runner.invoke(main, [
        "export", "--model", "gated-unet-c12", "--checkpoint", str(trained / "qat.safetensors"),
        "--height", str(SIZE), "--width", str(SIZE), "--output", str(out), "--json"]))
    return out, json.loads(result.stdout)


def test_qat_export_matches_the_fake_quant_model_and_needs_no_calibration(qat_export):
    path, report = qat_export
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_error"] <= 1 / 1023
    proto = onnx.load(str(path))
    assert onnx_meta.is_quantized(proto)
    heads = [n for n in proto.graph.node if onnx_meta.node_part(n) == onnx_meta.HEAD]
    assert not any(n.op_type == "QuantizeLinear" for n in heads)  # float head


def test_quantize_passes_a_qat_export_through(qat_export, runner, tmp_path):
    path, _ = qat_export
    out = tmp_path / "again.onnx"
    _ok(runner.invoke(main, ["quantize", "--mixed", "--model", str(path), "--output", str(out)]))
    assert out.read_bytes() == path.read_bytes()  # no double quantization


def test_validate_bench_mobile_check_and_run_work_unchanged(trained, qat_export, runner,
                                                            tmp_path):
    path, _ = qat_export
    result = _ok(runner.invoke(main, [
        "validate", "--checkpoint", str(trained / "qat.safetensors"), "--quantized", str(path),
        "--count", "2", "--no-report", "--max-lsb", "1", "--json"]))
    assert json.loads(result.stdout)
    result = _ok(runner.invoke(main, ["bench", "--model", str(path), "--runs", "1",
                                      "--warmup", "0", "--no-memory", "--no-chart", "--json"]))
    assert json.loads(result.stdout)
    result = runner.invoke(main, ["mobile-check", "--model", str(path), "--no-ort", "--json"])
    assert result.exit_code in (0, 1), result.output  # 1: NNAPI needs more than one partition
    assert "nnapi" in result.stdout.lower()
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), np.uint8)).save(image)
    _ok(runner.invoke(main, ["run", "-m", str(path), str(image), "-o", str(tmp_path / "out")]))
    assert list((tmp_path / "out").glob("*.png"))


def test_pipeline_on_a_qat_checkpoint_validates_and_benches_the_qdq_export(trained, runner,
                                                                          tmp_path):
    result = _ok(runner.invoke(main, [
        "pipeline", "--model", "gated-unet-c12", "--checkpoint", str(trained / "qat.safetensors"),
        "--height", str(SIZE), "--width", str(SIZE), "--runs", "1", "--out-dir", str(tmp_path),
        "--json"]))
    reports = json.loads(result.stdout)
    assert set(reports) == {"export", "validate", "bench"}  # nothing to calibrate
    assert reports["export"]["artifact"].endswith("-qat.onnx")
    assert reports["export"]["parity"]["max_abs_error"] <= 1 / 1023
    assert [row["label"] for row in reports["bench"]["rows"]] == ["qat int8"]
