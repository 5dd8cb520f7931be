"""Where the project's shipped files live (default checkpoints, calibration images)."""

from __future__ import annotations

import os
from pathlib import Path

# Registry name -> file name of its shipped checkpoint in models/. The gated network ships
# quantization-aware (its export is the int8 QDQ model); its float parent ships beside it
# as gated-unet-c12-float.safetensors, for comparisons.
DEFAULT_CHECKPOINTS = {"mqnet": "mqnet.safetensors",
                       "gated-unet-c12": "gated-unet-c12.safetensors"}


def project_root() -> Path:
    """The folder holding ``models/`` and ``calibration/``.

    ``ITM_ONNX_HOME`` wins; otherwise the checkout this package was installed from
    (editable install, as the README does), else the current directory.
    """
    env = os.environ.get("ITM_ONNX_HOME")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "models").is_dir():
        return checkout
    return Path.cwd()


def default_checkpoint(model_name: str) -> Path | None:
    """The shipped checkpoint for ``model_name``, or None if none ships (yet)."""
    name = DEFAULT_CHECKPOINTS.get(model_name)
    if name is None:
        return None
    path = project_root() / "models" / name
    return path if path.is_file() else None


def default_calibration_dir() -> Path:
    return project_root() / "calibration"
