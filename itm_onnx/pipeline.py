"""The main job: every stage of the toolkit on one model, one report.

``run_pipeline`` chains the stages' Python APIs: export (fp32, fixed shape) ->
quantize --mixed -> validate (fp32 vs mixed on held-out images) -> bench against the
peers (ORT fp32, the naive ORT mixed recipe, full int8). Each stage writes its own
artifacts into ``out_dir``; the pipeline collects their reports.

A quantization-aware checkpoint (such as the shipped ``gated-unet-c12``) exports straight
to its int8 QDQ model, so there is nothing to calibrate and no fp32 model to build peers
from: the pipeline then validates the export against the PyTorch fake-quant model and
benchmarks it alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import read_checkpoint_metadata
from .export import ExportConfig, export_model, resolve_checkpoint
from .utils.memory import release_freed_memory
from .utils.progress import bar


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
    export_config = ExportConfig(
        output=out / f"{stem}-fp32.onnx", model=config.model, checkpoint=config.checkpoint,
        random_init=config.random_init, height=config.height, width=config.width)
    checkpoint = resolve_checkpoint(export_config)
    if checkpoint is not None and checkpoint_is_qat(checkpoint):
        return _run_qat_pipeline(config, export_config, checkpoint, out, stem, log)

    with bar("pipeline", total=4, unit="stage") as stages:
        log(f"[1/4] export {config.model} at {config.height}x{config.width}")
        fp32 = export_model(export_config)
        reports["export"] = fp32
        release_freed_memory()
        stages.update(1)

        log("[2/4] quantize --mixed")
        mixed = quantize_model(QuantizeConfig(model=Path(fp32.artifact),
                                              output=out / f"{stem}-mixed.onnx"), progress=log)
        reports["quantize"] = mixed
        release_freed_memory()
        stages.update(1)

        log("[3/4] validate fp32 vs mixed")
        fidelity = validate(ValidateConfig(fp32=Path(fp32.artifact),
                                           quantized=Path(mixed.artifact),
                                           count=config.validate_images,
                                           report=out / "validate-report.png",
                                           threads=config.threads), log)
        reports["validate"] = fidelity
        release_freed_memory()
        stages.update(1)

        log("[4/4] bench against the peers")
        peers = build_peers(PeerConfig(fp32=Path(fp32.artifact), work_dir=out / "peers",
                                       build_mixed=False), progress=log)
        release_freed_memory()
        specs = peers[:3] + [ModelSpec("mixed (itm-onnx)", Path(mixed.artifact))] + peers[3:]
        count = config.validate_images
        # One session at a time: five 1088x1920 sessions held together need ~7 GB.
        rows = run_bench(BenchConfig(models=specs, threads=config.threads,
                                     runs=config.bench_runs, fidelity_images=count,
                                     sequential=True),
                         progress=log, images=lambda h, w: heldout_images(h, w, count))
        title = f"itm-onnx pipeline: {config.threads} threads, median of {config.bench_runs} runs"
        reports["bench"] = BenchResult(rows, draw_chart(rows, out / "bench.png", title))
        stages.update(1)
    return reports


def checkpoint_is_qat(checkpoint: Path) -> bool:
    config = json.loads(read_checkpoint_metadata(checkpoint).get("config", "{}"))
    return bool(config.get("qat", False))


def _run_qat_pipeline(config: PipelineConfig, export_config: ExportConfig, checkpoint: Path,
                      out: Path, stem: str, log: Callable[[str], None]) -> dict[str, Any]:
    """export (QDQ, exact) -> validate against PyTorch fake-quant -> bench the model alone."""
    from .bench import BenchConfig, ModelSpec, run_bench
    from .bench.chart import draw_chart
    from .validate import ValidateConfig, validate

    reports: dict[str, Any] = {}
    log(f"[1/3] export {config.model} at {config.height}x{config.width} "
        "(quantization-aware: the export is the int8 QDQ model; no calibration)")
    qat = export_model(dataclasses.replace(export_config, output=out / f"{stem}-qat.onnx"))
    reports["export"] = qat
    log("[2/3] validate PyTorch fake-quant vs the QDQ export")
    reports["validate"] = validate(ValidateConfig(
        checkpoint=checkpoint, quantized=Path(qat.artifact), count=config.validate_images,
        report=out / "validate-report.png", threads=config.threads), log)
    log("[3/3] bench (no fp32 model to build peers from)")
    rows = run_bench(BenchConfig(models=[ModelSpec("qat int8", Path(qat.artifact))],
                                 threads=config.threads, runs=config.bench_runs),
                     progress=log)
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
