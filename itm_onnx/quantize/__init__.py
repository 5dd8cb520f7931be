"""Stage 3: fp32 ONNX -> mixed-precision QDQ ONNX, built with ONNX Runtime's quantizer.

- :mod:`.calibration`: calibration images -> activation ranges, cached.
- :mod:`.rewrite`: exact-in-float graph rewrites applied before calibration.
- :mod:`.schemes`: mixed / full-int8 / a16w8-head: which node gets which precision.
- :mod:`.report`: what the quantized graph contains and per-tensor error.
- :mod:`.api`: ``quantize_model(QuantizeConfig)``, the entry point.
- :mod:`.sensitivity`, :mod:`.ptq`, :mod:`.search`, :mod:`.charts`, :mod:`.study`:
  ``--sensitivity`` and ``--min-psnr`` (which tensors cost fidelity; refinements of the
  int8 backbone; the cheapest mixed configuration reaching a target).
"""

from .api import (
    QuantizeConfig,
    QuantizeReport,
    code_error_summary,
    codes10,
    default_cache_dir,
    quantize_model,
    report_path,
)
from .calibration import DEFAULT_DYNAMIC_SIZE, METHODS, CalibrationSettings
from .rewrite import HEAD_REWRITES, KNOWN_REWRITES, REWRITES
from .schemes import SCHEMES, QuantOptions

__all__ = [
    "DEFAULT_DYNAMIC_SIZE",
    "HEAD_REWRITES",
    "KNOWN_REWRITES",
    "METHODS",
    "REWRITES",
    "SCHEMES",
    "CalibrationSettings",
    "QuantOptions",
    "QuantizeConfig",
    "QuantizeReport",
    "code_error_summary",
    "codes10",
    "default_cache_dir",
    "quantize_model",
    "report_path",
]
