"""``quantize --mixed --sensitivity`` and ``--min-psnr DB``: glue between ``quantize_model``
and the study modules (:mod:`.sensitivity`, :mod:`.search`, :mod:`.charts`).

Takes what ``quantize_model`` already has (the float models, the cached ranges, the
calibration images, the built QDQ model) and returns the model to write, the report
sections and the charts; it never calibrates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .calibration import CalibrationImages, fit_to_shape
from .charts import sensitivity_chart, tradeoff_chart
from .schemes import QuantOptions
from .search import SearchConfig, SearchInputs, search
from .sensitivity import SensitivityConfig, analyse


@dataclass
class StudyRequest:
    sensitivity: bool = False  # the per-tensor study, its report section and chart
    min_psnr: float | None = None  # search the cheapest mixed configuration reaching it
    images: int = 4  # calibration images the study and the search measure on


@dataclass
class StudyResult:
    model: onnx.ModelProto  # the built model, or the search's choice
    sensitivity: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    charts: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def chart_paths(output: Path) -> tuple[Path, Path]:
    """NAME.sensitivity.png and NAME.tradeoff.png beside the artifact."""
    output = Path(output)
    return output.with_suffix(".sensitivity.png"), output.with_suffix(".tradeoff.png")


def run_study(request: StudyRequest, *, reference: Path, float_model: Path, ranges: Path,
              method: str, options: QuantOptions, built: onnx.ModelProto,
              images: CalibrationImages, shape: tuple[int, int], input_name: str,
              session_options: dict[str, Any], work: Path, output: Path,
              progress=lambda _: None) -> StudyResult:
    """Sensitivity study of ``built`` and, with ``min_psnr``, the search; writes the charts."""
    count = min(request.images, len(images.rgb))
    feeds = [{input_name: fit_to_shape(rgb, *shape)[0]} for rgb in images.rgb[:count]]
    progress(f"sensitivity study on {count} calibration image(s) at {shape[0]}x{shape[1]}")
    study = analyse(built, reference, feeds, SensitivityConfig())
    result = StudyResult(model=built, sensitivity=study.to_dict())
    sens_png, trade_png = chart_paths(output)
    name = Path(output).name
    sensitivity_chart(study, sens_png, f"{name}: sensitivity of each quantized tensor")
    result.charts.append(str(sens_png))
    if request.min_psnr is None:
        return result
    progress(f"searching the cheapest mixed configuration reaching {request.min_psnr} dB")
    inputs = SearchInputs(float_model=float_model, reference=Path(reference).read_bytes(),
                          ranges=ranges, method=method, options=options, feeds=feeds,
                          session_options=session_options, work=work)
    model, report = search(inputs, study, SearchConfig(target_db=request.min_psnr),
                           progress=progress)
    tradeoff_chart(report, trade_png, f"{name}: output PSNR vs latency, target "
                   f"{request.min_psnr} dB")
    result.charts.append(str(trade_png))
    result.model, result.search = model, report.to_dict()
    result.metadata = {"mixed_search": {"target_db": request.min_psnr,
                                        "reached": report.reached, **report.chosen}}
    return result


__all__ = ["StudyRequest", "StudyResult", "chart_paths", "run_study"]
