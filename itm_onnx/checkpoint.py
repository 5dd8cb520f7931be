"""Stage 1 of the pipeline: the checkpoint file format.

One format, version ``FORMAT_VERSION``: a safetensors file (no pickle, so loading one
cannot run code) whose header metadata holds

- ``format``: ``"itm-onnx-checkpoint"``
- ``format_version``: an integer, as a string
- ``model``: the registry name (``"mqnet"``, ...)
- ``config``: the model config dataclass as JSON
- ``info``: free-form provenance as JSON (training command, seed, steps, figures)

and whose tensors are the model's ``state_dict``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError
from .utils.atomic import atomic_output

FORMAT_NAME = "itm-onnx-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model_name: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def load_into(self, model: nn.Module, source: str = "checkpoint") -> None:
        """Load the weights, or fail naming the keys or shapes that do not fit."""
        expected = model.state_dict()
        missing = sorted(set(expected) - set(self.state_dict))
        unexpected = sorted(set(self.state_dict) - set(expected))
        wrong_shape = sorted(
            k for k in set(expected) & set(self.state_dict)
            if expected[k].shape != self.state_dict[k].shape
        )
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                problems.append(f"{label}: {shown}")
        if problems:
            raise CheckpointError(
                f"{source}: weights do not fit model {self.model_name!r} "
                f"({'; '.join(problems)})"
            )
        model.load_state_dict(self.state_dict)


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str | None = None,
                    info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (which must carry ``.config``) as an itm-onnx checkpoint, atomically."""
    name = model_name or getattr(model, "variant", None)
    if name is None:
        raise CheckpointError("save_checkpoint needs a model name (model.variant is not set)")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "model": name,
        "config": json.dumps(dataclasses.asdict(model.config), sort_keys=True),
        "info": json.dumps(info or {}, sort_keys=True),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a checkpoint, validated, without loading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable itm-onnx checkpoint (safetensors: {exc})"
        ) from None
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an itm-onnx checkpoint (no '{FORMAT_NAME}' header)")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: checkpoint has no valid format_version") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported "
            f"(this itm-onnx reads version {FORMAT_VERSION})"
        )
    return metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raises ``CheckpointError`` with one line on any problem."""
    metadata = read_checkpoint_metadata(path)
    try:
        config = json.loads(metadata["config"])
        info = json.loads(metadata.get("info", "{}"))
        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except (KeyError, json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None
    return Checkpoint(metadata["model"], config, state, info, int(metadata["format_version"]))
