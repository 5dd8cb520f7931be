"""MQNet: Mixed Quantization Network for real-time inverse tone mapping (BMVC 2021).

Architecture as released (see docs and ``shared/docs/brief.md``): a MobileNetV2-0.35
encoder with five skip taps, a decoder of inverted residual blocks (attention in the
first block of each of the four lower stages), nearest x2 upsampling with concatenated
skips, two 1x1 decoder tails, and a small full-resolution head.

Module names carry the deployment split: everything under ``backbone.*`` is quantized
to int8 (weights and activations); ``head.*`` keeps float activations with int8
weights; the output transform (``output.*``) stays float. Export tags ONNX nodes from
these names, and every later stage reads the tags.

Output transform. The paper computes ``sigmoid(I + tanh(O))``, which for an input
``I`` in [0, 1] can only produce values in about (0.27, 0.88): a network trained that
way can never emit black or full white. It is kept as ``output_transform="sigmoid"``.
The default, ``"bounded"``, keeps the identity-plus-residual design (``t = tanh(O)``
is zero for an unchanged pixel) but scales the residual by the head-room left in the
direction it pushes::

    H = I + relu(t) * (1 - I) - relu(-t) * I

so ``H`` stays inside [0, 1] without clipping, reaches 1 at ``t = 1`` and 0 at
``t = -1`` from any input, and keeps a gradient everywhere (unlike ``"clamp"``,
``clamp(I + t, 0, 1)``, also offered). It is computed as the equal

    H = I - I * |t| + relu(t)

(``t >= 0``: ``I + t - I t``; ``t < 0``: ``I + I t``; same gradients), with
``|t| = 2 relu(t) - t`` (exact in floating point): 6 full-resolution element-wise ops
instead of 8, and neither Neg nor Abs, which CoreML lacks (NNAPI has both). Relu, Mul,
Sub and Add run on NNAPI, both CoreML flavours and every CPU runtime.

``"hdr"`` (the default, with the ``mulaw-clip`` encoding: radiance relative to the
input's clip level) applies the same bounded residual to the *identity prediction*:
the input linearised by gamma 2.2 and encoded, ``B = enc(I ** 2.2)``, so an untrained
head (``t = 0``) reproduces the identity baseline exactly and training only has to learn
what differs from it. A floor then makes clipped input pixels never come out darker
than the clip level (no "dark holes" where the sensor saturated)::

    F = m * c,   m = clamp((I - 250/255) * 255/4, 0, 1)
    B' = B + relu(F - B);   H = bounded residual on B';   Y = H + relu(F - H)

with ``c`` the smallest 10-bit code that decodes to >= 1.0. ``m`` is 1 at 254/255 and
above, 0 below 250/255, per channel. The floor is applied to the base too, so that a
clipped pixel starts at the clip level and a positive residual lifts it with a
gradient (a floor on the output alone would stop the gradient exactly where highlights
need recovering). All of it is element-wise float (Pow, Log, Relu, Mul, Add, Sub; the
clamp is written as two Relus, since NNAPI's Clip takes only ReLU1/ReLU6 bounds), in the
output part that deployment keeps float.

Dead zone (``residual_deadzone``, default 0.004 with ``"hdr"``): ``t`` is soft-thresholded,
``t - clamp(t, -d, d)``, before it is used. Where the photo needs no change (most of a
well-exposed image), the identity is within 8-bit quantisation of the truth, and any
small hedge of a network that cannot know the camera's exact curve costs more than it
gains (measured on real views: a 200-step model lost up to 20 dB PU21 on views that the
identity got to 62 dB); with the dead zone those pixels stay exactly the identity, and
only confident corrections pass.

Highlight gate (``highlight_gate`` tau, 0 = off): the residual is multiplied, per channel,
by ``g = clamp((I - tau) / (1 - tau), 0, 1)`` before anything else, as HDR-CNN (Eilertsen
et al. 2017) blends its prediction in only where the photo nears saturation. Below tau the
output is exactly the identity prediction, so the network spends all it has on what the
8-bit photo lost (clipped light) and can never damage a well-exposed tone; per channel,
because a channel that did not clip holds its true value. Measured on the real validation
views: replacing only the clipped pixels by the truth would lift PU21 from 36.1 to 45.4 dB,
so this is where the gain is.

Working scale (``work_scale`` s, 1 = as released): the backbone and head see the photo
average-pooled s x s, and the head's residual ``t`` is upsampled bilinearly to full
resolution, where the output transform (identity prediction, gate, floor) runs as
always. The released weights were trained on 128-192 pixel views and score best at that
pixel scale: on the real validation views at 1024x1024, s = 4 lifts the gain over the
identity from +0.60 to +0.93 dB PU21 (models/README.md), at a sixteenth of the
network's pixels. No weights change; any checkpoint can be exported at any scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from .blocks import (
    ATTENTION_LAYERS,
    ConvBnAct,
    InstanceNorm2d,
    InvertedResidual,
    UpConcatConv,
    make_divisible,
)

# (expansion t, channels c, repeats n, first stride s) of MobileNetV2.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@dataclass(frozen=True)
class FeatureTap:
    """A U-Net skip taken from the encoder: block index and which activation."""

    block: int
    point: str  # "expand" (expand-ReLU6 output) or "project" (block output)
    reduction: int


# The released model's taps (Keras names block_1/3/6/13_expand_relu, block_16_project).
MQNET_TAPS = (
    FeatureTap(1, "expand", 2),
    FeatureTap(3, "expand", 4),
    FeatureTap(6, "expand", 8),
    FeatureTap(13, "expand", 16),
    FeatureTap(16, "project", 32),
)

OUTPUT_TRANSFORMS = ("hdr", "bounded", "sigmoid", "clamp")
WORK_SCALES = (1, 2, 4, 8)
# The "hdr" transform encodes its identity prediction with this encoding.
HDR_TRANSFORM_ENCODING = "mulaw-clip"


@dataclass(frozen=True)
class MQNetConfig:
    """Everything that varies between MQNet variants; the defaults are the released model."""

    width_mult: float = 0.35
    attention: str = "ca"  # one of ATTENTION_LAYERS: ca, sa, csa, none
    reduction: int = 2  # attention reduction ratio
    expansion: int = 6  # expansion of the decoder's inverted residual blocks
    output_transform: str = "hdr"  # one of OUTPUT_TRANSFORMS
    # How the [0, 1] output encodes HDR radiance; a key of itm_onnx.data.encoding.ENCODINGS.
    output_encoding: str = HDR_TRANSFORM_ENCODING
    # Quantization-aware-training structure (itm_onnx.train.qat): BN folded, fake-quant
    # where the deployed model is int8. Set by `itm-onnx train --qat`; export gives QDQ.
    qat: bool = False
    # "hdr" transform: residuals smaller than this (on the [0, 1] output scale) are set to
    # exactly zero, larger ones shrunk by it (soft threshold; module doc).
    residual_deadzone: float = 0.004
    # "hdr" transform: 0 (off) or the 8-bit level tau above which the residual may act;
    # below it every channel is exactly the identity prediction (module doc, "Highlight gate").
    highlight_gate: float = 0.0
    # 1 (as released) or 2, 4, 8: backbone and head run on the photo average-pooled by this
    # factor, their residual is upsampled bilinearly, and the output transform applies it
    # at full resolution (module doc, "Working scale"). No weights change.
    work_scale: int = 1
    # Multiplier of the decoder's channels below full resolution (stages 1/32 to 1/2; the
    # full-resolution fusion and the head keep theirs, so the cost at full resolution is
    # the released model's). 1 = as released.
    decoder_width: float = 1.0
    # Multiplier of the full-resolution channels: the last fusion's output and the head's
    # two hidden convs (16, 12, 6 as released). 1 = as released.
    head_width: float = 1.0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_LAYERS:
            raise ValueError(
                f"attention must be one of {sorted(ATTENTION_LAYERS)}, got {self.attention!r}"
            )
        if self.output_transform not in OUTPUT_TRANSFORMS:
            raise ValueError(
                f"output_transform must be one of {OUTPUT_TRANSFORMS}, "
                f"got {self.output_transform!r}"
            )
        if self.output_transform == "hdr" and self.output_encoding != HDR_TRANSFORM_ENCODING:
            raise ValueError(
                f"output_transform 'hdr' predicts {HDR_TRANSFORM_ENCODING!r} outputs, not "
                f"{self.output_encoding!r}; use output_transform 'bounded' for other encodings")
        if not 0.0 <= self.residual_deadzone < 0.5:
            raise ValueError(f"residual_deadzone must be in [0, 0.5), got {self.residual_deadzone}")
        if not 0.0 <= self.highlight_gate < 1.0:
            raise ValueError(f"highlight_gate must be in [0, 1), got {self.highlight_gate}")
        if self.work_scale not in WORK_SCALES:
            raise ValueError(f"work_scale must be one of {WORK_SCALES}, got {self.work_scale}")
        if min(self.width_mult, self.decoder_width, self.head_width) <= 0 \
                or self.reduction < 1 or self.expansion < 1:
            raise ValueError("width_mult, decoder_width, head_width, reduction and expansion "
                             "must be positive")


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor returning the declared taps, finest first."""

    def __init__(self, width_mult: float = 0.35, taps: tuple[FeatureTap, ...] = MQNET_TAPS):
        super().__init__()
        stem_channels = make_divisible(32 * width_mult)
        self.stem = ConvBnAct(3, stem_channels, 3, stride=2)
        blocks: list[InvertedResidual] = []
        in_channels = stem_channels
        for expansion, channels, repeats, stride in MOBILENETV2_STAGES:
            out_channels = make_divisible(int(channels * width_mult))
            for i in range(repeats):
                blocks.append(InvertedResidual(
                    in_channels, out_channels, stride if i == 0 else 1, expansion))
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.taps = taps
        self.tap_channels = tuple(self._tap_channels(t) for t in taps)

    def _tap_channels(self, tap: FeatureTap) -> int:
        block = self.blocks[tap.block]
        conv = block.expand[0] if tap.point == "expand" else block.project[0]
        return conv.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # MobileNetV2 expects inputs in [-1, 1]; the model's interface is [0, 1]. An Add of
        # -1 rather than a Sub of 1 (the same number): NNAPI runs quantized Add, not Sub.
        x = self.stem(x * 2.0 + -1.0)
        wanted = {(t.block, t.point): i for i, t in enumerate(self.taps)}
        features: list[torch.Tensor] = [x] * len(self.taps)
        last = max(t.block for t in self.taps)
        for index, block in enumerate(self.blocks[: last + 1]):
            x, expanded = block.forward_with_expansion(x)
            if (index, "expand") in wanted:
                features[wanted[(index, "expand")]] = expanded
            if (index, "project") in wanted:
                features[wanted[(index, "project")]] = x
        return features


