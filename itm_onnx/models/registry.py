"""Model registry: variants registered by name, built by one entry point.

A variant is a few lines that name a family's config; adding one never touches the
builder (the timm pattern)::

    @register_model("mqnet-sa", MQNetConfig, attention="sa")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ItmOnnxError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def make_config(self, **overrides: Any) -> Any:
        known = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ItmOnnxError(
                f"unknown option(s) for model {self.name!r}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        try:
            return self.config_cls(**{**self.defaults, **overrides})
        except (TypeError, ValueError) as exc:
            raise ItmOnnxError(f"invalid configuration for model {self.name!r}: {exc}") from None


_REGISTRY: dict[str, ModelEntry] = {}


def qat_aware(model_cls: type[nn.Module]) -> Callable[[Any], nn.Module]:
    """A builder: ``model_cls(config)``, turned into its QAT structure when ``config.qat``.

    So a QAT checkpoint (whose stored config says ``qat``) rebuilds the fake-quant model.
    """

    def build(config: Any) -> nn.Module:
        model = model_cls(config)
        if getattr(config, "qat", False):
            from ..train.qat import prepare_qat  # deferred: the training package imports models

            model = prepare_qat(model)
        return model

    return build


def register_model(name: str, config_cls: type, builder: Callable[[Any], nn.Module],
                   description: str = "", **defaults: Any) -> None:
    """Register variant ``name``: ``builder(config_cls(**defaults, **overrides))``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, config_cls, builder, defaults, description)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ItmOnnxError(
            f"unknown model {name!r}; available: {', '.join(list_models())}"
        ) from None


def create_model(name: str, checkpoint: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally with the weights of an itm-onnx checkpoint.

    With a checkpoint, its stored config is used (``overrides`` may only change options
    that do not alter the architecture, or the weights will not fit and loading fails
    with a message naming the mismatch). The model is returned in eval mode when loaded.
    """
    entry = get_entry(name)
    if checkpoint is None:
        model = entry.builder(entry.make_config(**overrides))
        model.variant = name
        return model
    from ..checkpoint import load_checkpoint  # deferred: checkpoint imports safetensors

    ckpt = load_checkpoint(checkpoint)
    if ckpt.model_name != name:
        raise CheckpointError(
            f"{checkpoint}: checkpoint holds model {ckpt.model_name!r}, not {name!r}"
        )
    model = entry.builder(entry.make_config(**{**ckpt.config, **overrides}))
    ckpt.load_into(model, source=str(checkpoint))
    model.variant = name
    return model.eval()
