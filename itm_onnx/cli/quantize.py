"""`itm-onnx quantize`: fp32 ONNX -> mixed-precision (or full int8) QDQ ONNX + report."""

from __future__ import annotations

from pathlib import Path

import click

from ..quantize import (
    DEFAULT_DYNAMIC_SIZE,
    KNOWN_REWRITES,
    METHODS,
    CalibrationSettings,
    QuantizeConfig,
    QuantizeReport,
    QuantOptions,
    quantize_model,
)
from .common import emit, json_option, progress

DEFAULTS = QuantizeConfig()
CALIBRATION = CalibrationSettings()
OPTIONS = QuantOptions()


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW such as 256x256, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise click.BadParameter(f"sizes must be positive, got {text!r}")
    return height, width


def _rewrites(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    known = set(KNOWN_REWRITES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown rewrite(s) {', '.join(unknown)}; available: "
                                 f"{', '.join(sorted(known))}", param_hint="--rewrites")
    return names


def print_quantize_report(report: QuantizeReport) -> None:
    if report.already_quantized:
        click.echo(f"{report.source_model} is already quantized: copied through unchanged to "
                   f"{report.artifact} (no second quantization)")
    else:
        cal = report.calibration
        click.echo(f"wrote {report.artifact} (sha256 {report.sha256[:16]}...), scheme "
                   f"{report.scheme}, input {report.input_shape}")
        click.echo(f"  calibration: {cal['method']} on {cal['images']['used']} images "
                   f"({'cached' if cal['cached'] else 'computed'}, key {cal['key'][:12]})"
                   + _skipped(cal['images']))
    counts = report.counts
    click.echo(f"  QuantizeLinear {counts['QuantizeLinear']}, DequantizeLinear "
               f"{counts['DequantizeLinear']}; precision by part: "
               + "; ".join(f"{part}: " + ", ".join(f"{k} {v}" for k, v in c.items())
                           for part, c in counts["by_part"].items()))
    click.echo(f"  float compute nodes in the backbone: {counts['backbone_float_compute_nodes']}"
               + (f" ({', '.join(counts['backbone_float_compute_node_names'][:5])})"
                  if counts["backbone_float_compute_nodes"] else ""))
    if report.fidelity:
        f = report.fidelity
        click.echo(f"  output vs float ({f['images']}): {f['psnr_10bit_db']} dB on 10-bit codes, "
                   f"{100 * f['within_1_code']:.1f}% within 1 code, "
                   f"{100 * f['within_4_codes']:.1f}% within 4")
    worst = [e for e in report.tensor_errors if e.get("xmodel_sqnr") is not None][:3]
    if worst:
        click.echo("  worst tensors (SQNR vs float): " + ", ".join(
            f"{e['tensor']} {e['xmodel_sqnr']} dB" for e in worst))
    if report.target:
        checker = report.target["nnapi_checker"]
        click.echo(f"  target nnapi: passes {', '.join(report.target['mobile_passes']) or 'none'}"
                   f"; ORT checker: {checker['partitions']} NNAPI partition covering "
                   f"{checker['nodes_covered']}/{checker['nodes_total']} nodes")
    _print_study(report)
    if report.report_file:
        click.echo(f"  report {report.report_file}")


def _print_study(report: QuantizeReport) -> None:
    if report.sensitivity:
        s = report.sensitivity
        worst = ", ".join(f"{t['tensor']} {t['only_quantized_db']} dB" for t in s["tensors"][:3])
        click.echo(f"  sensitivity ({len(s['tensors'])} tensors, {s['seconds']['measure']} s): "
                   f"most harmful alone: {worst}")
    if report.search:
        r = report.search
        click.echo(f"  --min-psnr {r['target_db']}: {'reached' if r['reached'] else 'NOT reached'}"
                   f" with {r['chosen']['label']}: {r['chosen_psnr_db']} dB, "
                   f"{r['chosen_median_ms']} ms (default mixed {r['default_psnr_db']} dB, "
                   f"{r['default_median_ms']} ms; {len(r['points'])} configurations tried)")
    for chart in report.charts:
        click.echo(f"  chart {chart}")


def _skipped(images: dict) -> str:
    parts = []
    if images["unusable"]:
        parts.append(f"{len(images['unusable'])} unusable: "
                     + ", ".join(u["file"] for u in images["unusable"][:5]))
    if images["ignored_non_images"]:
        parts.append(f"{len(images['ignored_non_images'])} non-image files ignored")
    return f"; {'; '.join(parts)}" if parts else ""


@click.command("quantize")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="fp32 ONNX from `itm-onnx export` (tagged backbone/head).")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="Where to write the QDQ .onnx (report NAME.quant.json beside it).")
@click.option("--mixed", "scheme", flag_value="mixed", default=True,
              help="Backbone int8, head int8 weights + float activations (default).")
@click.option("--full-int8", "scheme", flag_value="full-int8",
              help="Quantize everything (for comparison).")
@click.option("--a16w8-head", "scheme", flag_value="a16w8-head",
              help="Backbone int8, head 16-bit activations + int8 weights.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Folder of calibration images (default: the shipped calibration/).")
