"""Real light: the camera model, perspective views, the clip-relative target, the "no dark
holes" guarantee, the real-light metrics, and `evaluate`/`train` on a folder of HDR files.

The HDR files are made here (a procedural panorama with a sun, and a photo-shaped image),
never read from the project's shared data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from itm_onnx import create_model
from itm_onnx.cli import main
from itm_onnx.data.camera import CLEAN_CAMERA, CameraModel, display_curve, shoot
from itm_onnx.data.encoding import get_encoding
from itm_onnx.data.hdr_io import write_hdr
from itm_onnx.data.real import RealViews, RealViewSet
from itm_onnx.data.views import ViewSpec, is_panorama, perspective_view, random_sample
from itm_onnx.metrics import align_on_well_exposed, pu21, pu21_psnr, real_light_figures


def _panorama(height: int = 64, seed: int = 0) -> np.ndarray:
    """An equirectangular map: blue sky, textured ground, a sun at yaw 0, pitch 20."""
    rng = np.random.default_rng(seed)
    width = 2 * height
    lat = (0.5 - (np.arange(height) + 0.5) / height) * 180.0
    lon = ((np.arange(width) + 0.5) / width - 0.5) * 360.0
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    sky = np.broadcast_to(np.float32([0.3, 0.5, 1.0]), (height, width, 3))
    ground = rng.uniform(0.02, 0.2, (height, width, 3))
    image = np.where((lat_grid > 0)[..., None], sky, ground)
    sun = (np.hypot(lon_grid, lat_grid - 20.0) < 8.0)
    image[sun] = 500.0
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def hdr_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hdr")
    write_hdr(folder / "pano_a.hdr", _panorama(64, 0))
    write_hdr(folder / "pano_b.exr", _panorama(64, 1))
    photo = np.random.default_rng(2).uniform(0.01, 1.0, (48, 80, 3)).astype(np.float32)
    photo[10:20, 30:40] = 50.0  # a lamp
    write_hdr(folder / "photo.exr", photo)
    return folder


# --- camera model and views -----------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.15])
def test_camera_clips_the_requested_share_at_linear_one(fraction):
    hdr = np.random.default_rng(0).lognormal(0, 1.5, (64, 64, 3)).astype(np.float32)
    shot = shoot(hdr, np.random.default_rng(1), CLEAN_CAMERA, clip_fraction=fraction,
                 curve="srgb")
    assert shot.clip_fraction == pytest.approx(fraction, abs=0.005)
    clipped = shot.linear.max(axis=-1) >= 1.0
    # Where the radiance reached the clip level, the 8-bit input is at 255.
    assert (shot.ldr.max(axis=-1)[clipped] == 255).all()
    assert (shot.ldr[shot.linear < 0.5] < 255).all()


@pytest.mark.parametrize("name", ["gamma", "srgb", "filmic", "reinhard", "log", "gamma1.8"])
def test_display_curves_map_the_clip_level_to_white(name):
    curve, _ = display_curve(name, np.random.default_rng(3))
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    y = curve(x)
    assert y[0] == pytest.approx(0.0, abs=1e-6) and y[-1] == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(y) >= -1e-7).all()


def test_flat_regions_do_not_clip_all_at_once():
    hdr = _panorama()  # half of it is a flat sky at exactly 1.0
    shot = shoot(hdr, np.random.default_rng(0), CLEAN_CAMERA, clip_fraction=0.1, curve="srgb")
    assert 0 < shot.clip_fraction <= 0.1


def test_random_camera_varies_exposure_and_curve():
    hdr = np.random.default_rng(0).lognormal(0, 1.5, (64, 64, 3)).astype(np.float32)
    shots = [shoot(hdr, np.random.default_rng(i), CameraModel()) for i in range(12)]
    assert len({s.curve.split("(")[0][:5] for s in shots}) >= 3
    assert max(s.clip_fraction for s in shots) - min(s.clip_fraction for s in shots) > 0.02


def test_perspective_view_looks_where_it_is_pointed():
    pano = _panorama(128)
    assert is_panorama(pano.shape) and not is_panorama((48, 80, 3))
    at_sun = perspective_view(pano, ViewSpec(yaw=0.0, pitch=20.0, fov=40.0), 32)
    away = perspective_view(pano, ViewSpec(yaw=180.0, pitch=20.0, fov=40.0), 32)
    assert at_sun[14:18, 14:18].mean() > 100.0  # the sun fills the centre
    assert away.max() < 2.0
    down = perspective_view(pano, ViewSpec(yaw=90.0, pitch=-45.0, fov=60.0), 32)
    assert down[24:, :].mean() < 0.25  # ground at the bottom


def test_real_views_are_seeded_and_in_range(hdr_folder):
    data = RealViews(hdr_folder, size=32, seed=5, synthetic_mix=0.5)
    assert len(data) == 3
    ldr, target = data[1]
    again = RealViews(hdr_folder, size=32, seed=5, synthetic_mix=0.5)[1]
    assert torch.equal(ldr, again[0]) and torch.equal(target, again[1])
    assert ldr.shape == target.shape == (3, 32, 32)
    assert 0.0 <= float(target.min()) and float(target.max()) <= 1.0


def test_view_scale_crops_show_light_at_a_finer_pixel_scale():
    """A crop of a view rendered 4 x larger shows the sun over more pixels than the whole
    view does at crop size: what --view-scale trains on."""
    pano = _panorama(128)

    def sun_pixels(scale: float) -> list[int]:
        rng = np.random.default_rng(0)
        counts = []
        for _ in range(40):
            sample = random_sample(pano, 32, rng, scale)
            assert sample.shape == (32, 32, 3) and sample.min() >= 0.0
            counts.append(int((sample.max(axis=-1) > 100.0).sum()))
        return [c for c in counts if c > 0]

    whole, finer = sun_pixels(1.0), sun_pixels(4.0)
    assert whole and finer
    assert np.median(finer) > 2 * np.median(whole)  # 16 x the area, cut by the crop
    with pytest.raises(ValueError, match="scale"):
        random_sample(pano, 32, np.random.default_rng(0), 0.5)


def test_view_set_is_fixed(hdr_folder):
    a = RealViewSet.from_folder(hdr_folder, size=32, views=2).samples()
    b = RealViewSet.from_folder(hdr_folder, size=32, views=2).samples()
    assert len(a) == 6 and [s.name for s in a] == [s.name for s in b]
    assert all(np.array_equal(x.ldr, y.ldr) for x, y in zip(a, b, strict=True))
    assert {s.panorama for s in a} == {True, False}


# --- the clip-relative output and its guarantee ----------------------------------------


def test_clip_relative_encoding_keeps_ten_bit_steps_fine():
    enc = get_encoding("mulaw-clip")
    codes = np.arange(1024, dtype=np.float32) / 1023
    linear = enc.decode(codes).astype(np.float64)
    relative_step = np.diff(linear) / linear[1:]
    in_range = (linear[1:] >= 1 / 28) & (linear[1:] <= 32)
    assert relative_step[in_range].max() < 0.01
    assert enc.decode(np.float32(1.0)) == pytest.approx(32.0, rel=1e-5)
    np.testing.assert_allclose(enc.decode(enc.encode(np.float32([0.01, 1.0, 7.5]))),
                               [0.01, 1.0, 7.5], rtol=1e-5)


def test_untrained_hdr_output_is_the_identity_baseline():
    model = create_model("mqnet").eval()
    with torch.no_grad():
        model.head.conv3.weight.zero_()
        ldr = torch.rand(1, 3, 64, 64) * 0.9  # nothing near clipping
        y = model(ldr)
    identity = get_encoding("mulaw-clip").encode(ldr**2.2)
    assert float((y - identity).abs().max()) < 1e-6


@pytest.mark.parametrize("push", [-50.0, 0.0, 50.0])
def test_saturated_inputs_never_come_out_darker_than_the_clip_level(push):
    torch.manual_seed(0)
    model = create_model("mqnet").eval()
    with torch.no_grad():
        model.head.conv3.weight.fill_(push)  # drive the residual to either extreme
        ldr = torch.rand(2, 3, 64, 64)
        ldr[:, :, 8:24, 8:40] = 1.0  # a blown-out window
        ldr[:, 0, 40:50, 40:50] = 254 / 255  # one clipped channel
        y = model(ldr)
    codes = torch.round(y * 1023) / 1023  # what a 10-bit file stores
    linear = get_encoding("mulaw-clip").decode(codes)
    assert float(linear[:, :, 8:24, 8:40].min()) >= 1.0
    assert float(linear[:, 0, 40:50, 40:50].min()) >= 1.0


def test_deployed_dead_zone_is_bit_for_bit_the_shrunk_residual():
    # Eval mode takes relu(shrunk) and |shrunk| from the two Relus of the dead zone (fewer
    # full-resolution ops); the output must be exactly the formula it replaces.
    from itm_onnx.models.mqnet import OutputTransform

    torch.manual_seed(0)
    transform = OutputTransform("hdr", deadzone=0.04).eval()
    image, t = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64) * 2 - 1
    image[:, :, :8] = 1.0
    d = transform.deadzone
    shrunk = torch.relu(t - d) - torch.relu(t * -1.0 - d)
    relu_s = torch.relu(shrunk)
    expected = OutputTransform("hdr", deadzone=0.0).eval()
    base_only = expected(image, torch.zeros_like(t))  # the floored identity prediction
    floor = expected(image, torch.full_like(t, -1.0))  # t = -1 leaves just the floor
    out = base_only - base_only * (2.0 * relu_s - shrunk) + relu_s
    out = out + torch.relu(floor - out)
    assert torch.equal(transform(image, t), out)


@pytest.mark.parametrize("push", [-50.0, 50.0])
def test_highlight_gate_keeps_every_tone_below_it_exactly_the_identity(push):
    torch.manual_seed(0)
    model = create_model("mqnet", highlight_gate=0.95).eval()
    with torch.no_grad():
        model.head.conv3.weight.fill_(push)
        ldr = torch.rand(1, 3, 64, 64)
        ldr[:, :, 8:24, 8:40] = 1.0
        y = model(ldr)
    identity = get_encoding("mulaw-clip").encode(ldr**2.2)
    below = ldr < 0.95
    assert float((y - identity)[below].abs().max()) < 1e-6
    # above it the residual acts: a push of +50 lifts the blown-out window towards 32 x
    window = get_encoding("mulaw-clip").decode(y[:, :, 8:24, 8:40])
    assert float(window.min()) > (10.0 if push > 0 else 0.99)


def test_pu21_psnr_loss_scores_as_the_benchmark_does():
    from itm_onnx.evaluate_real import baseline_predictions
    from itm_onnx.train.losses import PU21PSNRLoss

    rng = np.random.default_rng(0)
    hdr = _panorama(64)[:, :64] * rng.uniform(0.5, 2.0)
    shot = shoot(hdr, rng, CLEAN_CAMERA, clip_fraction=0.05, curve="gamma1.8")
    enc = get_encoding("mulaw-clip")
    identity = baseline_predictions(shot.ldr)["identity"]
    expected = pu21_psnr(align_on_well_exposed(identity, shot.linear, shot.ldr)[0], shot.linear)
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(  # noqa: E731
        a.transpose(2, 0, 1)[None], np.float32))
    prediction = to_tensor(enc.encode(identity.astype(np.float32))).requires_grad_()
    loss, parts = PU21PSNRLoss()(prediction, to_tensor(enc.encode(shot.linear)),
                                 to_tensor(shot.ldr / 255.0))
    assert parts["pu21_psnr"] == pytest.approx(min(expected, 70.0), abs=0.05)
    loss.backward()  # and it trains: a gradient reaches the prediction
    assert float(prediction.grad.abs().sum()) > 0



def test_pu21_psnr_mse_adds_the_pooled_term_and_shifts_gradient_to_the_far_off_image():
    from itm_onnx.train.losses import PU21PSNRLoss

    rng = np.random.default_rng(1)
    enc = get_encoding("mulaw-clip")
    ldr = torch.from_numpy(rng.uniform(0.2, 0.8, (2, 3, 32, 32)).astype(np.float32))
    ldr[:, :, 8:16, 8:16] = 1.0  # a clipped blob in each image
    target = torch.from_numpy(enc.encode(np.float32(ldr.numpy() ** 2.2)))
    target[:, :, 8:16, 8:16] = float(enc.encode(np.float32(20.0)))  # a lamp behind it
    prediction = target.clone()
    prediction[0, :, 8:16, 8:16] = float(enc.encode(np.float32(1.0)))  # far off: clipped
    prediction[1, :, 8:16, 8:16] = float(enc.encode(np.float32(18.0)))  # nearly right
    grads = {}
    for weight in (0.0, 0.5):
        x = prediction.clone().requires_grad_()
        total, _ = PU21PSNRLoss(pooled_weight=weight)(x, target, ldr)
        psnr_only, _ = PU21PSNRLoss()(x.detach(), target, ldr)
        pooled, _ = PU21PSNRLoss(pooled=True)(x.detach(), target, ldr)
        expected = float(psnr_only) + weight * float(pooled)
        assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
        total.backward()
        grads[weight] = [float(x.grad[i].abs().sum()) for i in range(2)]
    far_share = [g[0] / (g[0] + g[1]) for g in (grads[0.0], grads[0.5])]
    assert far_share[1] > far_share[0]  # the far-off image gets more of the gradient

# --- metrics ------------------------------------------------------------------------------


def test_pu21_is_monotone_and_clamped():
    y = pu21(np.array([0.001, 0.005, 1.0, 100.0, 10000.0, 1e6]))
    assert y[0] == y[1] and y[-1] == y[-2]
    assert (np.diff(y[1:-1]) > 0).all()


def test_figures_ignore_a_global_exposure_error():
    rng = np.random.default_rng(4)
    truth = rng.lognormal(-1.5, 1.0, (32, 32, 3))
    ldr = np.round(np.clip(truth, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
    prediction = truth * 1.3 + 0.001
    a = real_light_figures(prediction, truth, ldr)
    b = real_light_figures(prediction * 9.0, truth, ldr)
    assert a["pu21_psnr"] == pytest.approx(b["pu21_psnr"], abs=1e-6)
    aligned, scale = align_on_well_exposed(prediction, truth, ldr)
    assert scale == pytest.approx(1 / 1.3, rel=0.01)
    assert math.isinf(pu21_psnr(truth, truth))


# --- commands -------------------------------------------------------------------------------


def test_evaluate_real_scores_model_and_baselines(hdr_folder, tmp_path):
    grid = tmp_path / "grid.png"
    result = CliRunner().invoke(main, [
        "evaluate", "--model", "mqnet", "--checkpoint",
        str(_random_checkpoint(tmp_path)), "--data", "real", "--hdr-dir", str(hdr_folder),
        "--views", "2", "--size", "64", "--grid", str(grid), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["views"] == 6
    assert set(report["figures"]) == {"model", "identity", "akyuz"}
    assert report["figures"]["model"]["clip_floor_share"] == 1.0
    assert "pu21_gain_db" in report["versus_identity"]
    assert grid.stat().st_size > 0


def test_evaluate_real_without_folder_is_a_usage_error():
    result = CliRunner().invoke(main, ["evaluate", "--data", "real"])
    assert result.exit_code == 2 and "--hdr-dir" in result.output


@pytest.mark.parametrize("extra", [[], ["--loss", "pu21-psnr", "--model-option",
                                           "highlight_gate=0.95"]])
def test_train_on_real_views_and_select_by_pu21(hdr_folder, tmp_path, extra):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--data", "real", "--hdr-dir", str(hdr_folder), "--val-dir", str(hdr_folder),
        "--val-views", "1", "--val-size", "64", "--crop", "64", "--batch-size", "2",
        "--steps", "2", "--val-every", "2", "--threads", "1", "--synthetic-mix", "0.5",
        "--out-dir", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the progress lines go to stderr
    figures = report["info"]["figures"]
    assert figures["selected_by"] == "pu21_psnr" and figures["val"]["clip_floor_share"] == 1.0
    assert report["info"]["encoding"] == "mulaw-clip"
    if extra:
        from itm_onnx.checkpoint import read_checkpoint_metadata

        config = json.loads(read_checkpoint_metadata(report["final_checkpoint"])["config"])
        assert config["highlight_gate"] == 0.95 and "PU21-PSNR" in report["info"]["loss"]


@pytest.mark.parametrize("option", [["--synthetic-mix", "1.5"], ["--val-views", "0"],
                                    ["--view-scale", "0.5"]])
def test_train_real_rejects_bad_options_in_one_line(hdr_folder, tmp_path, option):
    result = CliRunner().invoke(main, ["train", "--data", "real", "--hdr-dir", str(hdr_folder),
                                       "--out-dir", str(tmp_path / "run"), *option])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def _random_checkpoint(tmp_path):
    from itm_onnx.checkpoint import save_checkpoint

    path = tmp_path / "random.safetensors"
    torch.manual_seed(0)
    save_checkpoint(path, create_model("mqnet"), model_name="mqnet", info={"test": True})
    return path
