"""Small, composable building blocks shared by the model families.

Every block takes what varies as constructor arguments (channels, stride, expansion,
attention factory), in the manner of timm's ``InvertedResidual`` and ``SqueezeExcite``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

AttentionFactory = Callable[[int], nn.Module]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count the way MobileNetV2 does (never more than 10 % down)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> activation; BN folds into the conv at export."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class ChannelAttention(nn.Module):
    """CA (RCAN-style): x * sigmoid(conv1x1(relu(conv1x1(avgpool(x))))), C -> C/r -> C."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class SpatialAttention(nn.Module):
    """SA: x * sigmoid(conv1x1_{C->1}(x)), one weight per pixel."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv(x))


class ChannelSpatialAttention(nn.Module):
    """CSA: x * sigmoid(depthwise(x)) * sigmoid(conv1x1_{C->1}(x))."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 1, groups=channels)
        self.spatial = nn.Conv2d(channels, 1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.depthwise(x)) * self.gate(self.spatial(x))


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over H and W as a row mean, then a mean of the row means.

    Same value as ``x.mean((2, 3))``. ONNX Runtime's single float32 ReduceMean over a
    1088x1920 plane of near-constant values is off by up to 2.5e-3 (relative; torch:
    1e-7); two stages of at most ~2000 values each are off by ~1e-6. The Transpose keeps
    onnxsim from fusing the two ReduceMean nodes back into one.
    """
    row_means = x.mean(dim=3, keepdim=True)
    return row_means.transpose(2, 3).mean(dim=3, keepdim=True)


class InstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm whose ONNX formulation can be chosen at export time.

    Same parameters and maths as ``nn.InstanceNorm2d``; ``formulation`` only changes the
    ops the exporter sees:

    - ``"native"``: one InstanceNormalization node. ONNX Runtime's CPU kernel reduces
      each plane in one float32 pass and loses precision on large, flat planes
      (measured: 3e-3 error on the normalised output at 1088x1920, where torch is exact
      to 1e-6); NNAPI does not support the op at all.
    - ``"decomposed"``: precise two-stage means (``spatial_mean``), then
      ``(x - mean) * (gamma / sqrt(var + eps)) + beta`` with ReduceMean, Transpose, Sub,
      Mul, Sqrt, Div and Add only: accurate and runnable by NNAPI (the export default).
    """

    FORMULATIONS = ("native", "decomposed")

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, affine=affine)
        self.formulation = "native"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "native":
            return super().forward(x)
        centered = x - spatial_mean(x)
        std = torch.sqrt(spatial_mean(centered * centered) + self.eps)
        if not self.affine:
            return centered / std
        # gamma / std is per channel (N, C, 1, 1): one full-resolution Mul instead of two.
        # A Div of two tensors, not ``1.0 / std``: the exporter writes that as Reciprocal,
        # which NNAPI does not have (one op outside NNAPI splits its partition in three).
        scale = self.weight.view(1, -1, 1, 1) / std
        return centered * scale + self.bias.view(1, -1, 1, 1)


def set_instancenorm_formulation(model: nn.Module, formulation: str) -> None:
    """Choose how every ``InstanceNorm2d`` of ``model`` is written for export."""
    if formulation not in InstanceNorm2d.FORMULATIONS:
        raise ValueError(f"formulation must be one of {InstanceNorm2d.FORMULATIONS}")
    for module in model.modules():
        if isinstance(module, InstanceNorm2d):
            module.formulation = formulation


ATTENTION_LAYERS: dict[str, type[nn.Module] | None] = {
    "ca": ChannelAttention,
    "sa": SpatialAttention,
    "csa": ChannelSpatialAttention,
    "none": None,
}


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection.

    ``attention`` (optional) runs after the projection; the residual add happens only
    when the block keeps both the channel count and the resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: int = 6,
        attention: AttentionFactory | None = None,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = (
            ConvBnAct(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        )
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBnAct(hidden, out_channels, 1, act=None)
        self.attention = attention(out_channels) if attention else nn.Identity()
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the block output and the expand-ReLU6 activation (a U-Net skip tap)."""
        expanded = self.expand(x)
        out = self.attention(self.project(self.depthwise(expanded)))
        return (x + out if self.use_residual else out), expanded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_expansion(x)[0]


class UpConcatConv(nn.Module):
    """Nearest x2 upsample, concatenate a skip, then 1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = ConvBnAct(in_channels + skip_channels, out_channels, 1, act=nn.ReLU)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))
