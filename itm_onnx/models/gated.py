"""Gated encoder with multi-scale refinement ("Bridging the Training-Deployment Gap",
CVPRW 2026, code GenAI4E/QATIE), the network the paper trains quantization-aware.

Path: gated stride-2 down blocks to 1/2 (c channels) and 1/4 (2c), a refiner at each
scale, max-pool to a 1/8 bottleneck refiner (4c); the up path upsamples (nearest x2 and
a 3x3 conv), fuses [upsampled, refined, skip] with a 1x1 conv and a refiner, and a 3x3
head predicts a residual: ``y = clamp(x + delta, 0, 1)``.

As in MQNet, ``backbone.*`` is what int8 deployment quantizes and ``head.*`` stays
float (the paper keeps the head and the concatenations in float during QAT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import InstanceNorm2d


@dataclass(frozen=True)
class GatedUNetConfig:
    width: int = 24  # c: the paper's variants use 12, 24 or 32
    negative_slope: float = 0.2
    # How the [0, 1] output encodes HDR radiance; a key of itm_onnx.data.encoding.ENCODINGS.
    output_encoding: str = "mulaw"
    # Quantization-aware structure (itm_onnx.train.qat), as the paper trains it: fake-quant
    # in the backbone, float head and output. Set by `itm-onnx train --qat`.
    qat: bool = False

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError("width must be positive")


class GatedDown(nn.Module):
    """Two stride-2 3x3 convs a, b through tanh: a * b goes on, (a, b) is the skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.b = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.tanh(self.a(x)), torch.tanh(self.b(x))
        return a * b, torch.cat([a, b], dim=1)


class Refiner(nn.Module):
    """3x3 conv, InstanceNorm, LeakyReLU; concat with a 1x1 of the input; two 3x3
    conv + LeakyReLU; plus a 1x1 residual of the concatenation."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.norm1 = InstanceNorm2d(in_channels)
        self.shortcut = nn.Conv2d(in_channels, in_channels, 1)
        self.conv2 = nn.Conv2d(2 * in_channels, out_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.residual = nn.Conv2d(2 * in_channels, out_channels, 1)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.act(self.norm1(self.conv1(x))), self.shortcut(x)], dim=1)
        out = self.act(self.conv3(self.act(self.conv2(joined))))
        return out + self.residual(joined)


class UpConv(nn.Module):
    """Nearest x2 upsample, then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class Fuse(nn.Module):
    """Concatenate [upsampled, refined, skip], reduce with a 1x1, then refine."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.refine = Refiner(out_channels, out_channels, negative_slope)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.refine(self.reduce(torch.cat(features, dim=1)))


class GatedUNetBackbone(nn.Module):
    def __init__(self, config: GatedUNetConfig) -> None:
        super().__init__()
        c, slope = config.width, config.negative_slope
        self.down1 = GatedDown(3, c)
        self.refine2 = Refiner(c, c, slope)
        self.down2 = GatedDown(c, 2 * c)
        self.refine4 = Refiner(2 * c, 2 * c, slope)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = Refiner(2 * c, 4 * c, slope)
        self.up4 = UpConv(4 * c, 2 * c)
        self.fuse4 = Fuse(8 * c, 2 * c, slope)  # [up 2c, refined 2c, skip 4c]
        self.up2 = UpConv(2 * c, c)
        self.fuse2 = Fuse(4 * c, c, slope)  # [up c, refined c, skip 2c]
        self.up1 = UpConv(c, c)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated1, skip1 = self.down1(x)
        refined2 = self.refine2(gated1)
        gated2, skip2 = self.down2(refined2)
        refined4 = self.refine4(gated2)
        bottom = self.bottleneck(self.pool(refined4))
        fused4 = self.fuse4(self.up4(bottom), refined4, skip2)
        fused2 = self.fuse2(self.up2(fused4), refined2, skip1)
        return self.up1(fused2)


class GatedUNet(nn.Module):
    """LDR (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1]; H, W multiples of 8."""

    required_multiple = 8
    # Export parity (max |PyTorch - ORT|). Above the 1e-4 of float MQNet: InstanceNorm over
    # near-flat feature maps divides by a tiny std, and float32 PyTorch itself is 1.3e-4
    # from a float64 run on the hard-edge probe (trained c12, 256x256). 4e-4 is still
    # under half a 10-bit code.
    parity_tolerance = 4e-4

    def __init__(self, config: GatedUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or GatedUNetConfig()
        self.backbone = GatedUNetBackbone(self.config)
        self.head = nn.Conv2d(self.backbone.out_channels, 3, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.head(self.backbone(x)), 0.0, 1.0)
