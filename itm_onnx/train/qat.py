"""Quantization-aware training (QAT) structure for MQNet, with core torch fake-quant ops.

``prepare_qat(model)`` returns a copy of a float MQNet whose forward pass rounds and
clamps exactly where the deployed mixed-precision model is quantized, so that
fine-tuning learns to live with int8 (straight-through estimator: gradients pass the
rounding unchanged inside the clamp range and stop outside it). Exporting the result
with ``itm-onnx export`` gives a QDQ ONNX model directly: torch's exporter turns each
fake-quant op into a QuantizeLinear/DequantizeLinear pair whose scale and zero point
are the stored buffers.

Where the fake quantizers sit (``backbone.*`` fully int8, ``head.*`` weights only):

* weights of every backbone and head convolution: int8 symmetric per output channel,
  scale = max|w| / 63 recomputed from the weight at each call (7-bit levels stored as
  int8, see ``WEIGHT_SYMMETRIC_MAX`` for why; range (-128, 127) as ONNX requires);
* activations, uint8 asymmetric per tensor, in the backbone only: the backbone input
  (fixed range [0, 1], scale 1/255, so 8-bit images are represented exactly), the
  normalised stem input (``2x - 1``), every conv output after its fused ReLU/ReLU6
  (BatchNorm is folded into the conv first, with its eval-mode statistics, as export
  does), every residual add, concat, nearest resize, attention pooling, gate and
  product;
* nothing on head activations (InstanceNorm, ReLU, tanh stay float) nor on the output
  transform.

Activation ranges come from EMA min/max observers (``ActivationFakeQuant``) that update
only in training mode while enabled; the trainer enables them for a warm-up and then
freezes them (``set_observers``), and a model rebuilt from a checkpoint has them frozen.

Conversion works in place on a deep copy: ``ConvBnAct`` modules are replaced by
``QConvAct`` (conv with BN folded in, activation, output quantizer); the other blocks
are switched to a QAT twin class (``module.__class__ = Twin``) that inherits all their
weights and only overrides ``forward`` to call the quantizers it adds. The structure
depends only on the model config, so ``create_model("mqnet", qat=True)`` rebuilds it
and a QAT checkpoint loads into it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import nn

from ..models.blocks import (
    ChannelAttention,
    ChannelSpatialAttention,
    ConvBnAct,
    InvertedResidual,
    SpatialAttention,
    UpConcatConv,
)
from ..models.mqnet import MQNet, MQNetBackbone, MQNetDecoder

ACT_QMIN, ACT_QMAX = 0, 255  # uint8 activations (ONNX QuantizeLinear range)
WEIGHT_QMIN, WEIGHT_QMAX = -128, 127  # int8 weights, stored in ONNX's int8 range
# Symmetric weight scale = max|w| / WEIGHT_SYMMETRIC_MAX, so weights take |q| <= 63 (7 bit).
# x86 CPUs without VNNI (AVX2 only, as on this project's machines) run ORT's u8 x s8
# convolutions with vpmaddubsw, which saturates at 16 bit when two products of a uint8
# activation and a full-range int8 weight are summed (255 * 127 * 2 > 32767): the QDQ
# model's output was off by up to 0.5 with |q| <= 127, and matches with |q| <= 63. ORT's
# own quantizer calls this reduce_range. ARM and VNNI kernels do not saturate.
WEIGHT_SYMMETRIC_MAX = 63
# Parity a QAT model's export must meet: the mean |PyTorch - ORT| per probe image at most
# four 10-bit output codes, in ORT's reference (unoptimized) execution of the QDQ graph.
# Not the max: PyTorch and ORT compute convolutions in different float orders, so now and
# then a value lands on the other side of a rounding boundary; that one-step flip changes
# the inputs of the next int8 layers, and the difference cascades through ~60 quantized
# layers. Measured on a trained QAT MQNet at 256x256: max errors of 6-250 codes, means of
# 0-2.7 codes on the export probes (exactly 0 on the flat one, where nothing can flip) and
# 1-5 codes on synthetic test scenes. ORT's fused int8 kernels (reported, not gated) add
# their own requantization rounding: means of 2-23 codes.
QAT_PARITY_TOLERANCE = 4.0 / 1023.0
QAT_PARITY_STATISTIC = "mean"
DEFAULT_EMA_MOMENTUM = 0.05


# --- fake-quant primitives --------------------------------------------------------------

def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """int8 symmetric per-output-channel fake quantization of a conv weight."""
    reduce_dims = tuple(range(1, weight.dim()))
    scale = weight.detach().abs().amax(dim=reduce_dims) / WEIGHT_SYMMETRIC_MAX
    scale = scale.clamp(min=1e-8).float()
    zero_point = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(
        weight, scale, zero_point, 0, WEIGHT_QMIN, WEIGHT_QMAX)


class FakeQuantConv2d(nn.Conv2d):
    """Conv2d whose weight is fake-quantized to int8 per channel on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight), self.bias)


