"""The QATIE loss: its floor, its growth with noise, its terms, and where gradients flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from itm_onnx.errors import UsageError
from itm_onnx.train.losses import (
    LOSSES,
    ITMLoss,
    QATIELoss,
    QATIEWeights,
    bt601_luma,
    gaussian_taps,
    outlier_aware_l1,
    outlier_weight,
    psnr_loss,
    ssim,
)


def images(seed: int = 0, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def noisy(target: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(seed))
    return (target + sigma * noise).clamp(0.0, 1.0)


def test_perfect_prediction_is_the_minimum():
    target = images()
    total, parts = QATIELoss()(target, target)
    # PSNR = 20 log10(1 / sqrt(0 + 1e-8)) = 80 dB: (50 - 80) / 100 = -0.3, weighted 2.
    assert parts["psnr"] == pytest.approx(-0.3, abs=1e-6)
    assert parts["ssim"] == pytest.approx(0.0, abs=1e-6)
    assert parts["outlier"] == 0.0
    assert float(total) == pytest.approx(2 * -0.3, abs=1e-5)
    assert set(parts) == {"psnr", "ssim", "outlier"}


def test_loss_grows_with_noise():
    target = images()
    totals = [float(QATIELoss()(noisy(target, sigma), target)[0]) for sigma in (0.01, 0.05, 0.2)]
    assert -0.6 < totals[0] < totals[1] < totals[2]
    parts = [QATIELoss()(noisy(target, sigma), target)[1] for sigma in (0.01, 0.2)]
    for name in ("psnr", "ssim", "outlier"):
        assert parts[0][name] < parts[1][name], name


def test_weights_and_description():
    target, prediction = images(), noisy(images(), 0.1)
    total, parts = QATIELoss()(prediction, target)
    assert float(total) == pytest.approx(
        2 * parts["psnr"] + 100 * parts["ssim"] + parts["outlier"], rel=1e-5)
    halved, _ = QATIELoss(QATIEWeights(psnr=1.0, ssim=50.0, outlier=0.5))(prediction, target)
    assert float(halved) == pytest.approx(float(total) / 2, rel=1e-5)
    assert "2*" in QATIELoss().describe() and "100*(1 - SSIM" in QATIELoss().describe()


def test_psnr_term_uses_bt601_luma_per_image():
    pixel = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    expected = (65.481 + 128.553 * 0.5 + 24.966 * 0.25 + 16) / 255
    assert float(bt601_luma(pixel)) == pytest.approx(expected)
    target = torch.zeros(2, 3, 8, 8)
    prediction = target.clone()
    prediction[0] += 0.1  # grey error: luma error 0.1 * (65.481 + 128.553 + 24.966) / 255
    luma_error = 0.1 * 219.0 / 255
    psnr0 = 20 * torch.log10(1 / torch.sqrt(torch.tensor(luma_error**2 + 1e-8)))
    expected_loss = (50 - (float(psnr0) + 80.0) / 2) / 100  # image 1 is perfect: 80 dB
    assert float(psnr_loss(prediction, target)) == pytest.approx(expected_loss, rel=1e-5)
    # Colour errors that leave luma unchanged cost nothing in this term.
    shifted = target + torch.tensor([128.553, -65.481, 0.0]).view(1, 3, 1, 1) * 1e-4
    assert float(psnr_loss(shifted, target)) == pytest.approx(-0.3, abs=1e-4)


def test_ssim_is_the_11x11_gaussian_valid_window_per_channel():
    target, prediction = images(2, (1, 3, 40, 36)), noisy(images(2, (1, 3, 40, 36)), 0.1)
    taps = gaussian_taps(11, 1.5)
    window = (taps[:, None] * taps[None, :]).expand(3, 1, 11, 11)

    def blur(x):
        return F.conv2d(x, window, groups=3)  # 2-D window, no padding

    mu_p, mu_t = blur(prediction), blur(target)
    var_p, var_t = blur(prediction**2) - mu_p**2, blur(target**2) - mu_t**2
    cov = blur(prediction * target) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    reference = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)
                 / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))).mean()
    assert float(ssim(prediction, target)) == pytest.approx(float(reference), abs=1e-6)
    assert float(taps.sum()) == pytest.approx(1.0) and int(taps.argmax()) == 5


def test_outlier_weight_is_detached_and_gradients_flow_to_the_prediction():
    target = images()
    prediction = noisy(target, 0.1).requires_grad_(True)
    delta = prediction - target
    weight = outlier_weight(delta)
    assert not weight.requires_grad and weight.grad_fn is None
    assert 0.0 <= float(weight.min()) and float(weight.max()) < 1.0
    mean = delta.detach().mean(dim=(2, 3), keepdim=True)
    spread = delta.detach().std(dim=(2, 3), keepdim=True) / 2**0.5
    torch.testing.assert_close(weight, torch.tanh((delta.detach() - mean).abs() / (spread + 1e-6)))

    outlier_aware_l1(prediction, target).backward()
    # d/dpred mean(|delta| * w) with w constant: sign(delta) * w / N, nothing through w.
    torch.testing.assert_close(prediction.grad, torch.sign(delta.detach()) * weight / delta.numel())

    prediction.grad = None
    total, _ = QATIELoss()(prediction, target)
    total.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    assert float(prediction.grad.abs().sum()) > 0


def test_loss_registry():
    assert set(LOSSES) == {"itm", "qatie", "pu21", "pu21-psnr", "pu21-mse", "pu21-psnr-mse"}
    assert isinstance(LOSSES["itm"](), ITMLoss)
    assert isinstance(LOSSES["qatie"](), QATIELoss)
    assert LOSSES["pu21-mse"]().pooled and not LOSSES["pu21-psnr"]().pooled
    assert LOSSES["pu21-psnr-mse"]().pooled_weight == 0.5
    assert LOSSES["pu21-psnr"]().pooled_weight == 0
    with pytest.raises(UsageError, match="--loss itm"):
        LOSSES["qatie"](log_mse_weight=0.1)


def test_pu21_loss_is_zero_at_the_target_and_weighs_highlights():
    from itm_onnx.data.encoding import get_encoding

    loss = LOSSES["pu21"]()
    enc = get_encoding("mulaw-clip")
    target = enc.encode(torch.full((1, 3, 8, 8), 0.5))
    assert float(loss(target, target)[0]) < 1e-6
    # the same 10 % error costs more above the clip level than in the shadows
    bright_t, dark_t = enc.encode(torch.full((1, 3, 8, 8), 4.0)), enc.encode(torch.full(
        (1, 3, 8, 8), 0.01))
    bright = loss(enc.encode(torch.full((1, 3, 8, 8), 4.4)), bright_t)[1]["pu21_mse"]
    dark = loss(enc.encode(torch.full((1, 3, 8, 8), 0.011)), dark_t)[1]["pu21_mse"]
    assert bright > 4 * dark
