"""`itm-onnx run`: LDR photos in, HDR files out, with an exported ONNX model."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.images import DEFAULT_MAX_PIXELS
from ..display import DEFAULT_PEAK_NITS, MAX_PEAK_NITS, MIN_PEAK_NITS
from ..errors import ItmOnnxError
from ..run_batch import RunConfig, RunReport, run_model
from ..runner import DEFAULT_MAX_TILE_PIXELS, FORMATS, TILE_OVERLAP_FRACTION
from .common import emit, json_option, progress

# Options `itm-onnx validate` (and later stages) share with `run`.
providers_option = click.option(
    "--providers", "--ep", "providers", default="cpu", show_default=True, metavar="LIST",
    help="ONNX Runtime execution providers, comma-separated in order of preference "
         "(short names such as cpu, xnnpack, nnapi, or full ORT names).",
)
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="ORT intra-op threads [default: ORT's choice, or the model's recommendation].",
)
max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
    help="Refuse images with more pixels (decompression-bomb guard, checked before decoding).",
)


def split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def print_run_report(report: RunReport) -> None:
    total = len(report.done) + len(report.failed)
    click.echo(f"converted {len(report.done)} of {total} images in {report.seconds:.1f} s "
               f"-> {report.output_dir} ({', '.join(report.formats)}); "
               f"done {len(report.done)}, failed {len(report.failed)}")
    if report.ignored:
        click.echo(f"  ignored {len(report.ignored)} folder entries without an image suffix")
    if report.html:
        click.echo(f"  before/after page: {report.html}")
    if report.failed:
        click.echo(f"failed ({len(report.failed)}):")
        for failure in report.failed:
            click.echo(f"  {failure.input}: {failure.error}")


@click.command("run")
@click.option("--model", "-m", "model", type=click.Path(path_type=Path), required=True,
              help="ONNX model: an fp32 export or a quantized model.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", "output_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (created if missing); files are named after the inputs.")
@click.option("--format", "formats", default="auto", show_default=True, metavar="LIST",
              help=f"Comma-separated subset of {', '.join(FORMATS)}; auto = png16, plus exr "
                   "when the model names its output encoding.")
@click.option("--peak-nits", type=click.FloatRange(MIN_PEAK_NITS, MAX_PEAK_NITS),
              default=DEFAULT_PEAK_NITS, show_default=True,
              help="uhdr/avif/png-pq: highest display luminance (cd/m2) highlights roll off "
                   "to; the input's clip level sits at SDR white, 203 cd/m2.")
@click.option("--html", "html", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="PAGE.html",
              help="Also write one page showing every input beside its uhdr/avif/png-pq "
                   "outputs (relative paths: open it from the file system in Chrome).")
@providers_option
@threads_option
@max_pixels_option
@click.option("--tile-overlap", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              default=TILE_OVERLAP_FRACTION, show_default=True,
              help="Least overlap of neighbouring tiles, as a share of the tile side.")
@click.option("--max-tile-pixels", type=click.IntRange(min=0),
              default=DEFAULT_MAX_TILE_PIXELS, show_default=True,
              help="Dynamic models: run photos with more pixels than this in overlapping "
                   "tiles of at most this many (ORT's memory grows with the input: the fp32 "
                   "export peaked at 6.4 GB for a 12 MP photo run whole); 0 runs every photo "
                   "whole.")
@json_option
@click.pass_context
def run_command(ctx, model, inputs, output_dir, formats, peak_nits, html, providers, threads,
                max_pixels, tile_overlap, max_tile_pixels, as_json):
    """Turn LDR photos (files and/or folders) into HDR images with an ONNX model.

    Inputs: PNG, JPEG, AVIF and anything else Pillow decodes (HEIC/HEIF with the
    optional pillow-heif: pip install 'itm-onnx[heif]'), any size and mode (grey,
    palette, alpha, 16-bit: converted to 8-bit RGB; an embedded ICC profile such as
    Display P3 converted to sRGB; each said so in --json `notes`).
    Folders are read non-recursively; their files without an image suffix are ignored.

    \b
    Outputs, per input NAME.ext, in --output:
      NAME.png  16-bit RGB PNG holding the 10-bit code values round(y * 1023)
                of the network output y in [0, 1] (0..1023, not rescaled to 65535)
      NAME.exr  linear radiance, float32, decoded per the model's output_encoding
      NAME.hdr  the same as Radiance RGBE
    HDR that screens show (linear 1.0 = the photo's clip level -> 203 cd/m2,
    highlights rolled off smoothly to --peak-nits; itm_onnx.display):
      NAME.uhdr.jpg  uhdr: Ultra HDR JPEG, the photo itself plus a gain map
                     (HDR on Android 14+ and Chrome, the plain photo elsewhere)
      NAME.avif      avif: AVIF 10-bit, BT.2020 + PQ (SMPTE ST 2084), lossless
      NAME.pq.png    png-pq: 16-bit PNG, BT.2020 + PQ, cICP chunk (Chrome)
    Models without itm-onnx metadata: first input, multiple 32, png16 only.

    \b
    Sizes: output size = input size, always.
      dynamic model: reflect-pad bottom/right to the required multiple (32), run, crop;
                     above --max-tile-pixels, overlapping tiles as for a fixed model
      fixed model:   a side that fits is reflect-padded to the model's side; a longer
                     side is tiled with overlapping tiles cross-faded linearly
                     (no resizing: resolution is what 10-bit output is for)

    \b
    Exit codes: 0 every input converted; 3 some converted, failures listed;
    1 none converted; 2 bad usage (model file, provider, format, no inputs).

    \b
    Examples:
      itm-onnx run -m mqnet.onnx photo.jpg -o out/
      itm-onnx run -m mqnet-mixed.onnx photos/ --format png16,exr,hdr -o out/ --json
      itm-onnx run -m mqnet.onnx photos/ -o out/ --providers xnnpack,cpu --threads 4
      itm-onnx run -m mqnet.onnx photos/ --format uhdr,avif,png-pq --html out/index.html -o out/
    """
    report = run_model(
        RunConfig(
            model=model, inputs=tuple(inputs), output_dir=output_dir,
            formats=None if formats.strip().lower() == "auto" else split_list(formats),
            providers=split_list(providers), threads=threads, max_pixels=max_pixels,
            overlap_fraction=tile_overlap, max_tile_pixels=max_tile_pixels,
            peak_nits=peak_nits, html=html,
        ),
        log=progress,
    )
    emit(report.to_dict(), as_json, lambda _: print_run_report(report))
    if report.exit_code == 1:
        first = report.failed[0]
        raise ItmOnnxError(f"no image converted: all {len(report.failed)} inputs failed "
                           f"(first: {first.input}: {first.error})")
    ctx.exit(report.exit_code)
