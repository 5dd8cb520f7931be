"""Quantization-aware training (QAT) structure for MQNet and the gated network, with
core torch fake-quant ops.

``prepare_qat(model)`` returns a copy of a float model whose forward pass rounds and
clamps exactly where the deployed mixed-precision model is quantized, so that
fine-tuning learns to live with int8 (straight-through estimator: gradients pass the
rounding unchanged inside the clamp range and stop outside it). Exporting the result
with ``itm-onnx export`` gives a QDQ ONNX model directly: torch's exporter turns each
fake-quant op into a QuantizeLinear/DequantizeLinear pair whose scale and zero point
are the stored buffers.

Where the fake quantizers sit in MQNet (``backbone.*`` fully int8, ``head.*`` weights only;
the gated network: the same backbone rule, its head fully float, see its twins below):

* weights of every backbone and head convolution: int8 symmetric per output channel,
  at most 63 levels each side (``WEIGHT_SYMMETRIC_MAX``; range (-128, 127) as ONNX
  requires);
* activations, uint8 asymmetric per tensor, in the backbone only: the backbone input
  (fixed range [0, 1], scale 1/255, so 8-bit images are represented exactly), the
  normalised stem input (``2x - 1``), every conv output after its fused ReLU/ReLU6
  (BatchNorm is folded into the conv first, with its eval-mode statistics, as export
  does), every residual add, concat, nearest resize, attention pooling, gate and
  product;
* biases of convs whose input is quantized: on the int32 grid of input scale x weight
  scale, the grid int8 kernels add them on (see :func:`assign_bias_grids`);
* nothing on head activations (InstanceNorm, ReLU, tanh stay float) nor on the output
  transform.

All learned scales are powers of two. That makes the deployed model compute exactly what
the fake-quant PyTorch model computes: a product of two grid values is an integer times a
power of two, so a convolution's sum is exact in float32 (below 2**24) in any order, ORT's
int32 accumulation agrees with PyTorch's float one, and requantizing by
``input_scale * weight_scale / output_scale`` is an exact multiply. With arbitrary scales
one rounding flip in ~60 int8 layers cascades (measured: max errors of 6-250 10-bit codes
on a trained QAT MQNet); with power-of-two scales export can demand the maximum error.
The cost is resolution: a power-of-two scale wastes up to half of the 8-bit range.

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
from ..models.gated import Fuse, GatedDown, GatedUNet, GatedUNetBackbone, Refiner, UpConv
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
# Parity a QAT model's export must meet: max |PyTorch - ORT| on the output, in 10-bit codes.
# ReLU6 outputs: 255 steps of 2**-6 reach 3.98 < 6, so the uint8 range itself clips and
# ORT drops the Clip, fusing the conv into an int8 QLinearConv (2**-5 would reach 7.97:
# the Clip stays, and the conv runs in float).
RELU6_MAX_SCALE = 2.0 ** -6
QAT_PARITY_TOLERANCE = 1.0 / 1023.0
QAT_PARITY_STATISTIC = "max"
DEFAULT_EMA_MOMENTUM = 0.05


# --- fake-quant primitives --------------------------------------------------------------

MIN_SCALE_LOG2 = -24  # smallest scale: 2**-24


def power_of_two_ceil(value: torch.Tensor) -> torch.Tensor:
    """The smallest power of two >= value (elementwise; at least 2**MIN_SCALE_LOG2)."""
    exponent = torch.ceil(torch.log2(value.clamp(min=2.0 ** MIN_SCALE_LOG2)))
    return torch.exp2(exponent)


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel power-of-two scale so that |q| <= WEIGHT_SYMMETRIC_MAX."""
    reduce_dims = tuple(range(1, weight.dim()))
    max_abs = weight.detach().abs().amax(dim=reduce_dims).float()
    return power_of_two_ceil(max_abs / WEIGHT_SYMMETRIC_MAX)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """int8 symmetric per-output-channel fake quantization of a conv weight."""
    zero_point = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(
        weight, weight_scale(weight), zero_point, 0, WEIGHT_QMIN, WEIGHT_QMAX)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, with the straight-through gradient."""
    return x + (torch.round(x) - x).detach()


class FakeQuantConv2d(nn.Conv2d):
    """Conv2d whose weight is fake-quantized to int8 per channel on every call.

    ``input_scale`` (a buffer, 0 until :func:`assign_bias_grids` sets it) is the scale of
    the int8 grid the input lies on; when set, the bias is rounded to the int32 grid
    ``input_scale * weight_scale`` that int8 kernels accumulate on.
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.add_quant_buffers()

    def add_quant_buffers(self) -> None:
        """Also called on a float Conv2d turned into this class in place."""
        self.register_buffer("input_scale", torch.tensor(0.0, device=self.weight.device))

    @classmethod
    def adopt(cls, conv: nn.Conv2d) -> FakeQuantConv2d:
        conv.__class__ = cls
        conv.add_quant_buffers()  # type: ignore[attr-defined]
        return conv  # type: ignore[return-value]

    def quantized_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        # torch.where, not an if: export traces no branch on buffer values.
        on_grid = self.input_scale > 0
        grid = torch.where(on_grid, self.input_scale * weight_scale(self.weight), 1.0)
        return torch.where(on_grid, round_ste(self.bias / grid) * grid, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight), self.quantized_bias())


