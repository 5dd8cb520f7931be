"""`itm-onnx mobile-check` and `itm-onnx mobile-prepare`: NNAPI/CoreML readiness, .ort."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ItmOnnxError
from ..mobile import (
    NNAPI_PASSES,
    NNAPI_RULES_EP,
    EpCoverage,
    MobileCheckConfig,
    MobileReport,
    PrepareReport,
    check_mobile,
    prepare_for_nnapi,
)
from .common import emit, json_option, progress

DEFAULTS = MobileCheckConfig()


def _coverage_summary(c: EpCoverage) -> str:
    return (f"{c.partitions} partition(s), {c.nodes_covered}/{c.nodes_total} nodes, should "
            f"work well: {c.verdict}" + ("  [whole model]" if c.whole_model else ""))


def _coverage_line(c: EpCoverage) -> str:
    return f"  {c.ep:<22} {_coverage_summary(c)}"


def _coverage_details(c: EpCoverage) -> list[str]:
    lines = []
    if c.unsupported_ops:
        lines.append("      unsupported ops: " + ", ".join(
            f"{op} x{n}" for op, n in c.unsupported_ops.items()))
    if c.dynamic_shape_nodes:
        lines.append(f"      dynamic-shape nodes: {len(c.dynamic_shape_nodes)} "
                     f"({', '.join(c.dynamic_shape_nodes[:4])}"
                     + (", ..." if len(c.dynamic_shape_nodes) > 4 else "") + ")")
    for reason, count in c.other_unsupported.items():
        lines.append(f"      {count} node(s): {reason}")
    return lines


def print_mobile_report(report: MobileReport) -> None:
    click.echo(f"{report.model}: {report.nodes} nodes after ONNX Runtime's basic "
               "optimizations" if report.optimized else f"{report.model}: {report.nodes} nodes")
    if report.dynamic_inputs:
        click.echo(f"  dynamic inputs: {', '.join(report.dynamic_inputs)} "
                   "(NNAPI needs fixed shapes: export with --height/--width)")
    for coverage in report.coverage:
        click.echo(_coverage_line(coverage))
        for line in _coverage_details(coverage):
            click.echo(line)
    for artifact in report.ort:
        if artifact.loads:
            status = (f"loads, max |onnx - ort| {artifact.max_abs_diff:.2e} "
                      + ("(matches)" if artifact.matches else "(DIFFERS)"))
        else:
            status = f"does not load: {artifact.error}"
        click.echo(f"  .ort {artifact.style:<7} {artifact.path} ({artifact.size_bytes:,} bytes): "
                   f"{status}")
    if report.ort_configs:
        click.echo(f"  operators for a minimal ORT build: {', '.join(report.ort_configs)}")


@click.command("mobile-check")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="ONNX model to check (fixed shape for NNAPI).")
@click.option("--ort-out", type=click.Path(path_type=Path), default=None,
              help="Keep the converted .ort files here (default: convert in a temporary "
                   "folder, check, discard).")
@click.option("--no-ort", is_flag=True, help="Skip the .ort conversion and its check.")
@click.option("--ort-style", "ort_styles", type=click.Choice(["Fixed", "Runtime"]), multiple=True,
              default=DEFAULTS.ort_styles, show_default=True,
              help="ORT format optimization style(s); Runtime suits NNAPI/CoreML.")
@click.option("--target-platform", type=click.Choice(["arm", "amd64"]),
              default=DEFAULTS.target_platform, show_default=True,
              help="Platform the .ort is optimized for.")
@click.option("--no-optimize", is_flag=True,
              help="Analyse the graph as stored, not after ORT's basic optimizations.")
@click.option("--require-nnapi", type=click.Choice(["checker", "rules"]), default=None,
              help="Exit 1 unless NNAPI takes the whole model in one partition, by ORT's "
                   "checker or by the NNAPI EP rules.")
@json_option
def mobile_check_command(model_path, ort_out, no_ort, ort_styles, target_platform, no_optimize,
                         require_nnapi, as_json):
    """Check a model for ONNX Runtime Mobile: NNAPI/CoreML partitions and the .ort format.

    Runs ONNX Runtime's usability checker (NNAPI, CoreML NeuralNetwork, CoreML
    MLProgram: partitions, nodes covered, unsupported ops, dynamic-shape nodes), then
    the NNAPI EP's own rules (quantized groups NNAPI cannot run, int8 or per-channel
    DequantizeLinear, non-constant weights, Clip bounds, Resize modes...) with the same
    partition estimator, then converts to .ort with ORT's converter and checks that each
    .ort loads and gives the .onnx's output.

    \b
    Examples:
      itm-onnx mobile-check --model mqnet-mixed.onnx
      itm-onnx mobile-check --model mqnet-mixed.onnx --ort-out ort/ --json
      itm-onnx mobile-check --model m.onnx --no-ort --require-nnapi checker
    """
    if not as_json:
        progress(f"checking {model_path} ...")
    report = check_mobile(MobileCheckConfig(
        model=model_path, ort_out=ort_out, convert_ort=not no_ort, optimize=not no_optimize,
        ort_styles=tuple(ort_styles), target_platform=target_platform))
    emit(report.to_dict(), as_json, lambda _: print_mobile_report(report))
    bad_ort = [a for a in report.ort if not (a.loads and a.matches)]
    if bad_ort:
        raise ItmOnnxError(f".ort {bad_ort[0].style} " + (
            f"does not load: {bad_ort[0].error}" if not bad_ort[0].loads else
            f"differs from the .onnx by {bad_ort[0].max_abs_diff:.3g}"))
    if require_nnapi:
        coverage = report.ep("NNAPI" if require_nnapi == "checker" else NNAPI_RULES_EP)
        if not coverage.whole_model:
            raise ItmOnnxError(
                f"{coverage.ep}: {coverage.partitions} partitions covering "
                f"{coverage.nodes_covered}/{coverage.nodes_total} nodes, not one covering all")


def print_prepare_report(report: PrepareReport) -> None:
    click.echo(f"wrote {report.artifact} (from {report.source})")
    for name, nodes in report.applied.items():
        click.echo(f"  {name}: {len(nodes)} node(s)")
    if not report.applied:
        click.echo("  no pass changed anything")
    for label, coverage in (("before", report.before), ("after", report.after)):
        if coverage is not None:
            click.echo(f"  NNAPI EP rules {label}: {_coverage_summary(coverage)}")
    if report.after is not None:
        for line in _coverage_details(report.after):
            click.echo(line)
    if report.left:
        click.echo("  quantized groups NNAPI cannot run, left as they are: "
                   + ", ".join(report.left))
    if report.fidelity:
        f = report.fidelity
        click.echo(f"  CPU output vs the source: max abs {f['max_abs_diff']:.2e}, "
                   f"{100 * f['within_1_code']:.3f}% of pixels within 1 code "
                   f"({100 * f['share_code_diff_gt0']:.3f}% differ at all)")


@click.command("mobile-prepare")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Quantized (or float) fixed-shape ONNX model.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="Where to write the NNAPI-ready copy.")
@click.option("--pass", "passes", type=click.Choice(sorted(NNAPI_PASSES)), multiple=True,
              default=tuple(NNAPI_PASSES), show_default=True,
              help="Passes to apply, in the given order (default: all).")
@click.option("--fidelity-images", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Synthetic images to compare the CPU outputs on (0: skip).")
@json_option
def mobile_prepare_command(model_path, output, passes, fidelity_images, as_json):
    """Write a copy of a model that NNAPI can take in fewer partitions.

    For what NNAPI's EP cannot run but the CPU path does not need changed: head weights
    stored as float instead of int8 + DequantizeLinear (exact), quantized global pooling
    as an AveragePool over the plane (exact), attention gates' Sigmoid run in float
    (drops one 8-bit rounding). The input is never edited; the report gives NNAPI
    coverage by the EP rules before and after, and the CPU output change.

    \b
    Example:
      itm-onnx mobile-prepare --model mqnet-mixed.onnx -o mqnet-mixed-nnapi.onnx
    """
    if not as_json:
        progress(f"preparing {model_path} for NNAPI ...")
    report = prepare_for_nnapi(model_path, output, tuple(passes), fidelity_images)
    emit(report.to_dict(), as_json, lambda _: print_prepare_report(report))
