"""`itm-onnx compare`: several models scored on the same held-out data, in one table."""

from __future__ import annotations

import click

from ..compare import CompareReport, RealCompareReport, compare_models, parse_model_spec
from ..errors import UsageError
from ..evaluate import EvalConfig
from .common import emit, json_option, progress
from .evaluate import held_out_data_options


def print_real_compare(report: RealCompareReport) -> None:
    click.echo(f"data: {report.data}")
    width = max(8, *(len(row["label"]) for row in report.rows))
    click.echo(f"  {'label':<{width}} {'PU21 dB':>8} {'d vs first':>11} {'d vs identity':>14} "
               f"{'clipped RMS':>12} {'>= clip':>8} {'HDR-FLIP':>9}  source")
    for row in report.rows:
        click.echo(f"  {row['label']:<{width}} {row['pu21_psnr']:>8.2f} "
                   f"{row['pu21_vs_first_db']:>+11.2f} {row['pu21_vs_identity_db']:>+14.2f} "
                   f"{row['clipped_stops_rms']:>12.3f} {row['clip_floor_share']:>8.1%} "
                   f"{row['hdr_flip']:>9.4f}  {row['source']}")
    for name, fig in report.baselines.items():
        click.echo(f"  {name:<{width}} {fig['pu21_psnr']:>8.2f} "
                   f"{fig['pu21_psnr'] - report.rows[0]['pu21_psnr']:>+11.2f} {'':>14} "
                   f"{fig['clipped_stops_rms']:>12.3f} {fig['clip_floor_share']:>8.1%} "
                   f"{fig['hdr_flip']:>9.4f}  baseline")
    click.echo(f"  {report.views} views, {report.seconds:.1f} s")


def print_compare(report: CompareReport | RealCompareReport) -> None:
    if isinstance(report, RealCompareReport):
        print_real_compare(report)
        return
    click.echo(f"data: {report.data}")
    width = max(8, *(len(row.label) for row in report.rows))
    click.echo(f"  {'label':<{width}} {'PSNR-mu dB':>11} {'d vs first':>11} {'PSNR-lin dB':>12} "
               f"{'SSIM-mu':>8} {'chroma dC*ab':>13} {'recovered':>10}  source")
    for row in report.rows:
        recovered = "-" if row.recovered_share is None else f"{row.recovered_share:.0%}"
        click.echo(f"  {row.label:<{width}} {row.psnr_mulaw:>11.2f} "
                   f"{row.delta_psnr_mulaw:>+11.2f} {row.psnr_linear:>12.2f} "
                   f"{row.ssim_mulaw:>8.4f} {row.chroma_error:>13.3f} {recovered:>10}  "
                   f"{row.source}")
    for name, fig in report.baselines.items():
        delta = fig["psnr_mulaw"] - report.rows[0].psnr_mulaw
        click.echo(f"  {name:<{width}} {fig['psnr_mulaw']:>11.2f} {delta:>+11.2f} "
                   f"{fig['psnr_linear']:>12.2f} {fig['ssim_mulaw']:>8.4f} "
                   f"{fig['chroma_error']:>13.3f} {'-':>10}  baseline")
    if len(report.rows) > 2:
        click.echo(f"  recovered: share of {report.rows[1].label}'s mu-law PSNR loss against "
                   f"{report.rows[0].label} that the row wins back")
    if report.grid:
        click.echo(f"  picture grid {report.grid}")
    click.echo(f"  {report.seconds:.1f} s")


@click.command("compare")
@click.option("--model", "specs", multiple=True, metavar="[LABEL=]SPEC",
              help="A model to compare (repeat, at least 2; the first is the reference): "
                   "LABEL=X.onnx, or LABEL=NAME:CHECKPOINT.safetensors with a registered "
                   "model NAME. LABEL defaults to the file stem.")
@held_out_data_options(
    grid_help="Write a PNG grid: input, target, each model's prediction, each error map.",
    size_help="Image side [default: 256, or the fixed-shape ONNX models' input size].")
@json_option
def compare_command(specs, data, hdr_dir, views, ldr_dir, split, images, size, seed, grid,
                    grid_images, threads, as_json):
    """Score several models on the same held-out data and print one table.

    Every model sees identical images (same data, split, size and seed) and gets the
    figures of `itm-onnx evaluate`: PSNR of the mu-law tone-mapped HDR, PSNR of the
    scale-aligned linear HDR, mu-law SSIM and the CIELAB chroma difference (lower is
    better). The first --model is the reference: "d vs first" is each model's mu-law
    PSNR minus the reference's. From the third model on, "recovered" is the share of the
    second model's loss that it wins back, (PSNR - PSNR_2nd) / (PSNR_1st - PSNR_2nd):
    with float, post-training int8 and QAT int8, it says how much of the PTQ loss QAT
    recovers (100% = all of it). The identity and Akyuz baselines follow, once.

    \b
    Examples:
      itm-onnx compare --model float=gated-unet-c12:models/gated-unet-c12-float.safetensors \\
          --model ptq=/tmp/g-int8.onnx --model qat=/tmp/g-qat.onnx
      itm-onnx compare --model mqnet.onnx --model mqnet-int8.onnx --grid cmp.png --json
    """
    if len(specs) < 2:
        raise UsageError("compare needs at least two --model options (the first is the "
                         "reference), e.g. --model float=X.onnx --model int8=Y.onnx")
    base = EvalConfig(data=data, hdr_dir=hdr_dir, ldr_dir=ldr_dir, split=split, images=images,
                      size=size, seed=seed, threads=threads, views=views)
    models = [parse_model_spec(spec, base) for spec in specs]
    report = compare_models(models, grid=grid, grid_images=grid_images,
                            log=progress if not as_json else (lambda _: None))
    emit(report.to_dict(), as_json, lambda _: print_compare(report))
