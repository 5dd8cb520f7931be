"""The peer a mobile developer might pick instead of ONNX Runtime: LiteRT with XNNPACK.

Optional (``pip install '.[litert]'``: litert-torch, ai-edge-quantizer, ai-edge-litert;
heavy, as they bring jax and transformers). From the same checkpoint as the ONNX
export:

- ``litert fp32``: ``litert_torch.convert(model, (x,))`` at the benchmark size;
- ``litert static int8``: ai-edge-quantizer's ``static_wi8_ai8`` recipe (int8 weights
  and activations), calibrated on the first :data:`CALIBRATION_IMAGES` images of the
  calibration folder as the ONNX peers are (fitted to the size the same way);
- ``litert dynamic-range int8``: its ``dynamic_wi8_afp32`` recipe (int8 weights,
  float activations; no calibration).

They run in ``ai_edge_litert``'s interpreter, whose default op resolver applies the
XNNPACK delegate, with the benchmark's thread count, in the same alternating run as the
ONNX models. Built files are cached (keyed by checkpoint, size, recipe and package
versions) under the itm-onnx cache, since conversion takes about a minute at
1088x1920. When the packages are missing, the rows say how to get them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ItmOnnxError
from ..utils.atomic import atomic_output

log = logging.getLogger(__name__)

PACKAGES = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert")
INSTALL_HINT = "LiteRT peers need the optional extra: pip install '.[litert]'"
CALIBRATION_IMAGES = 8
VARIANTS = {  # label -> ai-edge-quantizer recipe (None: the float conversion)
    "litert fp32 (XNNPACK)": None,
    "litert static int8 (XNNPACK)": "static_wi8_ai8",
    "litert dynamic-range int8 (XNNPACK)": "dynamic_wi8_afp32",
}


def missing_packages() -> list[str]:
    """The LiteRT packages this environment lacks (empty: all there)."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _versions() -> str:
    return ",".join(f"{n}={importlib.metadata.version(n)}" for n in PACKAGES)


def build_litert_models(checkpoint: Path, model_name: str, size: tuple[int, int],
                        calibration: list[np.ndarray], cache_dir: Path,
                        progress: Callable[[str], None] = lambda _: None
                        ) -> dict[str, Path]:
    """label -> .tflite for every variant (cached). ``calibration``: NCHW float32 inputs."""
    checkpoint = Path(checkpoint)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    key = hashlib.sha256(f"{digest}|{model_name}|{size}|{_versions()}".encode()).hexdigest()
    folder = Path(cache_dir) / key[:16]
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "fp32.tflite"
    if not fp32.is_file():
        progress(f"converting {checkpoint.name} to LiteRT at {size[0]}x{size[1]} (litert-torch)")
        with _stdout_to_stderr():  # its progress lines would corrupt `bench --json`
            _convert(checkpoint, model_name, size, fp32)
    built = {}
    for label, recipe in VARIANTS.items():
        if recipe is None:
            built[label] = fp32
            continue
        calib_key = hashlib.sha256(b"".join(x.tobytes() for x in calibration)).hexdigest()[:12]
        path = folder / (f"{recipe}-{calib_key}.tflite" if recipe.startswith("static")
                         else f"{recipe}.tflite")
        if not path.is_file():
            progress(f"quantizing the LiteRT model: {recipe} (ai-edge-quantizer)")
            with _stdout_to_stderr():
                _quantize(fp32, recipe, calibration, path)
        built[label] = path
    return built


def _stdout_to_stderr():
    """The converter and quantizer print progress on stdout: send it to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def _convert(checkpoint: Path, model_name: str, size: tuple[int, int], output: Path) -> None:
    import litert_torch
    import torch

    from ..models import create_model

    model = create_model(model_name, checkpoint=checkpoint).eval()
    sample = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        edge = litert_torch.convert(model, (sample,))
    except Exception as exc:  # the converter raises many kinds; one line is enough
        raise ItmOnnxError(f"litert-torch cannot convert {checkpoint}: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    with atomic_output(output) as tmp:
        edge.export(str(tmp))


def _quantize(fp32: Path, recipe_name: str, calibration: list[np.ndarray],
              output: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(getattr(recipe, recipe_name)())
    try:
        if recipe_name.startswith("static"):
            signature, name = _signature(fp32)
            result = qt.calibrate({signature: [{name: x} for x in calibration]})
            quantized = qt.quantize(result)
        else:
            quantized = qt.quantize()
    except Exception as exc:
        raise ItmOnnxError(f"ai-edge-quantizer {recipe_name} failed: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    with atomic_output(output) as tmp:
        quantized.export_model(str(tmp), overwrite=True)


def _signature(path: Path) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


class LiteRTRunner:
    """A .tflite model in the LiteRT interpreter (XNNPACK), NCHW float in and out; int8
    inputs and outputs are (de)quantized with the model's own scale and zero point."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _to(self.input, x))
        self.interpreter.invoke()
        return _from(self.output, self.interpreter.get_tensor(self.output["index"]))


def _to(detail: dict[str, Any], x: np.ndarray) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _from(detail: dict[str, Any], y: np.ndarray) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer):
        scale, zero_point = detail["quantization"]
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y.astype(np.float32, copy=False)
