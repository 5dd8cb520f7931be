"""`itm-onnx export`: PyTorch checkpoint -> fp32 ONNX with parity proven."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import ExportConfig, ExportReport, export_model
from ..models import list_models
from ..models.mqnet import WORK_SCALES
from .common import emit, json_option, progress

DEFAULTS = ExportConfig()


def print_export_report(report: ExportReport) -> None:
    parity = report.parity
    click.echo(f"wrote {report.artifact} (sha256 {report.sha256[:16]}...)")
    click.echo(f"  model {report.model}, {report.parameters:,} parameters, opset {report.opset}, "
               f"input {report.input_shape}" + (" [RANDOM INIT]" if report.random_init else ""))
    click.echo(f"  nodes: {sum(report.node_counts.values())} "
               f"({', '.join(f'{k} {v}' for k, v in report.parts.items())})")
    click.echo(f"  parity PyTorch vs ORT CPU: max abs error {parity['max_abs_error']:.2e} "
               f"(tolerance {parity['tolerance']:g}) over {len(parity['per_input'])} inputs")
    click.echo(f"  model card {report.model_card}; {report.export_seconds:.1f} s")


def size_options(func):
    func = click.option("--width", type=int, default=DEFAULTS.width, show_default=True,
                        help="Fixed input width (multiple of 32).")(func)
    func = click.option("--height", type=int, default=DEFAULTS.height, show_default=True,
                        help="Fixed input height (multiple of 32).")(func)
    return func


@click.command("export")
@click.option("--model", "model_name", type=click.Choice(list_models()), default=DEFAULTS.model,
              show_default=True, help="Registered model name.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="itm-onnx checkpoint (.safetensors); default: the shipped model.")
@click.option("--random-init", is_flag=True,
              help="Export untrained weights (the artifact is marked random_init).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=DEFAULTS.output,
              show_default=True, help="Where to write the .onnx (model card beside it).")
@size_options
@click.option("--dynamic", is_flag=True, help="Dynamic height/width instead of a fixed shape.")
@click.option("--opset", type=click.IntRange(18, 23), default=DEFAULTS.opset, show_default=True,
              help="ONNX opset.")
@click.option("--instancenorm", type=click.Choice(["decomposed", "native"]),
              default=DEFAULTS.instancenorm, show_default=True,
              help="How InstanceNorm is written: decomposed (precise on ORT CPU, NNAPI-ready "
                   "basic ops) or native (one InstanceNormalization op).")
@click.option("--work-scale", type=click.Choice([str(s) for s in WORK_SCALES]), default="1",
              show_default=True,
              help="MQNet only: run the network on the photo average-pooled by this factor "
                   "and apply its bilinearly upsampled residual at full resolution (sides "
                   "must be multiples of 32 x the factor). The shipped weights score best "
                   "at 192-256 pixels: 4 for a 1024-pixel photo.")
@click.option("--tolerance", type=float, default=None,
              help="Max |PyTorch - ORT| allowed on the [0, 1] output; above it nothing is "
                   "written. Default: 1e-4, or 1/1023 for a QAT checkpoint (QDQ output).")
@json_option
def export_command(model_name, checkpoint, random_init, output, height, width, dynamic, opset,
                   instancenorm, work_scale, tolerance, as_json):
    """Export a model to fp32 ONNX, simplified, tagged and parity-checked.

    Runs torch's dynamo exporter, onnxsim and the full ONNX checker; tags every node as
    backbone or head; stores model metadata (input/output names, value ranges, output
    encoding, required multiple); then compares ONNX Runtime with PyTorch on probe images
    (random, flat grey, hard edge, saturated). The artifact and its model card
    (NAME.card.json) are written only if parity holds.

    \b
    Examples:
      itm-onnx export --output mqnet.onnx --height 1088 --width 1920
      itm-onnx export --dynamic --output mqnet-dyn.onnx --json
      itm-onnx export --random-init --model mqnet-sa -o sa.onnx
      itm-onnx export --height 1024 --width 1024 --work-scale 4 -o mqnet-1024-s4.onnx
    """
    if not as_json:
        progress(f"exporting {model_name} ...")
    report = export_model(ExportConfig(
        output=output, model=model_name, checkpoint=checkpoint, random_init=random_init,
        height=height, width=width, dynamic=dynamic, opset=opset, parity_tolerance=tolerance,
        instancenorm=instancenorm, work_scale=int(work_scale),
    ))
    emit(report.to_dict(), as_json, lambda _: print_export_report(report))