class MQNetDecoder(nn.Module):
    """Decoder of the released model: IRBs at 1/32..1/4, then two 1x1 fusion tails."""

    def __init__(self, tap_channels: tuple[int, ...], config: MQNetConfig) -> None:
        super().__init__()
        attention_layer = ATTENTION_LAYERS[config.attention]
        att = partial(attention_layer, reduction=config.reduction) if attention_layer else None
        irb = partial(InvertedResidual, expansion=config.expansion)
        c2, c4, c8, c16, c32 = tap_channels
        d32, d16, d8, d4, d2 = (make_divisible(c * config.decoder_width)
                                for c in (32, 24, 16, 8, 16))
        self.stage32 = nn.Sequential(irb(c32, d32, attention=att), irb(d32, d32))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.stage16 = nn.Sequential(irb(d32 + c16, d16, attention=att), irb(d16, d16))
        self.stage8 = irb(d16 + c8, d8, attention=att)
        self.stage4 = irb(d8 + c4, d4, attention=att)
        self.fuse2 = UpConcatConv(d4, c2, d2)
        self.out_channels = make_divisible(16 * config.head_width, 4)
        self.fuse1 = UpConcatConv(d2, 3, self.out_channels)

    def forward(self, image: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        f2, f4, f8, f16, f32 = taps
        x = self.stage32(f32)
        x = self.stage16(torch.cat([self.up(x), f16], dim=1))
        x = self.stage8(torch.cat([self.up(x), f8], dim=1))
        x = self.stage4(torch.cat([self.up(x), f4], dim=1))
        x = self.fuse2(x, f2)
        return self.fuse1(x, image)


class MQNetBackbone(nn.Module):
    """Encoder + decoder: the part deployed fully int8."""

    def __init__(self, config: MQNetConfig) -> None:
        super().__init__()
        self.encoder = MobileNetV2Encoder(config.width_mult)
        self.decoder = MQNetDecoder(self.encoder.tap_channels, config)
        self.out_channels = self.decoder.out_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(image, self.encoder(image))


class MQNetHead(nn.Module):
    """Full-resolution head (at the working scale, then its residual upsampled to full
    resolution); deployed with int8 weights and float activations."""

    def __init__(self, in_channels: int = 16, work_scale: int = 1, width: float = 1.0) -> None:
        super().__init__()
        self.upsample = (nn.Upsample(scale_factor=work_scale, mode="bilinear",
                                     align_corners=False) if work_scale > 1 else nn.Identity())
        hidden1, hidden2 = make_divisible(12 * width, 4), make_divisible(6 * width, 2)
        self.conv1 = nn.Conv2d(in_channels, hidden1, 3, padding=1)
        self.norm1 = InstanceNorm2d(hidden1)
        self.conv2 = nn.Conv2d(hidden1, hidden2, 1)
        self.norm2 = InstanceNorm2d(hidden2)
        self.conv3 = nn.Conv2d(hidden2, 3, 1, bias=False)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.upsample(torch.tanh(self.conv3(x)))


class OutputTransform(nn.Module):
    """Combine the input image and the head's residual ``t`` in [-1, 1] (see module doc)."""

    def __init__(self, kind: str = "hdr", deadzone: float = 0.0, gate: float = 0.0) -> None:
        super().__init__()
        self.kind, self.deadzone, self.gate = kind, deadzone, gate
        if kind == "hdr":
            from ..data.encoding import MU_CLIP, PEAK_CLIP, get_encoding

            self.mu, self.log_span = MU_CLIP, math.log1p(MU_CLIP * PEAK_CLIP)
            clip_code = math.ceil(float(get_encoding(HDR_TRANSFORM_ENCODING).encode(
                np.float32(1.0))) * 1023)
            self.clip_floor = clip_code / 1023.0

    def forward(self, image: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return torch.sigmoid(image + t)
        if self.kind == "clamp":
            return torch.clamp(image + t, 0.0, 1.0)
        base = image
        if self.kind == "hdr" and self.gate > 0:
            opening = (image - self.gate) * (1.0 / (1.0 - self.gate))
            t = t * (torch.relu(opening) - torch.relu(opening - 1.0))  # clamp 0..1, Relu only
        relu_t = magnitude = None
        if self.kind == "hdr" and self.deadzone > 0:
            # = t - clamp(t, -d, d), written with Relu: NNAPI's Clip takes only ReLU1/6 bounds.
            positive = torch.relu(t - self.deadzone)
            negative = torch.relu(t * -1.0 - self.deadzone)
            if self.training:
                # Training sees the shrunk output but learns through it as if it were t
                # (straight-through), so that a residual can grow out of the dead zone.
                t = t + (positive - negative - t).detach()
            else:
                # At most one of the two is non-zero, so relu(shrunk) and |shrunk| are them,
                # bit for bit: three fewer full-resolution passes in the deployed graph.
                relu_t, magnitude = positive, positive + negative
        if self.kind == "hdr":  # the identity prediction enc(image ** 2.2), floored
            base = torch.log1p(torch.pow(image, 2.2) * self.mu) * (1.0 / self.log_span)
            ramp = (image - 250.0 / 255.0) * (255.0 / 4.0)
            floor = (torch.relu(ramp) - torch.relu(ramp - 1.0)) * self.clip_floor  # clamp 0..1
            base = base + torch.relu(floor - base)
        # = base + relu(t) * (1 - base) - relu(-t) * base, in fewer ops (module doc).
        if relu_t is None:
            relu_t = torch.relu(t)
            magnitude = 2.0 * relu_t - t  # |t|, bit for bit, without Abs or Neg
        out = base - base * magnitude + relu_t
        if self.kind == "hdr":
            out = out + torch.relu(floor - out)
        return out


class MQNet(nn.Module):
    """LDR image (N, 3, H, W) in [0, 1] -> encoded HDR (N, 3, H, W) in [0, 1].

    H and W must be multiples of ``required_multiple``: 32 (the network downsamples 32x)
    times the working scale.
    """

    required_multiple = 32

    def __init__(self, config: MQNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or MQNetConfig()
        scale = self.config.work_scale
        self.required_multiple = 32 * scale
        # Float like the output transform (onnx_meta tags "pool" head): the backbone's
        # input is quantized after pooling, at the working scale.
        self.pool = nn.AvgPool2d(scale) if scale > 1 else nn.Identity()
        self.backbone = MQNetBackbone(self.config)
        self.head = MQNetHead(self.backbone.out_channels, scale, self.config.head_width)
        self.output = OutputTransform(self.config.output_transform,
                                      self.config.residual_deadzone, self.config.highlight_gate)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.output(image, self.head(self.backbone(self.pool(image))))