@click.option("--calibrate-method", type=click.Choice(sorted(METHODS)),
              default=CALIBRATION.method, show_default=True, help="How activation ranges are set.")
@click.option("--min-images", type=click.IntRange(1), default=CALIBRATION.min_images,
              show_default=True, help="Fewer usable calibration images than this is an error.")
@click.option("--max-images", type=click.IntRange(1), default=CALIBRATION.max_images,
              show_default=True, help="Use at most this many (a seeded draw picks them).")
@click.option("--seed", type=int, default=CALIBRATION.seed, show_default=True,
              help="Seed of that draw.")
@click.option("--dynamic-size", type=str, default="x".join(map(str, DEFAULT_DYNAMIC_SIZE)),
              show_default=True, help="HxW to calibrate a dynamic-shape model at.")
@click.option("--head-nodes", type=str, default=None,
              help="For a model without export tags: comma-separated nodes where the head "
                   "starts (they and everything after them stay float).")
@click.option("--rewrites", "rewrites", default=",".join(DEFAULTS.rewrites), show_default=True,
              help="Exact graph rewrites to apply (float, then on the quantized graph), "
                   "comma-separated, or 'none'; "
                   f"available: {', '.join(KNOWN_REWRITES)}.")
@click.option("--reduce-range/--full-range", default=OPTIONS.reduce_range, show_default=True,
              help="7-bit weights for int8 convs (needed on x86 CPUs without VNNI).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Calibration cache folder (default $ITM_ONNX_CACHE or ~/.cache/itm-onnx).")
@click.option("--error-images", type=click.IntRange(0), default=DEFAULTS.error_images,
              show_default=True, help="Images for the per-tensor SQNR in the report (0: skip).")
@click.option("--target", type=click.Choice(["cpu", "nnapi"]), default=DEFAULTS.target,
              show_default=True,
              help="nnapi: the NNAPI recipe in one step (--rewrites none, then the "
                   "mobile-prepare passes); fails unless ORT's checker finds one NNAPI "
                   "partition covering every node. Needs a fixed-shape export.")
@click.option("--sensitivity", is_flag=True,
              help="(--mixed) Per-tensor study: output PSNR with only each quantized tensor "
                   "quantized and with only it left float; in the report and NAME.sensitivity.png.")
@click.option("--min-psnr", "min_psnr", type=float, default=None, metavar="DB",
              help="(--mixed) Write the cheapest configuration (MSE ranges, bias correction, "
                   "16-bit backbone tensors) reaching DB dB vs float on calibration images; "
                   "trade-off curve in NAME.tradeoff.png. Default: pure int8 backbone.")
@click.option("--study-images", type=click.IntRange(1), default=DEFAULTS.study_images,
              show_default=True, help="Calibration images --sensitivity/--min-psnr measure on.")
@json_option
def quantize_command(model_path, output, scheme, calibration, calibrate_method, min_images,
                     max_images, seed, dynamic_size, head_nodes, rewrites, reduce_range,
                     cache_dir, error_images, target, sensitivity, min_psnr, study_images,
                     as_json):
    """Quantize an fp32 export into a QDQ ONNX with ONNX Runtime's quantizer.

    The backbone/head split comes from the tags `itm-onnx export` writes. Calibration
    ranges are cached (keyed by model, images, method and shape), so quantizing again
    with other options does not run calibration again. The same inputs give a
    byte-identical model. A model that is already quantized (e.g. a QAT export) is
    copied through unchanged.

    \b
    Examples:
      itm-onnx quantize --mixed --model mqnet.onnx --output mqnet-mixed.onnx
      itm-onnx quantize --full-int8 --model mqnet.onnx -o mqnet-int8.onnx --json
      itm-onnx quantize --model m.onnx -o q.onnx --calibrate-method entropy
      itm-onnx quantize --mixed --target nnapi --model mqnet-1088x1920.onnx -o nnapi.onnx
      itm-onnx quantize --mixed --model mqnet-512.onnx -o q.onnx --min-psnr 48
    """
    if min_images > max_images:
        raise click.UsageError("--min-images cannot exceed --max-images")
    config = QuantizeConfig(
        model=model_path, output=output, scheme=scheme, calibration=calibration,
        calibration_settings=CalibrationSettings(
            method=calibrate_method, min_images=min_images, max_images=max_images, seed=seed),
        options=QuantOptions(reduce_range=reduce_range),
        rewrites=_rewrites(rewrites),
        head_nodes=tuple(n for n in (head_nodes or "").split(",") if n.strip()),
        dynamic_size=_size(dynamic_size), cache_dir=cache_dir, error_images=error_images,
        target=target,
        sensitivity=sensitivity, min_psnr=min_psnr, study_images=study_images,
    )
    report = quantize_model(config, progress=(lambda _: None) if as_json else progress)
    emit(report.to_dict(), as_json, lambda _: print_quantize_report(report))
    if report.search and not report.search["reached"]:
        r = report.search
        raise click.ClickException(
            f"--min-psnr {r['target_db']} not reached: the best configuration tried "
            f"({r['chosen']['label']}) measures {r['chosen_psnr_db']} dB; it was written, "
            f"with the frontier and the tensors that bound it in {report.report_file}")
