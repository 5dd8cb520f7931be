"""Training loss of MQNet as published: L1 + L2 + 0.1 (1 - cosine) [+ 0.05 VGG16 perceptual].

The perceptual term needs ImageNet VGG16 weights, which cannot be downloaded here and
torchvision does not import beside this torch build. It is therefore optional: pass a
local torchvision-format state dict (``--vgg-weights vgg16.pth``) and the loss builds
the VGG16 feature layers itself (same module indices as torchvision's
``vgg16().features``, so the file's ``features.N.*`` keys fit) up to pool3. Without the
file the term is left out, and the run records that it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