class ActivationFakeQuant(nn.Module):
    """uint8 asymmetric per-tensor fake quantization with an EMA min/max observer.

    The range always includes 0 (so that zero padding and ReLU zeros are exact). With
    ``fixed_range`` the parameters are set once and never observed (the model input).
    ``observing`` is a plain attribute, not a buffer, so that export traces no branch
    on tensor data; the trainer sets it through :func:`set_observers`.
    """

    def __init__(self, momentum: float = DEFAULT_EMA_MOMENTUM,
                 fixed_range: tuple[float, float] | None = None,
                 max_scale: float | None = None) -> None:
        super().__init__()
        self.momentum = momentum
        self.max_scale = max_scale
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
        if self.fixed:  # the model input: the exact 8-bit grid (see QATBackbone)
            scale = torch.clamp((high - low) / (ACT_QMAX - ACT_QMIN), min=1e-8)
            zero_point = torch.clamp(torch.round(ACT_QMIN - low / scale), ACT_QMIN, ACT_QMAX)
        else:
            scale = power_of_two_ceil((high - low) / (ACT_QMAX - ACT_QMIN))
            if self.max_scale is not None:
                scale = torch.clamp(scale, max=self.max_scale)
            # Even: int8 adds that round (v + zero point) half to even then agree with
            # round(v) + zero point at exact ties (ORT's AVX2 QLinearAdd does the former).
            zero_point = torch.round(ACT_QMIN - low / scale)
            zero_point = torch.clamp(2 * torch.round(zero_point / 2), ACT_QMIN, ACT_QMAX - 1)
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
        layers["quant"] = ActivationFakeQuant(max_scale=RELU6_MAX_SCALE if isinstance(
            act, nn.ReLU6) else None)
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
            FakeQuantConv2d.adopt(conv)
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
        FakeQuantConv2d.adopt(self.conv)
        self.logit_quant = ActivationFakeQuant()
        self.gate_quant = ActivationFakeQuant()
        self.out_quant = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_quant(self.gate(self.logit_quant(self.conv(x))))
        return self.out_quant(x * gate)


class QATChannelSpatialAttention(_Twin, ChannelSpatialAttention):
    def add_quant_points(self) -> None:
        for conv in (self.depthwise, self.spatial):
            FakeQuantConv2d.adopt(conv)
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


# --- the gated multi-scale network (models.gated): QAT as its paper does it -------------
# Fake-quant everywhere in the backbone; the head conv and the output clamp stay float.
# Concatenations run in float on already-quantized inputs; the quantizer after each
# concat is the input quantizer of the int8 conv that reads it.


class QATGatedDown(_Twin, GatedDown):
    def add_quant_points(self) -> None:
        for conv in (self.a, self.b):
            FakeQuantConv2d.adopt(conv)
        for name in ("a_logit", "b_logit", "a", "b", "gate"):
            self.add_module(f"{name}_quant", ActivationFakeQuant())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.a_quant(torch.tanh(self.a_logit_quant(self.a(x))))
        b = self.b_quant(torch.tanh(self.b_logit_quant(self.b(x))))
        return self.gate_quant(a * b), torch.cat([a, b], dim=1)


class QATRefiner(_Twin, Refiner):
    """Every conv output is quantized before its activation, as int8 kernels produce it."""

    def add_quant_points(self) -> None:
        for conv in (self.conv1, self.shortcut, self.conv2, self.conv3, self.residual):
            FakeQuantConv2d.adopt(conv)
        for name in ("conv1", "norm", "shortcut", "joined", "conv2", "conv2_act", "conv3",
                     "conv3_act", "residual", "out"):
            self.add_module(f"{name}_quant", ActivationFakeQuant())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm_quant(self.act(self.norm1(self.conv1_quant(self.conv1(x)))))
        joined = self.joined_quant(torch.cat([normed, self.shortcut_quant(self.shortcut(x))], 1))
        out = self.conv2_act_quant(self.act(self.conv2_quant(self.conv2(joined))))
        out = self.conv3_act_quant(self.act(self.conv3_quant(self.conv3(out))))
        return self.out_quant(out + self.residual_quant(self.residual(joined)))


class QATUpConv(_Twin, UpConv):
    def add_quant_points(self) -> None:
        FakeQuantConv2d.adopt(self.conv)
        self.quant = ActivationFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(self.conv(self.up(x)))  # nearest upsample keeps x's int8 grid


