"""itm-onnx: inverse tone mapping networks from PyTorch to fast, faithful ONNX artifacts.

The package follows the pipeline: ``checkpoint`` -> ``models`` (PyTorch) -> ``export``
(fp32 ONNX) -> quantization -> validation and benchmark reports. ``itm_onnx.cli`` is a
thin Click layer over these modules.
"""

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402
from .runner import Runner  # noqa: E402

__all__ = ["Runner", "__version__", "create_model", "list_models"]