class ActivationFakeQuant(nn.Module):
    """uint8 asymmetric per-tensor fake quantization with an EMA min/max observer.

    The range always includes 0 (so that zero padding and ReLU zeros are exact). With
    ``fixed_range`` the parameters are set once and never observed (the model input).
    ``observing`` is a plain attribute, not a buffer, so that export traces no branch
    on tensor data; the trainer sets it through :func:`set_observers`.
    """

    def __init__(self, momentum: float = DEFAULT_EMA_MOMENTUM,
                 fixed_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.momentum = momentum
        self.fixed = fixed_range is not None
        self.observing = False
        low, high = fixed_range if fixed_range else (math.inf, -math.inf)
        self.register_buffer("min_val", torch.tensor(float(low)))
        self.register_buffer("max_val", torch.tensor(float(high)))
        self.register_buffer("scale", torch.tensor(1.0 / ACT_QMAX))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        if self.fixed:
            self._update_qparams()

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """EMA update of min/max (the first batch sets them), then of scale/zero point."""
        low, high = x.detach().min().float(), x.detach().max().float()
        first = torch.isinf(self.min_val)
        self.min_val.copy_(torch.where(first, low, torch.lerp(self.min_val, low, self.momentum)))
        self.max_val.copy_(torch.where(first, high, torch.lerp(self.max_val, high, self.momentum)))
        self._update_qparams()

    @torch.no_grad()
    def _update_qparams(self) -> None:
        low = torch.clamp(self.min_val, max=0.0)
        high = torch.clamp(self.max_val, min=0.0)
        scale = torch.clamp((high - low) / (ACT_QMAX - ACT_QMIN), min=1e-8)
        zero_point = torch.clamp(torch.round(ACT_QMIN - low / scale), ACT_QMIN, ACT_QMAX)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point.to(torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.observing and not self.fixed:
            self.observe(x)
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, ACT_QMIN, ACT_QMAX)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}" + (
            ", fixed" if self.fixed else "")


# --- conv + BN + act ------------------------------------------------------------------

def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> FakeQuantConv2d:
    """A FakeQuantConv2d equal to ``bn(conv(x))`` with BN's running (eval) statistics."""
    folded = FakeQuantConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
    ).to(conv.weight.device)
    with torch.no_grad():
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded.weight.copy_(conv.weight * factor.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - bn.running_mean) * factor + bn.bias)
    return folded


class QConvAct(nn.Sequential):
    """QAT form of ``ConvBnAct``: [input quantizer], folded conv, activation, output quantizer."""

    @classmethod
    def from_float(cls, block: ConvBnAct, quantize_input: bool = False) -> QConvAct:
        conv, bn = block[0], block[1]
        act = block[2] if len(block) > 2 else nn.Identity()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if quantize_input:
            layers["input_quant"] = ActivationFakeQuant()
        layers["conv"] = fold_conv_bn(conv, bn)
        layers["act"] = act
        layers["quant"] = ActivationFakeQuant()
        return cls(layers)


# --- QAT twins of the float blocks -------------------------------------------------------

class _Twin:
    """Mixin: ``adopt(module)`` turns a float block into this QAT class in place."""

    @classmethod
    def adopt(cls, module: nn.Module) -> nn.Module:
        module.__class__ = cls
        module.add_quant_points()
        return module

    def add_quant_points(self) -> None:  # pragma: no cover - every twin overrides
        raise NotImplementedError


class QATInvertedResidual(_Twin, InvertedResidual):
    """Adds a quantizer after the residual add (the only op not inside a QConvAct)."""

    def add_quant_points(self) -> None:
        if self.use_residual:
            self.add_quant = ActivationFakeQuant()

    def forward_with_expansion(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expanded = self.expand(x)
        out = self.attention(self.project(self.depthwise(expanded)))
        if self.use_residual:
            out = self.add_quant(x + out)
        return out, expanded


class QATChannelAttention(_Twin, ChannelAttention):
    def add_quant_points(self) -> None:
        for conv in (self.reduce, self.expand):
            conv.__class__ = FakeQuantConv2d
        self.pool_quant = ActivationFakeQuant()
        self.hidden_quant = ActivationFakeQuant()
        self.logit_quant = ActivationFakeQuant()
        self.gate_quant = ActivationFakeQuant()
        self.out_quant = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_quant(self.pool(x))
        hidden = self.hidden_quant(self.act(self.reduce(pooled)))
        gate = self.gate_quant(self.gate(self.logit_quant(self.expand(hidden))))
        return self.out_quant(x * gate)


class QATSpatialAttention(_Twin, SpatialAttention):
    def add_quant_points(self) -> None:
        self.conv.__class__ = FakeQuantConv2d
        self.logit_quant = ActivationFakeQuant()
        self.gate_quant = ActivationFakeQuant()
        self.out_quant = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_quant(self.gate(self.logit_quant(self.conv(x))))
        return self.out_quant(x * gate)


class QATChannelSpatialAttention(_Twin, ChannelSpatialAttention):
    def add_quant_points(self) -> None:
        for conv in (self.depthwise, self.spatial):
            conv.__class__ = FakeQuantConv2d
        for name in ("channel_logit", "channel_gate", "spatial_logit", "spatial_gate",
                     "channel_out", "out"):
            self.add_module(f"{name}_quant", ActivationFakeQuant())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.channel_gate_quant(self.gate(self.channel_logit_quant(self.depthwise(x))))
        spatial = self.spatial_gate_quant(self.gate(self.spatial_logit_quant(self.spatial(x))))
        return self.out_quant(self.channel_out_quant(x * channel) * spatial)


class QATUpConcatConv(_Twin, UpConcatConv):
    def add_quant_points(self) -> None:
        self.up_quant = ActivationFakeQuant()
        self.cat_quant = ActivationFakeQuant()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.cat_quant(torch.cat([self.up_quant(self.up(x)), skip], dim=1)))


