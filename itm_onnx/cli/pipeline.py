"""`itm-onnx pipeline`: the main job on the shipped default model."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline import PipelineConfig, reports_to_dict, run_pipeline
from .common import emit, json_option, progress

DEFAULTS = PipelineConfig()


@click.command("pipeline")
@click.option("--out-dir", type=click.Path(path_type=Path), default=DEFAULTS.out_dir,
              show_default=True, help="Folder for all artifacts and reports.")
@click.option("--model", "model_name", default=DEFAULTS.model, show_default=True,
              help="Registered model name.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Checkpoint to use instead of the shipped one.")
@click.option("--random-init", is_flag=True, help="Use untrained weights (for trying the tool).")
@click.option("--height", type=int, default=DEFAULTS.height, show_default=True,
              help="Fixed input height of the mobile artifact (multiple of 32).")
@click.option("--width", type=int, default=DEFAULTS.width, show_default=True,
              help="Fixed input width (multiple of 32).")
# models.mqnet.WORK_SCALES, written out: the job's own process never imports torch.
@click.option("--work-scale", type=click.Choice(["1", "2", "4", "8"]), default="1",
              show_default=True,
              help="MQNet's working scale (see `itm-onnx export --help`): the network on the "
                   "photo pooled by this factor, its residual applied at full resolution.")
@click.option("--runs", type=click.IntRange(1), default=DEFAULTS.bench_runs, show_default=True,
              help="Timed runs per model in the benchmark (after warm-up).")
@click.option("--threads", type=click.IntRange(1), default=DEFAULTS.threads, show_default=True,
              help="Intra-op threads for validation and the benchmark.")
@json_option
def pipeline_command(out_dir, model_name, checkpoint, random_init, height, width, work_scale,
                     runs, threads, as_json):
    """Run the whole toolkit on one model and print the comparison table.

    export (fp32, fixed shape, parity-checked) -> quantize --mixed -> validate (fp32 vs
    mixed on held-out synthetic images) -> bench against ORT fp32, the naive ORT mixed
    recipe and full int8, alternating in one process. Artifacts, reports, the validation
    image and the latency/memory chart go to --out-dir.

    \b
    Example:
      itm-onnx pipeline --out-dir out
      itm-onnx pipeline --height 512 --width 512 --json
      itm-onnx pipeline --work-scale 2 --out-dir out-s2
    """
    reports = run_pipeline(
        PipelineConfig(out_dir=out_dir, model=model_name, checkpoint=checkpoint,
                       random_init=random_init, height=height, width=width,
                       work_scale=int(work_scale), bench_runs=runs, threads=threads),
        log=progress,
    )
    emit(reports_to_dict(reports), as_json, lambda _: _print(reports))


def _print(reports):
    from .bench import print_table
    from .export import print_export_report
    from .quantize import print_quantize_report
    from .validate import print_validate_report

    for stage, printer in (("export", print_export_report), ("quantize", print_quantize_report),
                           ("validate", print_validate_report)):
        if stage in reports:  # a QAT checkpoint has no quantize stage
            click.echo(f"== {stage}")
            printer(reports[stage])
    click.echo("== bench")
    print_table(reports["bench"].rows)
    click.echo(f"chart: {reports['bench'].chart}")
