"""Training losses: MQNet's (``itm``) and the QATIE paper's (``qatie``), see :data:`LOSSES`.

``itm``, MQNet's loss as published: L1 + L2 + 0.1 (1 - cosine) [+ 0.05 VGG16 perceptual].

The perceptual term needs ImageNet VGG16 weights, which cannot be downloaded here and
torchvision does not import beside this torch build. It is therefore optional: pass a
local torchvision-format state dict (``--vgg-weights vgg16.pth``) and the loss builds
the VGG16 feature layers itself (same module indices as torchvision's
``vgg16().features``, so the file's ``features.N.*`` keys fit) up to pool3. Without the
file the term is left out, and the run records that it was.

``qatie``, the loss released with the QATIE paper ("Bridging the Training-Deployment
Gap", GenAI4E/QATIE, image enhancement on DPED): 2 x PSNR loss on BT.601 luma
+ 100 x (1 - SSIM) + 1 x outlier-aware L1; see :class:`QATIELoss`.

Real light (``mulaw-clip`` targets): ``pu21`` (MQNet's loss + PU21 MSE), ``pu21-psnr`` (minus
the mean per-image PU21-PSNR, as the real-light benchmark scores), ``pu21-mse`` (the
batch's pooled PU21 MSE, which lets the images with most error, lamps and suns, dominate),
and ``pu21-psnr-mse`` (``pu21-psnr`` plus half of ``pu21-mse``: the far-off images get a
share of the gradient that a log-MSE gives the nearly right ones); the last three align
each prediction's exposure as the benchmark does (:class:`PU21PSNRLoss`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

# torchvision's VGG16 "D" configuration up to the third max-pool (features[0:17]).
VGG16_TO_POOL3 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the published loss."""

    l1: float = 1.0
    l2: float = 1.0
    cosine: float = 0.1
    perceptual: float = 0.05
    # Not in MQNet's loss (0 = off): mean over images of log10(MSE), i.e. -PSNR/10, the
    # "PSNR loss" of the QATIE paper. The figure reported for ITM is a mean of per-image
    # PSNRs, which rewards improving already good images; L1 + L2 pooled over the batch
    # favour the worst ones. At 0.1 its gradient is about that of L2 at 15 dB.
    log_mse: float = 0.0


class VGG16Features(nn.Module):
    """VGG16 conv layers up to pool3; returns the pool1, pool2 and pool3 outputs."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_TO_POOL3:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        pools = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pools.append(x)
        return pools

    @classmethod
    def from_file(cls, path: str | Path) -> VGG16Features:
        """Load torchvision VGG16 weights (.pth via torch.load(weights_only) or .safetensors)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: VGG16 weights file not found")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any reader failure is one message
            raise UsageError(f"{path}: cannot read VGG16 weights ({exc})") from None
        module = cls()
        wanted = {k for k in module.state_dict() if k.startswith("features.")}
        missing = sorted(wanted - set(state))
        if missing:
            raise UsageError(
                f"{path}: not a torchvision VGG16 state dict (missing {', '.join(missing[:3])})"
            )
        for key in wanted:
            if state[key].shape != module.state_dict()[key].shape:
                raise UsageError(f"{path}: {key} has shape {tuple(state[key].shape)}, not VGG16's")
        module.load_state_dict({k: state[k] for k in wanted}, strict=False)
        return module.eval()


