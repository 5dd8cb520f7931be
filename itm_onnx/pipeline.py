"""The main job: every stage of the toolkit on one model, one report.

``run_pipeline`` chains the stages' Python APIs; each stage writes its own artifact into
``out_dir`` and the pipeline collects their reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .export import ExportConfig, export_model


@dataclass
class PipelineConfig:
    out_dir: Path = Path("out")
    model: str = "mqnet"
    checkpoint: Path | None = None  # None: the shipped default
    random_init: bool = False
    height: int = 1088
    width: int = 1920


def run_pipeline(config: PipelineConfig,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run export (and the later stages) and return their reports by stage name."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    reports: dict[str, Any] = {}
    log(f"[1/1] export {config.model} at {config.height}x{config.width}")
    fp32 = export_model(ExportConfig(
        output=config.out_dir / f"{config.model}-{config.height}x{config.width}-fp32.onnx",
        model=config.model, checkpoint=config.checkpoint, random_init=config.random_init,
        height=config.height, width=config.width,
    ))
    reports["export"] = fp32.to_dict()
    return reports
