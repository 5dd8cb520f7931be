"""`itm-onnx evaluate`: HDR quality of a checkpoint or ONNX model, next to two baselines."""

from __future__ import annotations

from pathlib import Path

import click

from ..evaluate import DATA_SOURCES, SYNTHETIC_SPLITS, EvalConfig, EvalReport, run_evaluation
from ..evaluate_real import RealEvalReport
from .common import emit, json_option, progress

DEFAULTS = EvalConfig()


def print_real_report(report: RealEvalReport) -> None:
    source = report.model.get("checkpoint") or report.model.get("path")
    click.echo(f"{source} ({report.model['kind']}, output {report.model['output_encoding']})")
    click.echo(f"  data: {report.data}")
    click.echo(f"  {'':<10} {'PU21-PSNR dB':>13} {'clipped RMS stops':>18} "
               f"{'>= clip level':>14} {'PSNR-mu dB':>11} {'HDR-FLIP':>9}")
    for name, fig in report.figures.items():
        click.echo(f"  {name:<10} {fig['pu21_psnr']:>13.2f} {fig['clipped_stops_rms']:>18.3f} "
                   f"{fig['clip_floor_share']:>13.1%} {fig['psnr_mulaw']:>11.2f} "
                   f"{fig['hdr_flip']:>9.4f}")
    v = report.versus_identity
    click.echo(f"  model - identity: {v['pu21_gain_db']:+.2f} dB PU21 (worst view "
               f"{v['worst_view_pu21_gain_db']:+.2f} dB); clipped RMS x "
               f"{v['clipped_rms_ratio']:.2f}; min share >= clip level "
               f"{v['clip_floor_share_min']:.1%}")
    if report.grid:
        click.echo(f"  picture grid {report.grid}")
    click.echo(f"  {report.views} views, {report.seconds:.1f} s")


def print_report(report: EvalReport | RealEvalReport) -> None:
    if isinstance(report, RealEvalReport):
        print_real_report(report)
        return
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
                     help="Synthetic test split; real: fixed camera shots of a folder of "
                          "captured HDR (--hdr-dir; PU21, clipped-region error, HDR-FLIP); "
                          "a folder of HDR files with tone-mapped inputs; or pairs."),
        click.option("--hdr-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder of .hdr/.exr files (--data real, hdr-folder or paired)."),
        click.option("--views", type=int, default=DEFAULTS.views, show_default=True,
                     help="--data real: fixed views per HDR file."),
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
def evaluate_command(model, checkpoint, data, hdr_dir, views, ldr_dir, split, images, size, seed,
                     grid, grid_images, threads, per_image, as_json):
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
      itm-onnx evaluate --data real --hdr-dir hdr-real/val --views 3 --grid real.png
    """
    config = EvalConfig(model=model, checkpoint=checkpoint, data=data, hdr_dir=hdr_dir,
                        ldr_dir=ldr_dir, split=split, images=images, size=size, seed=seed,
                        grid=grid, grid_images=grid_images, threads=threads, views=views)
    report = run_evaluation(config, log=progress if not as_json else (lambda _: None))
    if not per_image:
        if isinstance(report, RealEvalReport):
            report.per_view = []
        else:
            report.per_image = []
    emit(report.to_dict(), as_json, lambda _: print_report(report))
