"""The main job: every stage of the toolkit on one model, one report.

``run_pipeline`` chains the stages' Python APIs: export (fp32, fixed shape) ->
quantize --mixed -> validate (fp32 vs mixed on held-out images) -> bench against the
peers (ORT fp32, the naive ORT mixed recipe, full int8). Each stage writes its own
artifacts into ``out_dir``; the pipeline collects their reports. Each stage runs in a
child process (``PipelineConfig.isolate_stages``), so that the job's peak memory is that
of its largest stage; this process imports neither PyTorch nor ONNX Runtime.

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

from .utils.isolate import run_isolated
from .utils.progress import bar


@dataclass
class PipelineConfig:
    out_dir: Path = Path("out")
    model: str = "mqnet"
    checkpoint: Path | None = None  # None: the shipped default
    random_init: bool = False
    height: int = 1088
    width: int = 1920
    work_scale: int = 1  # export --work-scale (MQNet; models.mqnet module doc)
    validate_images: int = 4  # held-out synthetic images for validate and bench fidelity
    bench_runs: int = 5
    threads: int = 2
    # Each stage in a child process (utils/isolate.py): the job's peak memory is that of
    # its largest stage, not that plus what earlier stages left behind. False: all in
    # this process (for debugging with --debug tracebacks).
    isolate_stages: bool = True


def discard(_message: str) -> None:
    """The default ``log``: say nothing (a module-level function, so children can take it)."""


def run_pipeline(config: PipelineConfig,
                 log: Callable[[str], None] = discard) -> dict[str, Any]:
    """Run every stage and return their report objects by stage name.

    ``log`` must be picklable (a module-level function) when stages are isolated.
    """
    def stage(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if config.isolate_stages:
            return run_isolated(function, *args, **kwargs)
        return function(*args, **kwargs)

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{config.model}-{config.height}x{config.width}"
    if config.work_scale != 1:
        stem += f"-s{config.work_scale}"
    reports: dict[str, Any] = {}
    with bar("pipeline", total=4, unit="stage") as stages:
        log(f"[1/4] export {config.model} at {config.height}x{config.width}")
        fp32, checkpoint, qat = stage(export_stage, config, out, stem)
        reports["export"] = fp32
        stages.update(1)
        if qat:  # nothing to calibrate: validate and bench the QDQ export
            stages.total = 3
            return _run_qat_pipeline(config, fp32, checkpoint, out, stage, log, stages.update)

        log("[2/4] quantize --mixed")
        mixed = stage(quantize_stage, Path(fp32.artifact), out / f"{stem}-mixed.onnx", log)
        reports["quantize"] = mixed
        stages.update(1)

        log("[3/4] validate fp32 vs mixed")
        reports["validate"] = stage(validate_stage, config, Path(mixed.artifact), out, log,
                                    fp32=Path(fp32.artifact))
        stages.update(1)

        log("[4/4] bench against the peers")
        # Peers built in a stage of their own: their calibration leaves ~1 GB of heap
        # that the benchmark's sessions would otherwise stack on.
        peers = stage(peers_stage, Path(fp32.artifact), Path(mixed.artifact), out, log)
        reports["bench"] = stage(bench_stage, config, peers, out, log)
        stages.update(1)
    return reports


def export_stage(config: PipelineConfig, out: Path, stem: str) -> tuple[Any, Path | None, bool]:
    """Export the checkpoint: fp32, or the int8 QDQ model of a quantization-aware one.

    Returns the export report, the checkpoint used (None: random init) and whether it is
    quantization-aware.
    """
    from .export import ExportConfig, export_model, resolve_checkpoint

    export_config = ExportConfig(
        output=out / f"{stem}-fp32.onnx", model=config.model, checkpoint=config.checkpoint,
        random_init=config.random_init, height=config.height, width=config.width,
        work_scale=config.work_scale)
    checkpoint = resolve_checkpoint(export_config)
    qat = checkpoint is not None and checkpoint_is_qat(checkpoint)
    if qat:
        export_config = dataclasses.replace(export_config, output=out / f"{stem}-qat.onnx")
    return export_model(export_config), checkpoint, qat


def quantize_stage(fp32: Path, output: Path, log: Callable[[str], None]) -> Any:
    from .quantize import QuantizeConfig, quantize_model

    return quantize_model(QuantizeConfig(model=fp32, output=output), progress=log)


def validate_stage(config: PipelineConfig, quantized: Path, out: Path,
                   log: Callable[[str], None], *, fp32: Path | None = None,
                   checkpoint: Path | None = None) -> Any:
    """Validate the quantized model against the fp32 export or the PyTorch checkpoint."""
    from .validate import ValidateConfig, validate

    return validate(ValidateConfig(fp32=fp32, checkpoint=checkpoint, quantized=quantized,
                                   count=config.validate_images,
                                   report=out / "validate-report.png",
                                   threads=config.threads), log)


def peers_stage(fp32: Path, mixed: Path, out: Path, log: Callable[[str], None]) -> list:
    """The rows of the benchmark: the peers, built from the fp32 export, and ``mixed``."""
    from .bench.peers import PeerConfig, build_peers

    return build_peers(PeerConfig(fp32=fp32, work_dir=out / "peers", mixed=mixed),
                       progress=log)


def bench_stage(config: PipelineConfig, specs: list, out: Path,
                log: Callable[[str], None]) -> BenchResult:
    """Bench the peers and the mixed model, one session at a time."""
    from .bench import BenchConfig, run_bench
    from .bench.fidelity import heldout_images

    count = config.validate_images
    # One session at a time: five 1088x1920 sessions held together need ~7 GB.
    rows = run_bench(BenchConfig(models=specs, threads=config.threads, runs=config.bench_runs,
                                 fidelity_images=count, sequential=True),
                     progress=log, images=lambda h, w: heldout_images(h, w, count))
    return _bench_result(config, rows, out)


def _bench_result(config: PipelineConfig, rows: list, out: Path) -> BenchResult:
    from .bench.chart import draw_chart

    title = f"itm-onnx pipeline: {config.threads} threads, median of {config.bench_runs} runs"
    return BenchResult(rows, draw_chart(rows, out / "bench.png", title))


def checkpoint_is_qat(checkpoint: Path) -> bool:
    from .checkpoint import read_checkpoint_metadata

    config = json.loads(read_checkpoint_metadata(checkpoint).get("config", "{}"))
    return bool(config.get("qat", False))


def _run_qat_pipeline(config: PipelineConfig, qat: Any, checkpoint: Path, out: Path,
                      stage: Callable[..., Any], log: Callable[[str], None],
                      advance: Callable[[int], Any]) -> dict[str, Any]:
    """(export done: QDQ, exact) -> validate against PyTorch fake-quant -> bench it alone."""
    log("[2/3] validate PyTorch fake-quant vs the QDQ export (quantization-aware: "
        "nothing to calibrate)")
    reports: dict[str, Any] = {"export": qat}
    reports["validate"] = stage(validate_stage, config, Path(qat.artifact), out, log,
                                checkpoint=checkpoint)
    advance(1)
    log("[3/3] bench (no fp32 model to build peers from)")
    reports["bench"] = stage(qat_bench_stage, config, Path(qat.artifact), out, log)
    advance(1)
    return reports


def qat_bench_stage(config: PipelineConfig, qat: Path, out: Path,
                    log: Callable[[str], None]) -> BenchResult:
    from .bench import BenchConfig, ModelSpec, run_bench

    rows = run_bench(BenchConfig(models=[ModelSpec("qat int8", qat)], threads=config.threads,
                                 runs=config.bench_runs), progress=log)
    return _bench_result(config, rows, out)


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
