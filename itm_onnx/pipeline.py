"""The main job: every stage of the toolkit on one model, one report.

``run_pipeline`` chains the stages' Python APIs: export (fp32, fixed shape) ->
quantize --mixed -> validate (fp32 vs mixed on held-out images) -> bench against the
peers (ORT fp32, the naive ORT mixed recipe, full int8). Each stage writes its own
artifacts into ``out_dir``; the pipeline collects their reports.
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
    validate_images: int = 4  # held-out synthetic images for validate and bench fidelity
    bench_runs: int = 5
    threads: int = 2


def run_pipeline(config: PipelineConfig,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every stage and return their report objects by stage name."""
    from .bench import BenchConfig, ModelSpec, run_bench
    from .bench.chart import draw_chart
    from .bench.fidelity import heldout_images
    from .bench.peers import PeerConfig, build_peers
    from .quantize import QuantizeConfig, quantize_model
    from .validate import ValidateConfig, validate

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{config.model}-{config.height}x{config.width}"
    reports: dict[str, Any] = {}

    log(f"[1/4] export {config.model} at {config.height}x{config.width}")
    fp32 = export_model(ExportConfig(
        output=out / f"{stem}-fp32.onnx", model=config.model, checkpoint=config.checkpoint,
        random_init=config.random_init, height=config.height, width=config.width,
    ))
    reports["export"] = fp32

    log("[2/4] quantize --mixed")
    mixed = quantize_model(QuantizeConfig(model=Path(fp32.artifact),
                                          output=out / f"{stem}-mixed.onnx"))
    reports["quantize"] = mixed

    log("[3/4] validate fp32 vs mixed")
    fidelity = validate(ValidateConfig(fp32=Path(fp32.artifact), quantized=Path(mixed.artifact),
                                       count=config.validate_images,
                                       report=out / "validate-report.png",
                                       threads=config.threads), log)
    reports["validate"] = fidelity

    log("[4/4] bench against the peers")
    peers = build_peers(PeerConfig(fp32=Path(fp32.artifact), work_dir=out / "peers",
                                   build_mixed=False), progress=log)
    specs = peers[:3] + [ModelSpec("mixed (itm-onnx)", Path(mixed.artifact))] + peers[3:]
    count = config.validate_images
    rows = run_bench(BenchConfig(models=specs, threads=config.threads, runs=config.bench_runs,
                                 fidelity_images=count),
                     progress=log, images=lambda h, w: heldout_images(h, w, count))
    title = f"itm-onnx pipeline: {config.threads} threads, median of {config.bench_runs} runs"
    reports["bench"] = BenchResult(rows, draw_chart(rows, out / "bench.png", title))
    return reports


@dataclass
class BenchResult:
    rows: list  # itm_onnx.bench.Row
    chart: Path

    def to_dict(self) -> dict[str, Any]:
        from .bench import rows_to_dicts

        return {"rows": rows_to_dicts(self.rows), "chart": str(self.chart)}


def reports_to_dict(reports: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's reports as plain data (for --json)."""
    return {stage: report.to_dict() for stage, report in reports.items()}
