"""`itm-onnx bench`: ONNX models side by side; with --peers, the whole comparison."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..bench import BenchConfig, ModelSpec, Row, parse_sizes, rows_to_dicts, run_bench
from ..bench.machine import describe, load_average, machine_facts
from ..quantize import METHODS, CalibrationSettings
from .common import emit, json_option, progress

DEFAULTS = BenchConfig()
PEER_FIDELITY_IMAGES = 4


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _round_text(row: Row) -> str:
    if row.round_ratio_median is None or not row.round_ratio_iqr:
        return "-"
    low, high = row.round_ratio_iqr
    return f"{row.round_ratio_median:.3f} [{low:.3f}-{high:.3f}]"


def print_table(rows: list[Row]) -> None:
    header = ("model", "size", "ep", "min ms", "median ms", "p90 ms", "x first",
              "per round [IQR]", "CPU ms",
              "session s", "peak RSS MB", "PSNR dB", "<=1 code", "<=4 codes")
    lines = []
    for r in rows:
        f = r.fidelity
        lines.append((r.label, r.size, r.ep, _fmt(r.min_ms), _fmt(r.median_ms), _fmt(r.p90_ms),
                      _fmt(r.ratio_to_first, ".3f"), _round_text(r), _fmt(r.cpu_median_ms, ".0f"),
                      _fmt(r.session_s, ".2f"),
                      _fmt(r.peak_rss_mb, ".0f"), _fmt(f.get("psnr_10bit_db"), ".2f"),
                      _fmt(100 * f["within_1_code"], ".2f") + "%" if f else "-",
                      _fmt(100 * f["within_4_codes"], ".2f") + "%" if f else "-"))
    widths = [max(len(h), *(len(line[k]) for line in lines)) for k, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r, line in zip(rows, lines, strict=True):
        text = "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True))
        click.echo(text + ("" if r.status == "ok" else f"  [{r.status}]"))
    reference = next((r.fidelity["reference"] for r in rows if r.fidelity), None)
    if reference:
        click.echo(f"fidelity: against {reference} on held-out images, output as 10-bit codes "
                   "round(y*1023)")
    if any(r.round_ratio_median is not None for r in rows[1:]):
        click.echo("per round: each timed round runs every model once, back to back; the "
                   "median and interquartile range of its time over the first model's")
    if any(r.cpu_median_ms for r in rows):
        click.echo("CPU ms: median CPU time of all threads per run (the work done; less "
                   "sensitive than wall time to other load on a shared machine)")


@click.command("bench")
@click.option("--model", "models", type=click.Path(path_type=Path), multiple=True,
              help="ONNX model to benchmark (repeat for several; the first is the reference).")
@click.option("--size", "sizes", default=None,
              help="HxW[,HxW...] input sizes (default: the models' fixed size).")
@click.option("--ep", "eps", default="cpu", show_default=True,
              help="Execution providers, comma-separated (cpu, xnnpack, nnapi, coreml, cuda...).")
@click.option("--threads", type=click.IntRange(1), default=DEFAULTS.threads, show_default=True,
              help="Intra-op threads for every model.")
@click.option("--runs", type=click.IntRange(1), default=DEFAULTS.runs, show_default=True,
              help="Timed runs per model (alternating between models).")
@click.option("--warmup", type=click.IntRange(0), default=DEFAULTS.warmup, show_default=True,
              help="Untimed runs per model first.")
@click.option("--peers", "peers_fp32", type=click.Path(path_type=Path), default=None,
              help="fp32 export to build the peers from: fp32, naive mixed, --full-int8, "
                   "and --mixed unless --model is given.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Also time PyTorch eager from this checkpoint.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Keep the peers built by --peers here (default: a temporary folder).")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Calibration images for the peers (default: the shipped calibration/).")
@click.option("--calibrate-method", type=click.Choice(sorted(METHODS)),
              default=CalibrationSettings.method,
              show_default=True,
              help="Calibration method for the --full-int8 and --mixed peers (the naive "
                   "recipe keeps quantize_static's MinMax).")
@click.option("--fidelity-images", type=click.IntRange(0), default=None,
              help=f"Held-out images for the fidelity columns (default {PEER_FIDELITY_IMAGES} "
                   "with --peers, else 0).")
@click.option("--no-litert", is_flag=True,
              help="With --peers: leave out the LiteRT/XNNPACK peers (fp32, static int8, "
                   "dynamic-range int8; need pip install '.[litert]').")
@click.option("--no-memory", is_flag=True, help="Skip the peak-RSS child processes.")
@click.option("--profile", "profile_dir", type=click.Path(path_type=Path), default=None,
              help="Keep ONNX Runtime's profiler traces in this folder (the top ops/nodes "
                   "by time are in the output either way).")
@click.option("--no-profile", is_flag=True,
              help="Skip the profiled run per model (its own session, after the timing).")
@click.option("--chart", type=click.Path(path_type=Path), default=Path("bench.png"),
              show_default=True, help="PNG chart of latency and memory.")
@click.option("--no-chart", is_flag=True, help="Do not write the chart.")
@click.option("--sequential", is_flag=True,
              help="Load and time one model at a time (peak memory of one session instead "
                   "of all), not in alternating rounds: for small machines; drift between "
                   "models then no longer cancels out.")
@json_option
def bench_command(models, sizes, eps, threads, runs, warmup, peers_fp32, checkpoint, work_dir,
                  calibration, calibrate_method, fidelity_images, no_litert, no_memory,
                  profile_dir, no_profile, chart, no_chart, sequential, as_json):
    """Benchmark ONNX models side by side in one process.

    Models run alternately (order rotated each round) after warm-up; reported: min,
    median, p90, the median's ratio to the first model, session creation time, and
    peak RSS measured in a child process per model. Each model gets the ONNX Runtime
    settings its metadata recommends; --threads applies to all. With --peers, the peers
    are built from an fp32 export and fidelity is measured on held-out images. The
    output names the CPU, its int8 dot-product instructions (AVX2, AVX-VNNI,
    AVX512-VNNI, AMX; dotprod, i8mm on ARM) and the load average, and each model's top
    ops by time from ONNX Runtime's profiler (a separate run after the timing).

    \b
    Examples:
      itm-onnx bench --model a.onnx --model b.onnx --runs 10
      itm-onnx bench --peers mqnet-1088x1920.onnx --runs 7 --threads 2
      itm-onnx bench --model m.onnx --ep cpu,xnnpack --size 256x256,512x512 --json
    """
    log = (lambda _: None) if as_json else progress
    machine = machine_facts()  # before the work: the load average says what else ran
    specs = [ModelSpec(p.stem, Path(p)) for p in models]
    with tempfile.TemporaryDirectory(prefix="itm-onnx-bench-") as tmp:
        if peers_fp32 is not None:
            from ..bench.peers import PeerConfig, build_peers

            peers = build_peers(PeerConfig(
                fp32=peers_fp32, work_dir=work_dir or Path(tmp), calibration=calibration,
                calibration_settings=CalibrationSettings(method=calibrate_method),
                build_mixed=not specs, checkpoint=checkpoint, litert=not no_litert),
                progress=log)
            specs = [s for s in peers if not s.is_torch] + specs + [s for s in peers if s.is_torch]
        elif checkpoint is not None:
            specs.append(ModelSpec("pytorch eager", checkpoint=checkpoint))
        count = fidelity_images if fidelity_images is not None else (
            PEER_FIDELITY_IMAGES if peers_fp32 else 0)
        config = BenchConfig(
            models=specs, sizes=parse_sizes(sizes) if sizes else [],
            eps=[e.strip() for e in eps.split(",") if e.strip()], threads=threads, runs=runs,
            warmup=warmup, memory=not no_memory, fidelity_images=count,
            profile=not no_profile, profile_dir=profile_dir, sequential=sequential)
        from ..bench.fidelity import heldout_images

        rows = run_bench(config, progress=log, images=lambda h, w: heldout_images(h, w, count))
    machine["load_average_at_end"] = load_average()
    result = {"config": {"threads": threads, "runs": runs, "warmup": warmup, "eps": config.eps,
                         "fidelity_images": count, "sequential": sequential},
              "machine": machine,
              "rows": rows_to_dicts(rows)}
    if not no_chart and any(r.median_ms for r in rows):
        from ..bench.chart import draw_chart

        mode = "sequential" if sequential else "alternating"
        title = f"itm-onnx bench: {threads} thread(s), median of {runs} {mode} runs"
        result["chart"] = str(draw_chart(rows, chart, title))
    emit(result, as_json, lambda _: _print(rows, result))


def _print(rows: list[Row], result: dict) -> None:
    print_table(rows)
    click.echo(describe(result["machine"]))
    for row in rows:
        if row.profile:
            ops = row.profile["by_op_type_ms"][:6]
            top = ", ".join(f"{k} {v:.0f}" for k, v in ops)
            trace = f"; trace {row.profile['trace']}" if row.profile.get("trace") else ""
            click.echo(f"profile {row.label}: {row.profile['run_ms']} ms/run; by op type (ms): "
                       f"{top}{trace}")
    if "chart" in result:
        click.echo(f"chart: {result['chart']}")