def cosine_term(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of 1 - cos(angle between predicted and target RGB vectors)."""
    return (1.0 - F.cosine_similarity(prediction, target, dim=1, eps=1e-6)).mean()


class ITMLoss(nn.Module):
    """The published loss on encoded [0, 1] images; ``forward`` returns (total, parts)."""

    def __init__(self, weights: LossWeights = LossWeights(),
                 vgg: VGG16Features | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.vgg = vgg

    def forward(self, prediction: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {
            "l1": F.l1_loss(prediction, target),
            "l2": F.mse_loss(prediction, target),
            "cosine": cosine_term(prediction, target),
        }
        if self.weights.log_mse:
            per_image = ((prediction - target) ** 2).flatten(1).mean(dim=1)
            parts["log_mse"] = torch.log10(per_image + 1e-8).mean()
        if self.vgg is not None:
            pred_pools, target_pools = self.vgg(prediction), self.vgg(target)
            parts["perceptual"] = sum(
                F.mse_loss(p, t) for p, t in zip(pred_pools, target_pools, strict=True))
        total = sum(getattr(self.weights, name) * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}

    def describe(self) -> str:
        w = self.weights
        text = f"{w.l1:g}*L1 + {w.l2:g}*L2 + {w.cosine:g}*(1 - cosine)"
        if w.log_mse:
            text += f" + {w.log_mse:g}*mean log10(per-image MSE)"
        return text + (f" + {w.perceptual:g}*VGG16(pool1-3)" if self.vgg is not None else "")


# --- QATIE --------------------------------------------------------------------------------------

# BT.601 luma of [0, 1] RGB on the 8-bit studio scale, back to [0, 1]:
# Y = (65.481 R + 128.553 G + 24.966 B + 16) / 255.
BT601_LUMA = (65.481, 128.553, 24.966)
BT601_OFFSET = 16.0


@dataclass(frozen=True)
class QATIEWeights:
    """Weights of the QATIE loss as released (src/train/train_qat.py defaults)."""

    psnr: float = 2.0
    ssim: float = 100.0
    outlier: float = 1.0


def bt601_luma(image: torch.Tensor) -> torch.Tensor:
    """Bx3xHxW [0, 1] RGB to Bx1xHxW luma, (65.481 R + 128.553 G + 24.966 B + 16) / 255."""
    coefficients = image.new_tensor(BT601_LUMA).view(1, 3, 1, 1)
    return ((image * coefficients).sum(dim=1, keepdim=True) + BT601_OFFSET) / 255.0


def psnr_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(50 - mean over images of luma PSNR) / 100, PSNR = 20 log10(1 / sqrt(MSE + 1e-8)).

    Identical images give PSNR 80 dB, so the term's floor is (50 - 80) / 100 = -0.3.
    """
    mse = (bt601_luma(prediction) - bt601_luma(target)).pow(2).mean(dim=(1, 2, 3))
    psnr = 20.0 * torch.log10(1.0 / torch.sqrt(mse + 1e-8))
    return (50.0 - psnr.mean()) / 100.0


def gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian window (the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor, size: int = 11,
         sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Single-scale SSIM, mean over the valid (unpadded) map of every channel and image.

    Gaussian window ``size`` x ``size`` (sigma 1.5) applied to each channel on its own
    (as two separable depthwise passes, which is the same 2-D filter); C1 = (0.01 L)^2,
    C2 = (0.03 L)^2 with L = ``data_range``. Images smaller than the window use a window
    as large as the image, as the released code does. Computed in float32.
    """
    prediction, target = prediction.float(), target.float()
    channels, height, width = prediction.shape[1:]
    size = min(size, height, width)
    taps = gaussian_taps(size, sigma).to(prediction.device)
    rows = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    cols = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = blur(prediction), blur(target)
    var_p = blur(prediction * prediction) - mu_p**2
    var_t = blur(target * target) - mu_t**2
    covariance = blur(prediction * target) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * covariance + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.mean()


def outlier_weight(delta: torch.Tensor) -> torch.Tensor:
    """tanh(|delta - m| / (s / sqrt(2) + 1e-6)), m and s per image and channel; no gradient.

    ``s`` is torch's default (unbiased) standard deviation over H and W, as released.
    Errors near their image's mean error weigh little, outliers weigh up to 1.
    """
    delta = delta.detach()
    mean = delta.mean(dim=(2, 3), keepdim=True)
    spread = delta.std(dim=(2, 3), keepdim=True) / math.sqrt(2.0)
    return torch.tanh((delta - mean).abs() / (spread + 1e-6))


def outlier_aware_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(|pred - target| * outlier_weight(pred - target)); the weight is a constant."""
    delta = prediction - target
    return (delta.abs() * outlier_weight(delta)).mean()


class QATIELoss(nn.Module):
    """The QATIE loss on [0, 1] images; ``forward`` returns (total, parts) like ITMLoss.

    total = 2 x psnr_loss + 100 x (1 - SSIM) + 1 x outlier-aware L1. Its minimum (a
    perfect prediction) is 2 x (50 - 80) / 100 = -0.6, not 0: the PSNR term is an
    offset PSNR, capped at 80 dB by its 1e-8.
    """

    def __init__(self, weights: QATIEWeights = QATIEWeights()) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, prediction: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {
            "psnr": psnr_loss(prediction, target),
            "ssim": 1.0 - ssim(prediction, target),
            "outlier": outlier_aware_l1(prediction, target),
        }
        total = sum(getattr(self.weights, name) * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}

    def describe(self) -> str:
        w = self.weights
        return (f"QATIE: {w.psnr:g}*(50 - PSNR(BT.601 luma))/100 + {w.ssim:g}*(1 - SSIM 11x11) "
                f"+ {w.outlier:g}*outlier-aware L1")


# --- PU21: the real-light benchmark's own space --------------------------------------------------


def pu21_torch(luminance: torch.Tensor) -> torch.Tensor:
    """PU21 of absolute luminance in cd/m2 (itm_onnx.metrics.pu21, differentiable)."""
    from ..metrics import _PU21, PU21_RANGE

    p0, p1, p2, p3, p4, p5, p6 = _PU21
    y = luminance.clamp(*PU21_RANGE) ** p3
    return p6 * (((p0 + p1 * y) / (1.0 + p2 * y)) ** p4 - p5)


class PU21Loss(nn.Module):
    """MQNet's loss plus ``weight`` x the MSE of PU21-encoded RGB (relative to its peak^2).

    For ``mulaw-clip`` outputs (radiance relative to the clip level, shown at 200 cd/m2):
    the encoded-space terms keep every tone in play, the PU21 term weighs errors as the
    real-light benchmark does, heavily near and above the clip level, where a small
    needless boost of a barely clipped sky costs more than it could gain.
    """

    target_encoding = "mulaw-clip"  # what the trainer must feed it (it decodes radiance)

    def __init__(self, weight: float = 100.0) -> None:
        super().__init__()
        from ..data.encoding import get_encoding
        from ..metrics import CLIP_NITS, PU21_PEAK

        self.base = ITMLoss()
        self.weight, self.decode = weight, get_encoding(self.target_encoding).decode
        self.nits, self.peak = CLIP_NITS, PU21_PEAK

    def forward(self, prediction: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = self.base(prediction, target)
        pu_pred = pu21_torch(self.decode(prediction) * self.nits)
        pu_true = pu21_torch(self.decode(target) * self.nits)
        pu_mse = F.mse_loss(pu_pred, pu_true) / self.peak**2
        parts["pu21_mse"] = float(pu_mse.detach())
        return total + self.weight * pu_mse, parts

    def describe(self) -> str:
        return f"{self.base.describe()} + {self.weight:g}*MSE(PU21)/PU21_peak^2"


def align_scale_torch(prediction: torch.Tensor, target: torch.Tensor,
                      ldr: torch.Tensor) -> torch.Tensor:
    """Per-image exposure factors (Bx1x1x1, no gradient) as the benchmark aligns them.

    :func:`itm_onnx.metrics.align_on_well_exposed` itself, image by image: the factor
    carries no gradient, so the benchmark's own numpy code gives it, and the two cannot
    drift apart.
    """
    from ..metrics import align_on_well_exposed

    def hwc(x: torch.Tensor) -> np.ndarray:
        return x.detach().permute(0, 2, 3, 1).cpu().numpy()

    codes = np.round(hwc(ldr) * 255.0).astype(np.uint8)
    scales = [align_on_well_exposed(p, t, c)[1]
              for p, t, c in zip(hwc(prediction), hwc(target), codes, strict=True)]
    return prediction.new_tensor(scales).view(-1, 1, 1, 1)


class PU21PSNRLoss(nn.Module):
    """Minus the mean over images of PU21-PSNR / 10: the real-light benchmark's own figure.

    Each prediction is decoded (``mulaw-clip``: radiance relative to the clip level),
    scaled by its well-exposed exposure factor (:func:`align_scale_torch`) and PU21-encoded
    with the clip level at 200 cd/m2, exactly as ``itm-onnx evaluate --data real`` scores it.
    A mean of per-image log-MSEs rather than one MSE: an image that the identity already
    gets right weighs as much as one with a blown-out lamp, so a needless boost of a
    barely clipped sky costs what it costs in the benchmark. PSNR is capped at
    ``ceiling_db`` (a perfect image gives a finite loss). Needs the input photo, for the
    well-exposed mask (``takes_input``).
    """

    takes_input = True
    target_encoding = "mulaw-clip"

    def __init__(self, ceiling_db: float = 70.0, pooled: bool = False,
                 pooled_weight: float = 0.0) -> None:
        super().__init__()
        from ..data.encoding import get_encoding
        from ..metrics import CLIP_NITS, PU21_PEAK

        self.decode = get_encoding(self.target_encoding).decode
        self.nits, self.peak, self.ceiling_db = CLIP_NITS, PU21_PEAK, ceiling_db
        self.pooled, self.pooled_weight = pooled, pooled_weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                ldr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pred, true = self.decode(prediction), self.decode(target)
        pred = pred * align_scale_torch(pred, true, ldr)
        error = pu21_torch(pred * self.nits) - pu21_torch(true * self.nits)
        mse = error.pow(2).mean(dim=(1, 2, 3)) / self.peak**2
        psnr = -10.0 * torch.log10(mse + 10.0 ** (-self.ceiling_db / 10.0))
        mean_psnr = psnr.mean()
        parts = {"pu21_psnr": float(mean_psnr.detach())}
        pooled = mse.mean() * 1000.0  # the batch's MSE: the images with most error dominate
        if self.pooled:
            return pooled, parts
        # A log-MSE's gradient is 1/MSE: an image that is nearly right outweighs a lamp
        # that is far off many times over. The pooled term gives the far-off ones a share.
        return -mean_psnr / 10.0 + self.pooled_weight * pooled, parts

    def describe(self) -> str:
        if self.pooled:
            return "1000 x MSE(PU21)/PU21_peak^2 over the batch (aligned on well-exposed pixels)"
        extra = (f" + {self.pooled_weight:g} x 1000 x pooled MSE(PU21)/PU21_peak^2"
                 if self.pooled_weight else "")
        return (f"-mean PU21-PSNR/10 (aligned on well-exposed pixels, capped at "
                f"{self.ceiling_db:g} dB){extra}")


def build_pu21_psnr_loss(vgg_weights: Path | None = None, log_mse_weight: float = 0.0,
                         pooled: bool = False, pooled_weight: float = 0.0) -> PU21PSNRLoss:
    if vgg_weights or log_mse_weight:
        raise UsageError("--vgg-weights and --log-mse-weight are terms of --loss itm")
    return PU21PSNRLoss(pooled=pooled, pooled_weight=pooled_weight)


def build_pu21_loss(vgg_weights: Path | None = None, log_mse_weight: float = 0.0) -> PU21Loss:
    if vgg_weights or log_mse_weight:
        raise UsageError("--vgg-weights and --log-mse-weight are terms of --loss itm")
    return PU21Loss()


# --- registry -----------------------------------------------------------------------------------

def build_itm_loss(vgg_weights: Path | None = None, log_mse_weight: float = 0.0) -> ITMLoss:
    """MQNet's loss; the VGG16 term when a weights file is given."""
    vgg = VGG16Features.from_file(vgg_weights) if vgg_weights else None
    return ITMLoss(LossWeights(log_mse=log_mse_weight), vgg=vgg)


def build_qatie_loss(vgg_weights: Path | None = None, log_mse_weight: float = 0.0) -> QATIELoss:
    """The QATIE loss; it has neither a VGG nor a log-MSE term, so refuses their options."""
    if vgg_weights or log_mse_weight:
        raise UsageError("--vgg-weights and --log-mse-weight are terms of --loss itm; "
                         "--loss qatie has neither")
    return QATIELoss()


# Loss name -> builder(vgg_weights=..., log_mse_weight=...) returning a module whose
# forward(prediction, target) gives (total, {part: float}) and describe() a line.
LOSSES: dict[str, Callable[..., nn.Module]] = {"itm": build_itm_loss, "qatie": build_qatie_loss,
                                               "pu21": build_pu21_loss,
                                               "pu21-psnr": build_pu21_psnr_loss,
                                               "pu21-mse": partial(build_pu21_psnr_loss,
                                                                   pooled=True),
                                               "pu21-psnr-mse": partial(build_pu21_psnr_loss,
                                                                        pooled_weight=0.5)}
