"""itm-onnx: inverse tone mapping networks from PyTorch to fast, faithful ONNX artifacts.

The package follows the pipeline: ``checkpoint`` -> ``models`` (PyTorch) -> ``export``
(fp32 ONNX) -> quantization -> validation and benchmark reports. ``itm_onnx.cli`` is a
thin Click layer over these modules.

The public names below load on first use (PEP 562): importing the package, or starting
the CLI, does not import PyTorch and ONNX Runtime, which a process that only runs ONNX
models, or only prints ``--help``, does not need (they cost seconds and ~0.25 GB).
"""

__version__ = "0.1.0"

_LAZY = {"create_model": "models", "list_models": "models", "Runner": "runner"}

__all__ = ["Runner", "__version__", "create_model", "list_models"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
