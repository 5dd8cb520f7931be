"""Metrics sanity and end-to-end evaluation on a tiny set (PyTorch and ONNX paths)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from itm_onnx import metrics
from itm_onnx.cli import main
from itm_onnx.data.datasets import SyntheticPairs
from itm_onnx.evaluate import FIGURES, evaluate
from itm_onnx.models import MQNetConfig, create_model
from itm_onnx.onnx_meta import write_model_metadata

rng = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_psnr_of_identical_images_is_infinite_and_known_values_hold():
    image = rng.random((16, 16, 3))
    assert metrics.psnr(image, image) == math.inf
    assert metrics.psnr(np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.1)) == pytest.approx(20.0)
    assert metrics.psnr(np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.5), peak=1.0) == \
        pytest.approx(10 * math.log10(4))


def test_linear_psnr_ignores_exposure_and_mulaw_ignores_scale():
    hdr = rng.random((16, 16, 3)) * 100
    assert metrics.psnr_linear(hdr * 7.5, hdr) > 200  # equal up to float rounding
    assert metrics.psnr_mulaw(hdr * 0.01, hdr) > 200
    np.testing.assert_allclose(metrics.mulaw(np.array([[[0.0, 1.0, 2.0]]])).ravel(),
                               [0.0, math.log1p(2500) / math.log1p(5000), 1.0])


def test_scale_align_is_the_least_squares_scale():
    target = rng.random((8, 8, 3))
    prediction = target * 0.25 + rng.normal(0, 0.01, target.shape)
    aligned = metrics.scale_align(prediction, target)
    scales = np.linspace(3.5, 4.5, 101)
    errors = [np.sum((s * prediction - target) ** 2) for s in scales]
    assert np.sum((aligned - target) ** 2) <= min(errors) + 1e-12


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    image = rng.random((32, 32, 3))
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert 0 < metrics.ssim(image, noisy) < 0.9
    with pytest.raises(ValueError):
        metrics.ssim(image[:8, :8], image[:8, :8])


def test_chroma_error_sees_colour_shifts_but_not_grey_changes():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.01, 1.0, (16, 16, 3))
    assert metrics.chroma_error(target, target) == 0.0
    grey = np.repeat(target[..., :1], 3, axis=-1)
    assert metrics.chroma_error(grey * 0.5, grey) < 1e-6  # lightness only: no chroma
    tinted = target * np.array([1.3, 1.0, 0.8])
    assert metrics.chroma_error(tinted, target) > 2.0
    white = metrics.srgb_to_lab(np.ones((1, 1, 3)))[0, 0]
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=0.05)


def test_baselines_expand_ldr_to_finite_radiance():
    ldr = rng.random((16, 16, 3))
    for baseline in metrics.BASELINES.values():
        hdr = baseline(ldr)
        assert hdr.shape == ldr.shape and np.isfinite(hdr).all() and hdr.min() >= 0
    np.testing.assert_allclose(metrics.identity_itm(ldr), ldr**2.2)


class EchoModel(torch.nn.Module):
    """Returns its input: the LDR image read as mu-law encoded HDR."""

    required_multiple = 32

    def __init__(self) -> None:
        super().__init__()
        self.config = MQNetConfig(output_encoding="mulaw", output_transform="bounded")
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


def echo_onnx(path) -> None:
    """The same model as ONNX (an Identity node), with itm-onnx metadata."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ldr"], ["hdr"])], "echo",
        [helper.make_tensor_value_info("ldr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("hdr", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    write_model_metadata(model, {"output_encoding": "mulaw", "model": "echo",
                                 "required_multiple": 32})
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def tiny_set():
    return SyntheticPairs(length=3, size=64, seed=0, split="test", encoding="mulaw")


def test_evaluate_returns_every_figure_for_model_and_baselines(tiny_set):
    torch.manual_seed(0)
    report = evaluate(create_model("mqnet"), tiny_set).to_dict()
    assert report["images"] == 3 and report["size"] == 64
    assert set(report["figures"]) == {"model", "identity", "akyuz"}
    for figures in report["figures"].values():
        assert set(figures) == set(FIGURES)
        assert all(np.isfinite(v) for v in figures.values())
    assert set(report["gains_db"]) == {"psnr_mulaw_vs_identity", "psnr_mulaw_vs_akyuz",
                                       "psnr_linear_vs_identity", "psnr_linear_vs_akyuz"}
    assert len(report["per_image"]) == 3


def test_onnx_and_pytorch_paths_give_the_same_numbers(tiny_set, tmp_path):
    echo_onnx(tmp_path / "echo.onnx")
    from_torch = evaluate(EchoModel(), tiny_set).figures
    from_onnx = evaluate(tmp_path / "echo.onnx", tiny_set, grid=tmp_path / "g.png").figures
    for name in from_torch:
        for figure in FIGURES:
            assert from_onnx[name][figure] == pytest.approx(from_torch[name][figure], abs=1e-6)
    assert (tmp_path / "g.png").stat().st_size > 0


def test_cli_json_and_grid(tmp_path):
    echo_onnx(tmp_path / "echo.onnx")
    result = CliRunner().invoke(main, [
        "evaluate", "--model", str(tmp_path / "echo.onnx"), "--images", "2", "--size", "64",
        "--grid", str(tmp_path / "grid.png"), "--grid-images", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 2 and report["model"]["kind"] == "onnx"
    assert report["grid"] == str(tmp_path / "grid.png")


def test_cli_rejects_a_checkpoint_with_an_onnx_model(tmp_path):
    echo_onnx(tmp_path / "echo.onnx")
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "echo.onnx"),
                                       "--checkpoint", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2
    assert "--checkpoint goes with a registered model" in result.output


def test_cli_missing_checkpoint_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "no.safetensors"),
                                       "--images", "1", "--size", "64"])
    assert result.exit_code == 1
    assert "checkpoint not found" in result.output
    assert "Traceback" not in result.output
