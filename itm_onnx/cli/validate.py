"""`itm-onnx validate`: PyTorch vs fp32 ONNX vs quantized ONNX on the 10-bit scale, CI-gated."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..errors import ItmOnnxError, UsageError
from ..validate import HISTOGRAM_BUCKETS, ValidateConfig, ValidateReport, bucket_label, validate
from .common import emit, json_option, progress
from .run import max_pixels_option, providers_option, split_list, threads_option

DEFAULTS = ValidateConfig()


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``HxW`` (or one number for a square) -> (height, width)."""
    if text is None:
        return None
    height, sep, width = text.lower().partition("x")
    try:
        return (int(height), int(width if sep else height))
    except ValueError:
        raise UsageError(f"--size expects HxW such as 256x384, got {text!r}") from None


def _psnr(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.2f} dB"


def print_validate_report(report: ValidateReport) -> None:
    click.echo(f"{report.images['count']} images ({report.images['source']})")
    buckets = [bucket_label(low, high) for low, high in HISTOGRAM_BUCKETS]
    for pair in report.pairs:
        overall = pair.overall
        click.echo(f"{pair.name}: PSNR {_psnr(overall.psnr_db)} (10-bit, peak 1023), "
                   f"max {overall.max_abs} codes, within 1: {overall.within_1:.2%}, "
                   f"within 4: {overall.within_4:.2%}")
        click.echo("  pixels by code difference: " + ", ".join(
            f"{key}: {overall.histogram[key] / overall.pixels:.2%}" for key in buckets))
        for image, fidelity in pair.per_image.items():
            click.echo(f"  {image}: {_psnr(fidelity.psnr_db)}, max {fidelity.max_abs}, "
                       f"within 1 {fidelity.within_1:.2%}, within 4 {fidelity.within_4:.2%}")
    if report.images.get("skipped"):
        click.echo(f"skipped {len(report.images['skipped'])} unreadable images")
    if report.report:
        click.echo(f"report {report.report}")
    click.echo("PASSED" if report.passed else f"FAILED ({len(report.failures)} checks)")


@click.command("validate")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="PyTorch reference: an itm-onnx checkpoint (.safetensors).")
@click.option("--fp32", type=click.Path(path_type=Path), default=None,
              help="The fp32 ONNX export.")
@click.option("--quantized", type=click.Path(path_type=Path), default=None,
              help="The quantized ONNX model (e.g. from `itm-onnx quantize --mixed`).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Folder (or file) of LDR images [default: a held-out synthetic set].")
@click.option("--count", type=int, default=DEFAULTS.count, show_default=True,
              help="Number of held-out synthetic images (without --images).")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seed of the held-out synthetic set (the calibration set uses another).")
@click.option("--size", default=None, metavar="HxW",
              help="Synthetic image size [default: the model's fixed shape, else 256x256].")
@click.option("--report", type=click.Path(path_type=Path), default=DEFAULTS.report,
              show_default=True, help="Visual report PNG: per image input, outputs, error maps.")
@click.option("--no-report", is_flag=True, help="Do not write the visual report.")
@click.option("--min-psnr", type=float, default=None,
              help="Fail (exit 1) if any pair's PSNR on any image is below this (dB, 10-bit).")
@click.option("--max-lsb", type=click.IntRange(min=0), default=None,
              help="Fail (exit 1) if any pair differs by more than this many 10-bit codes.")
@providers_option
@threads_option
@max_pixels_option
@json_option
def validate_command(checkpoint, fp32, quantized, images, count, seed, size, report, no_report,
                     min_psnr, max_lsb, providers, threads, max_pixels, as_json):
    """Compare PyTorch, fp32 ONNX and quantized ONNX outputs on the 10-bit scale.

    Give at least two of --checkpoint, --fp32, --quantized; every pair is compared
    (the earlier in that order is the reference) on the code values round(y * 1023)
    of the [0, 1] output: PSNR (peak 1023), max and mean absolute error in codes, the
    pixels by code difference (0, 1, 2-3, 4-7, 8-15, >=16; a pixel counts its worst
    channel) and the share of pixels within 1 and 4 codes, per image and pooled.
    Every backend gets the same padded/tiled inputs (those of the ONNX model).

    Gates for CI: with --min-psnr / --max-lsb every image of every pair must pass;
    otherwise the figures are still printed (and --json written to stdout) and the
    command exits 1 with one line naming the pair, figure and image.

    \b
    Examples:
      itm-onnx validate --fp32 mqnet.onnx --quantized mqnet-mixed.onnx --min-psnr 45
      itm-onnx validate --checkpoint models/mqnet.safetensors --fp32 mqnet.onnx \\
          --quantized mqnet-mixed.onnx --images photos/ --max-lsb 8 --json
    """
    result = validate(
        ValidateConfig(
            checkpoint=checkpoint, fp32=fp32, quantized=quantized, images=images, count=count,
            seed=seed, size=parse_size(size), report=None if no_report else report,
            min_psnr=min_psnr, max_lsb=max_lsb, providers=split_list(providers),
            threads=threads, max_pixels=max_pixels,
        ),
        log=progress,
    )
    emit(result.to_dict(), as_json, lambda _: print_validate_report(result))
    if not result.passed:
        more = len(result.failures) - 1
        raise ItmOnnxError(result.failures[0] + (f" (and {more} more failed checks)"
                                                 if more else ""))
