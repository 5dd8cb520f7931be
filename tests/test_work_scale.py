"""MQNet's working scale: the network on the pooled photo, its residual applied at full size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from itm_onnx import create_model, onnx_meta
from itm_onnx.cli import main
from itm_onnx.errors import ItmOnnxError
from itm_onnx.pipeline import PipelineConfig, export_stage
from itm_onnx.quantize import CalibrationSettings, QuantizeConfig, quantize_model

from .calibration_images import write_structured_images
from .conftest import tiny_export_args

SHIPPED = "models/mqnet.safetensors"


def _photo_with_a_lamp(size: int) -> torch.Tensor:
    """Mid tones below the highlight gate, and a saturated disc with a soft halo."""
    yy, xx = np.mgrid[:size, :size] / size
    radius = np.hypot(yy - 0.4, xx - 0.6)
    base = 0.25 + 0.3 * xx
    image = np.clip(base + np.exp(-(radius / 0.12) ** 2), 0, 1)
    image = np.stack([image, image * 0.97, image * 0.9])
    return torch.from_numpy(np.round(image * 255) / 255).float()[None]


def test_work_scale_keeps_the_weights_and_the_identity_below_the_gate(one_torch_thread):
    full = create_model("mqnet", checkpoint=SHIPPED)
    pooled = create_model("mqnet", checkpoint=SHIPPED, work_scale=4)
    assert (full.required_multiple, pooled.required_multiple) == (32, 128)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(),
                                                  pooled.state_dict().values(), strict=True))
    x = _photo_with_a_lamp(256)
    with torch.no_grad():
        a, b = full(x), pooled(x)
    assert b.shape == x.shape
    closed = x < pooled.config.highlight_gate  # the gate: exactly the identity there
    assert torch.equal(a[closed], b[closed])
    assert not torch.equal(a, b)  # and the network's own answer above it
    floor = pooled.output.clip_floor
    assert bool((b[x >= 254 / 255] >= floor).all())  # no dark holes at any scale


def test_work_scale_must_be_one_of_the_powers_of_two():
    with pytest.raises(ItmOnnxError, match="work_scale must be one of"):
        create_model("mqnet", work_scale=3)
    with pytest.raises(ItmOnnxError, match="unknown option"):
        create_model("gated-unet-c12", work_scale=2)


def test_export_and_quantize_at_a_work_scale(runner, tmp_path):
    out = tmp_path / "s2.onnx"
    bad = runner.invoke(main, tiny_export_args(tmp_path / "bad.onnx", "--work-scale", "4"))
    assert bad.exit_code == 2 and "multiple of 128" in bad.output
    assert not (tmp_path / "bad.onnx").exists()
    result = runner.invoke(main, [*tiny_export_args(out, "--work-scale", "2", "--json")])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    meta = onnx_meta.read_model_metadata(model)
    assert meta["required_multiple"] == "64" and json.loads(meta["config"])["work_scale"] == 2
    pools = [n for n in model.graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 1 and onnx_meta.node_part(pools[0]) == onnx_meta.HEAD
    assert pools[0].input[0] == model.graph.input[0].name  # pooled in float, then quantized

    calib = tmp_path / "calib"
    calib.mkdir()
    write_structured_images(calib, 4, 64, 96, seed=5)
    report = quantize_model(QuantizeConfig(
        model=out, output=tmp_path / "s2-mixed.onnx", calibration=calib,
        cache_dir=tmp_path / "cache", calibration_settings=CalibrationSettings(min_images=4),
        error_images=1))
    assert report.counts["backbone_float_compute_nodes"] == 0
    assert report.fidelity["psnr_10bit_db"] > 40


def test_pipeline_exports_at_the_work_scale(tmp_path):
    config = PipelineConfig(out_dir=tmp_path, random_init=True, height=64, width=128,
                            work_scale=2)
    report, _, qat = export_stage(config, tmp_path, "mqnet-64x128-s2")
    meta = onnx_meta.read_model_metadata(onnx.load(report.artifact))
    assert not qat and meta["required_multiple"] == "64"
