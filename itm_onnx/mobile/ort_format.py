"""The `.ort` format: ``convert_onnx_models_to_ort`` into place, then each file loaded
and compared with the `.onnx` on probe inputs."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import ItmOnnxError, UsageError
from .coverage import first_line, quiet_ort_tools

ORT_STYLES = ("Fixed", "Runtime")


@dataclass
class OrtArtifact:
    """One converted .ort file and whether it behaves like the .onnx."""

    path: str
    style: str
    size_bytes: int
    loads: bool
    max_abs_diff: float | None = None
    matches: bool = False
    error: str | None = None



def convert_to_ort(model_path: Path, out_dir: Path, styles: tuple[str, ...] = ORT_STYLES,
                   target_platform: str | None = "arm"
                   ) -> tuple[list[tuple[str, Path]], list[Path]]:
    """Run ``convert_onnx_models_to_ort``; return ((style, .ort path), ...) and its configs
    (the operators a minimal ORT build needs).

    The converter writes beside its input or into a folder; it runs here in a staging
    folder inside ``out_dir`` and its files are then renamed into place, so ``out_dir``
    never holds a half-written .ort.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    unknown = [s for s in styles if s not in ORT_STYLES]
    if unknown:
        raise UsageError(f"unknown .ort optimization style {unknown[0]!r}; use {ORT_STYLES}")
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        raise UsageError(f"folder {out_dir.parent} (for the .ort output) does not exist")
    out_dir.mkdir(exist_ok=True)  # a folder of its own, like the converter's --output_dir
    with tempfile.TemporaryDirectory(prefix=".itm-onnx-ort-", dir=out_dir) as stage:
        source = Path(stage) / "in" / Path(model_path).name
        source.parent.mkdir()
        shutil.copyfile(model_path, source)  # the converter processes its input's folder
        try:
            with quiet_ort_tools():
                convert_onnx_models_to_ort(
                    source, output_dir=Path(stage) / "out",
                    optimization_styles=[OptimizationStyle[s] for s in styles],
                    target_platform=target_platform)
        except Exception as exc:
            raise ItmOnnxError(f"conversion to .ort failed: {first_line(exc)}") from None
        produced = sorted((Path(stage) / "out").iterdir())
        for path in produced:
            os.replace(path, out_dir / path.name)
    stem = Path(model_path).stem
    converted = []
    for style in styles:
        suffix = ".with_runtime_opt.ort" if style == "Runtime" else ".ort"
        converted.append((style, out_dir / f"{stem}{suffix}"))
    return converted, [out_dir / p.name for p in produced if p.suffix == ".config"]


def probe_inputs(model: onnx.ModelProto, seed: int = 0, default_side: int = 64
                 ) -> list[dict[str, np.ndarray]]:
    """Two float inputs per graph input (uniform noise, flat grey); dynamic dims -> 64."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds_noise, feeds_grey = {}, {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                 else (1 if i == 0 else default_side) for i, d in enumerate(dims)]
        feeds_noise[value.name] = rng.random(shape, dtype=np.float32)
        feeds_grey[value.name] = np.full(shape, 0.5, np.float32)
    return [feeds_noise, feeds_grey]


def verify_ort(onnx_path: Path, converted: list[tuple[str, Path]], tolerance: float,
               seed: int = 0) -> list[OrtArtifact]:
    """Load each .ort in an InferenceSession and compare its output with the .onnx."""
    import onnxruntime as ort

    reference = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = probe_inputs(onnx.load(str(onnx_path), load_external_data=False), seed)
    expected = [reference.run(None, f) for f in feeds]
    results = []
    for style, path in converted:
        artifact = OrtArtifact(path=str(path), style=style, loads=False,
                               size_bytes=path.stat().st_size if path.exists() else 0)
        options = ort.SessionOptions()
        if style == "Runtime":
            # Replay the saved optimizations, as a full build should: without them the
            # model runs at the basic level, i.e. a QDQ model's float reference semantics,
            # not the int8 kernels the .onnx gets by default (measured: 0.7 apart on a
            # model quantized without reduce_range, whose x86 u8s8 kernels saturate).
            options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            artifact.loads = True
            got = [session.run(None, f) for f in feeds]
        except Exception as exc:
            artifact.error = first_line(exc)
            results.append(artifact)
            continue
        artifact.max_abs_diff = max(float(np.abs(a - b).max())
                                    for want, have in zip(expected, got, strict=True)
                                    for a, b in zip(want, have, strict=True))
        artifact.matches = artifact.max_abs_diff <= tolerance
        results.append(artifact)
    return results
