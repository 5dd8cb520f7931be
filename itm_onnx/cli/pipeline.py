"""`itm-onnx pipeline`: the main job on the shipped default model."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline import PipelineConfig, run_pipeline
from .common import emit, json_option, progress
from .export import print_export_report

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
@json_option
def pipeline_command(out_dir, model_name, checkpoint, random_init, height, width, as_json):
    """Run the whole toolkit on one model: export and report.

    \b
    Example:
      itm-onnx pipeline --out-dir out
    """
    reports = run_pipeline(
        PipelineConfig(out_dir=out_dir, model=model_name, checkpoint=checkpoint,
                       random_init=random_init, height=height, width=width),
        log=progress,
    )
    emit(reports, as_json, lambda r: _print(r))


def _print(reports):
    from ..export import ExportReport

    print_export_report(ExportReport(**reports["export"]))