class QATDecoder(_Twin, MQNetDecoder):
    """One quantizer per resize and per concat (the shared ``up`` module is called 3x)."""

    def add_quant_points(self) -> None:
        for scale in (16, 8, 4):
            self.add_module(f"up{scale}_quant", ActivationFakeQuant())
            self.add_module(f"cat{scale}_quant", ActivationFakeQuant())

    def _join(self, x: torch.Tensor, skip: torch.Tensor, scale: int) -> torch.Tensor:
        up = getattr(self, f"up{scale}_quant")(self.up(x))
        return getattr(self, f"cat{scale}_quant")(torch.cat([up, skip], dim=1))

    def forward(self, image: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        f2, f4, f8, f16, f32 = taps
        x = self.stage32(f32)
        x = self.stage16(self._join(x, f16, 16))
        x = self.stage8(self._join(x, f8, 8))
        x = self.stage4(self._join(x, f4, 4))
        x = self.fuse2(x, f2)
        return self.fuse1(x, image)


class QATBackbone(_Twin, MQNetBackbone):
    """Quantizes the model input once, with the exact 8-bit grid (scale 1/255, zero 0)."""

    def add_quant_points(self) -> None:
        self.input_quant = ActivationFakeQuant(fixed_range=(0.0, 1.0))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = self.input_quant(image)
        return self.decoder(image, self.encoder(image))


_TWINS: dict[type[nn.Module], type[_Twin]] = {
    InvertedResidual: QATInvertedResidual,
    ChannelAttention: QATChannelAttention,
    SpatialAttention: QATSpatialAttention,
    ChannelSpatialAttention: QATChannelSpatialAttention,
    UpConcatConv: QATUpConcatConv,
    MQNetDecoder: QATDecoder,
    MQNetBackbone: QATBackbone,
}


def _convert_backbone(module: nn.Module, path: str = "backbone") -> None:
    """Depth first: replace ConvBnAct children, then turn ``module`` into its twin."""
    for name, child in list(module.named_children()):
        child_path = f"{path}.{name}"
        if isinstance(child, ConvBnAct):
            # The stem conv also quantizes its input, the normalised image 2x - 1.
            setattr(module, name, QConvAct.from_float(
                child, quantize_input=child_path == "backbone.encoder.stem"))
        else:
            _convert_backbone(child, child_path)
    twin = _TWINS.get(type(module))
    if twin is not None:
        twin.adopt(module)


def _convert_head(head: nn.Module) -> None:
    """Head convolutions get int8 weights; their activations stay float."""
    for module in head.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = FakeQuantConv2d


# --- public API --------------------------------------------------------------------------

def prepare_qat(model: MQNet) -> MQNet:
    """A QAT copy of a float MQNet (BN folded with its eval statistics; observers off).

    The returned model's ``config.qat`` is True, so checkpoints saved from it rebuild
    this structure, and its ``parity_tolerance`` tells export what ORT must match.
    """
    if not isinstance(model, MQNet):
        raise TypeError(f"prepare_qat supports MQNet models, not {type(model).__name__}")
    if is_qat(model):
        raise ValueError("model is already prepared for QAT")
    qat = copy.deepcopy(model)
    _convert_backbone(qat.backbone)
    _convert_head(qat.head)
    qat.config = dataclasses.replace(qat.config, qat=True)
    qat.parity_tolerance = QAT_PARITY_TOLERANCE
    qat.parity_statistic = QAT_PARITY_STATISTIC
    return qat


def is_qat(model: nn.Module) -> bool:
    return any(isinstance(m, (ActivationFakeQuant, FakeQuantConv2d)) for m in model.modules())


def activation_quantizers(model: nn.Module) -> list[tuple[str, ActivationFakeQuant]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActivationFakeQuant)]


def set_observers(model: nn.Module, enabled: bool) -> None:
    """Let the activation observers update in training mode (True) or freeze them."""
    for _, quantizer in activation_quantizers(model):
        quantizer.observing = enabled


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run batches through the model with observers on, to initialise activation ranges.

    Returns the number of batches seen. Observers are left frozen afterwards and the
    model's train/eval mode is restored.
    """
    was_training = model.training
    model.train()
    set_observers(model, True)
    count = 0
    try:
        for batch in batches:
            model(batch)
            count += 1
    finally:
        set_observers(model, False)
        model.train(was_training)
    return count