class QATFuse(_Twin, Fuse):
    def add_quant_points(self) -> None:
        FakeQuantConv2d.adopt(self.reduce)
        self.cat_quant, self.reduce_quant = ActivationFakeQuant(), ActivationFakeQuant()

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        joined = self.cat_quant(torch.cat(features, dim=1))
        return self.refine(self.reduce_quant(self.reduce(joined)))


# The gated network's first convs read the image: represent 8-bit input k/255 as k/256,
# a power-of-two grid (exact convolutions, see the module docstring), by scaling it first.
GATED_INPUT_SCALE = 255.0 / 256.0


class QATGatedBackbone(_Twin, GatedUNetBackbone):
    def add_quant_points(self) -> None:
        self.input_quant = ActivationFakeQuant(fixed_range=(0.0, GATED_INPUT_SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.input_quant(x * GATED_INPUT_SCALE))


_TWINS: dict[type[nn.Module], type[_Twin]] = {
    GatedDown: QATGatedDown,
    Refiner: QATRefiner,
    UpConv: QATUpConv,
    Fuse: QATFuse,
    GatedUNetBackbone: QATGatedBackbone,
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
            FakeQuantConv2d.adopt(module)


# --- public API --------------------------------------------------------------------------

def prepare_qat(model: MQNet) -> MQNet:
    """A QAT copy of a float MQNet (BN folded with its eval statistics; observers off).

    The returned model's ``config.qat`` is True, so checkpoints saved from it rebuild
    this structure, and its ``parity_tolerance`` tells export what ORT must match.
    """
    if not isinstance(model, (MQNet, GatedUNet)):
        raise TypeError(f"prepare_qat supports MQNet and GatedUNet, not {type(model).__name__}")
    if is_qat(model):
        raise ValueError("model is already prepared for QAT")
    qat = copy.deepcopy(model)
    _convert_backbone(qat.backbone)
    if isinstance(qat, MQNet):  # the gated network's paper keeps its head fully float
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


BIAS_GRID_PROBE_SIZE = 64  # a multiple of every registered model's required_multiple
BIAS_GRID_PROBE_BATCH = 4  # attention convs see one value per channel and image
MIN_GRID_EVIDENCE = 4  # nonzero input values needed to tell a grid apart


def _grid_of(x: torch.Tensor, scales: list[float]) -> float:
    """The coarsest of ``scales`` (powers of two, descending) that x lies on, else 0."""
    if int(torch.count_nonzero(x)) < MIN_GRID_EVIDENCE:
        return 0.0
    for scale in scales:  # descending
        steps = x.double() / scale
        if torch.equal(steps, torch.round(steps)):
            return scale
    return 0.0


def _is_power_of_two(scale: float) -> bool:
    return scale > 0 and math.log2(scale).is_integer()


@torch.no_grad()
def assign_bias_grids(model: nn.Module, seed: int = 0) -> int:
    """Set each FakeQuantConv2d's ``input_scale`` to the grid its input lies on.

    Found on a seeded noise probe: a conv that reads a quantizer's output directly gets
    that quantizer's scale; one that reads it through a resize, pool or concat gets the
    coarsest power-of-two activation scale on which its whole input lies (a value on
    grid s is also on s/2, s/4...: the coarsest is the quantizer's own, unless every
    value is an even multiple by accident, and then the bias grid is merely coarser than
    it could be, still exact). Convs with float or non-power-of-two inputs keep a float
    bias. Call it with the observers frozen; returns the number of convs given a grid.
    """
    quantizers = [q for _, q in activation_quantizers(model)]
    scales = sorted({float(q.scale) for q in quantizers if _is_power_of_two(float(q.scale))},
                    reverse=True)
    convs = [m for m in model.modules() if isinstance(m, FakeQuantConv2d)]
    produced: dict[int, tuple[torch.Tensor, float]] = {}  # keeps outputs alive: ids stay unique
    found: dict[int, float] = {}

    def mark(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        scale = float(module.scale)
        produced[id(output)] = (output, scale if _is_power_of_two(scale) else 0.0)

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        direct = produced.get(id(args[0]))
        grid = direct[1] if direct is not None else _grid_of(args[0], scales)
        previous = found.setdefault(id(module), grid)
        found[id(module)] = min(previous, grid)  # a conv called twice: the finer grid

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    size = BIAS_GRID_PROBE_SIZE
    probe = torch.randint(0, 256, (BIAS_GRID_PROBE_BATCH, 3, size, size),
                          generator=generator) / 255.0
    hooks = [conv.register_forward_pre_hook(record) for conv in convs]
    hooks += [quantizer.register_forward_hook(mark) for quantizer in quantizers]
    was_training = model.training
    try:
        model.eval()
        model(probe.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for conv in convs:
        conv.input_scale.fill_(found.get(id(conv), 0.0))
    return sum(1 for conv in convs if float(conv.input_scale) > 0)


def has_bias_grids(model: nn.Module) -> bool:
    return any(isinstance(m, FakeQuantConv2d) and float(m.input_scale) > 0
               for m in model.modules())
