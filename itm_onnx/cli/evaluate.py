"""`itm-onnx evaluate`: HDR quality of a checkpoint or ONNX model, next to two baselines."""

from __future__ import annotations

from pathlib import Path

import click

from ..evaluate import DATA_SOURCES, SYNTHETIC_SPLITS, EvalConfig, EvalReport, run_evaluation
from .common import emit, json_option, progress

DEFAULTS = EvalConfig()


def print_report(report: EvalReport) -> None:
    source = report.model.get("checkpoint") or report.model.get("path")
    click.echo(f"{source} ({report.model['kind']}, output {report.model['output_encoding']})")
    click.echo(f"  data: {report.data}")
    click.echo(f"  {'':<10} {'PSNR-mu dB':>11} {'PSNR-lin dB':>12} {'SSIM-mu':>8} "
               f"{'chroma dC*ab':>13}")
    for name, fig in report.figures.items():
        click.echo(f"  {name:<10} {fig['psnr_mulaw']:>11.2f} {fig['psnr_linear']:>12.2f} "
                   f"{fig['ssim_mulaw']:>8.4f} {fig['chroma_error']:>13.3f}")
    gains = report.gains_db
    click.echo(f"  model - identity: {gains['psnr_mulaw_vs_identity']:+.2f} dB mu-law; "
               f"model - akyuz: {gains['psnr_mulaw_vs_akyuz']:+.2f} dB mu-law")
    if report.grid:
        click.echo(f"  picture grid {report.grid}")
    click.echo(f"  {report.seconds:.1f} s")


def held_out_data_options(grid_help: str, size_help: str):  # type: ignore[no-untyped-def]
    """The data, grid and thread options `evaluate` and `compare` share, in one place."""
    options = [
        click.option("--data", type=click.Choice(DATA_SOURCES), default=DEFAULTS.data,
                     show_default=True,
                     help="Synthetic test split, a folder of HDR files, or pairs."),
        click.option("--hdr-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder of .hdr/.exr files (--data hdr-folder or paired)."),
        click.option("--ldr-dir", type=click.Path(path_type=Path), default=None,
                     help="LDR photos matched to --hdr-dir by file stem (--data paired)."),
        click.option("--split", type=click.Choice(SYNTHETIC_SPLITS), default=DEFAULTS.split,
                     show_default=True,
                     help="Synthetic split: test (report figures) or val (choose between "
                          "models)."),
        click.option("--images", type=int, default=DEFAULTS.images, show_default=True,
                     help="Number of test images (folders: at most this many)."),
        click.option("--size", type=int, default=None, help=size_help),
        click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
                     help="Seed of the synthetic test split (and of folder crops/operators)."),
        click.option("--grid", type=click.Path(path_type=Path), default=None, help=grid_help),
        click.option("--grid-images", type=int, default=DEFAULTS.grid_images,
                     show_default=True, help="Rows of the picture grid."),
        click.option("--threads", type=int, default=None, help="CPU threads for torch / ORT."),
    ]

    def apply(command):  # type: ignore[no-untyped-def]
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@click.command("evaluate")
@click.option("--model", "model", default=DEFAULTS.model, show_default=True,
              help="An ONNX file (X.onnx, exported by itm-onnx), or a registered model name "
                   "used with --checkpoint.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="itm-onnx checkpoint (.safetensors) [default: the shipped model].")
@held_out_data_options(
    grid_help="Write a PNG grid: input, prediction, target, error map.",
    size_help="Image side [default: 256, or a fixed-shape ONNX model's input size].")
@click.option("--per-image", is_flag=True, help="Keep per-image figures in the --json output.")
@json_option
def evaluate_command(model, checkpoint, data, hdr_dir, ldr_dir, split, images, size, seed, grid,
                     grid_images, threads, per_image, as_json):
    """Score a model on held-out HDR data against the identity and Akyuz baselines.

    Figures (means over images): PSNR of the mu-law (mu=5000) tone-mapped HDR, PSNR of
    the linear HDR after a least-squares scale, SSIM of the mu-law images, and their mean
    CIELAB chroma difference (colour shift, lower is better). Baselines:
    the LDR input linearised by gamma 2.2 (identity), and Akyuz et al. 2007's expansion.
    The same numbers come out for a checkpoint, its fp32 export and its quantized model.

    \b
    Examples:
      itm-onnx evaluate                                   # shipped model, synthetic test split
      itm-onnx evaluate --checkpoint runs/mqnet/best.safetensors --grid grid.png
      itm-onnx evaluate --model mqnet.onnx --json
      itm-onnx evaluate --model mqnet-int8.onnx --data hdr-folder --hdr-dir ~/hdr-eye
    """
    config = EvalConfig(model=model, checkpoint=checkpoint, data=data, hdr_dir=hdr_dir,
                        ldr_dir=ldr_dir, split=split, images=images, size=size, seed=seed,
                        grid=grid, grid_images=grid_images, threads=threads)
    report = run_evaluation(config, log=progress if not as_json else (lambda _: None))
    if not per_image:
        report.per_image = []
    emit(report.to_dict(), as_json, lambda _: print_report(report))
