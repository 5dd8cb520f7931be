"""`itm-onnx validate-arm64`: ORT's ARM64 kernels (emulated) against the host's."""

from __future__ import annotations

from pathlib import Path

import click

from ..arm64 import Arm64EnvConfig, ParityConfig, ParityReport, run_parity, setup_env
from ..errors import ItmOnnxError
from .common import emit, json_option, progress

DEFAULTS = ParityConfig()


def print_parity_report(report: ParityReport) -> None:
    arm, host = report.arm64, report.host
    click.echo(f"ARM64 ({arm['cpu']}, emulated; onnxruntime {arm['onnxruntime']}) vs host "
               f"({host['machine']}; onnxruntime {host['onnxruntime']}), {report.images}, "
               f"{report.threads} thread(s)")
    for m in report.models:
        verdict = "PASS" if m.passed else "FAIL"
        click.echo(f"  {m.model} {m.input_shape[2]}x{m.input_shape[3]}: max abs diff "
                   f"{m.max_abs_diff:.2e}, max {m.max_code_diff} code(s); pixels differing "
                   f"> 0 codes {100 * m.share_code_diff_gt0:.4f}%, > 1 code "
                   f"{100 * m.share_code_diff_gt1:.4f}%; within 1 code "
                   f"{100 * m.within_1_code:.4f}% [{verdict}, needs "
                   f"{100 * report.require_within_1_code:g}%] ({m.arm64_seconds:.1f} s emulated)")


@click.command("validate-arm64")
@click.option("--model", "models", type=click.Path(path_type=Path), multiple=True,
              help="ONNX model(s) to compare (repeat the option).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Folder of LDR photos (resized to the model's input); default: "
                   "synthetic scenes.")
@click.option("--count", type=click.IntRange(1, 64), default=DEFAULTS.count, show_default=True,
              help="Images to use.")
@click.option("--threads", type=click.IntRange(1, 64), default=DEFAULTS.threads,
              show_default=True, help="Intra-op threads on both sides.")
@click.option("--require", "require", type=click.FloatRange(0, 1),
              default=DEFAULTS.require_within_1_code, show_default=True,
              help="Share of pixels that must be within 1 10-bit code (else exit 1).")
@click.option("--env-dir", type=click.Path(path_type=Path), default=None,
              help="Where the ARM64 environment lives (default $ITM_ONNX_CACHE/arm64 or "
                   "~/.cache/itm-onnx/arm64).")
@click.option("--setup", is_flag=True,
              help="Create the ARM64 environment if missing or stale (downloads ~55 MB from "
                   "Debian and PyPI once; runs reuse it offline).")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seed of the synthetic images.")
@json_option
def validate_arm64_command(models, images, count, threads, require, env_dir, setup, seed,
                           as_json):
    """Run models with ONNX Runtime's ARM64 build (under QEMU) and on the host; compare.

    Needs qemu-user-static (`apt-get install qemu-user-static`). `--setup` builds the
    emulated environment once: Debian's arm64 Python 3.11 and the aarch64 wheels of the
    host's onnxruntime and numpy versions, with an ARM /proc/cpuinfo (Neoverse-N1).
    Reports, per model, the max absolute difference and the share of pixels whose 10-bit
    code (round(y * 1023)) differs by more than 0 and more than 1.

    \b
    Examples:
      itm-onnx validate-arm64 --setup
      itm-onnx validate-arm64 --model mqnet-mixed.onnx --model mqnet.onnx --json
    """
    env = Arm64EnvConfig(env_dir=env_dir) if env_dir else Arm64EnvConfig()
    if setup:
        setup_env(env, progress=None if as_json else progress)
        if not models:
            return
    if not models:
        raise click.UsageError("give at least one --model (or only --setup)")
    report = run_parity(ParityConfig(models=list(models), images=images, count=count,
                                     threads=threads, seed=seed, require_within_1_code=require,
                                     env=env), progress=None if as_json else progress)
    emit(report.to_dict(), as_json, lambda _: print_parity_report(report))
    failed = [m for m in report.models if not m.passed]
    if failed:
        raise ItmOnnxError(f"ARM64 parity below {100 * require:g}% within 1 code for "
                           f"{failed[0].model}: {100 * failed[0].within_1_code:.3f}%")
