"""`itm-onnx train`: train (or QAT fine-tune) a model; resumable, seeded, torchrun-ready."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..data.encoding import ENCODINGS
from ..errors import ItmOnnxError, UsageError
from ..models import list_models
from ..models.registry import get_entry
from ..train.losses import LOSSES
from ..train.runtime import command_line
from ..train.stream import DATA_SOURCES
from ..train.trainer import SCHEDULES, SELECTIONS, TrainConfig, TrainResult, train
from .common import emit, json_option, progress

DEFAULTS = TrainConfig()


def parse_model_options(items: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as JSON when they parse (numbers, true/false)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def print_result(result: TrainResult) -> None:
    figures = result.info.get("figures", {})
    key = figures.get("selected_by", "psnr_mulaw")
    click.echo(f"trained {result.steps} steps in {result.wall_seconds:.0f} s "
               f"(best val {key} {figures.get(f'best_val_{key}', float('nan')):.2f} dB at step "
               f"{result.best_step})")
    click.echo(f"  final model {result.final_checkpoint}")
    click.echo(f"  run folder {result.out_dir} (best.safetensors, last.safetensors, resume.pt)")


@click.command("train")
@click.option("--out-dir", type=click.Path(path_type=Path), default=DEFAULTS.out_dir,
              show_default=True, help="Run folder: resume state, best and last checkpoints.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Also write the final (best) model here, e.g. models/mqnet.safetensors.")
@click.option("--model", "model_name", type=click.Choice(list_models()), default=DEFAULTS.model,
              show_default=True, help="Registered model to train.")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Override a model config field (repeatable), e.g. output_transform=sigmoid.")
@click.option("--data", type=click.Choice(DATA_SOURCES), default=DEFAULTS.data,
              show_default=True,
              help="Procedural scenes; real: camera shots of captured HDR (--hdr-dir, "
                   "--val-dir; targets relative to the clip level); a folder of HDR files "
                   "with tone-mapped inputs; LDR/HDR pairs; or LDR/LDR enhancement pairs "
                   "(--input-dir, --target-dir; e.g. DPED).")
@click.option("--hdr-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of .hdr/.exr files (--data real, hdr-folder or paired).")
@click.option("--val-dir", type=click.Path(path_type=Path), default=None,
              help="--data real: validation HDR files (model selection only) [default: hold "
                   "10 % of --hdr-dir out].")
@click.option("--val-views", type=int, default=DEFAULTS.val_views, show_default=True,
              help="--data real: fixed views per validation file.")
@click.option("--synthetic-mix", type=float, default=DEFAULTS.synthetic_mix,
              show_default=True,
              help="--data real: share of samples that are procedural scenes (0-1).")
@click.option("--view-scale", type=float, default=DEFAULTS.view_scale, show_default=True,
              help="--data real: crop from views rendered up to this many times the crop "
                   "size (log-uniform), so that crops show light at the pixel scale of "
                   "larger photos; 1 = the whole view at crop size.")
@click.option("--ldr-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of LDR photos matched to --hdr-dir by file stem (--data paired).")
@click.option("--input-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of input photos, e.g. DPED's phone photos (--data enhance).")
@click.option("--target-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of target photos matched to --input-dir by file stem, e.g. DPED's "
                   "DSLR photos (--data enhance).")
@click.option("--encoding", type=click.Choice(sorted(ENCODINGS)), default=None,
              help="How the [0, 1] output encodes the target [default: mulaw-clip with --data "
                   "real (radiance relative to the clip level), mulaw (relative to the image "
                   "maximum) with other HDR data, display with --data enhance].")
@click.option("--loss", "loss", type=click.Choice(list(LOSSES)), default=DEFAULTS.loss,
              show_default=True,
              help="itm: MQNet's L1 + L2 + 0.1 (1 - cosine); qatie: the QATIE paper's "
                   "2 PSNR(luma) + 100 (1 - SSIM) + outlier-aware L1.")
@click.option("--crop", type=int, default=DEFAULTS.crop, show_default=True,
              help="Training crop side (multiple of 32).")
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True,
              help="Images per step and process.")
@click.option("--steps", type=int, default=DEFAULTS.steps, show_default=True,
              help="Total optimizer steps (raise it with --resume to train on).")
@click.option("--lr", type=float, default=None,
              help="Base learning rate [default: 1e-3 cosine/constant, 5e-5 paper, 1e-4 QAT].")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=DEFAULTS.schedule,
              show_default=True,
              help="cosine (with warm-up), paper (x0.99 per 8124 steps), or constant.")
@click.option("--warmup-steps", type=int, default=None,
              help="Linear warm-up of the cosine schedule [default: 3 % of --steps].")
@click.option("--val-every", type=int, default=DEFAULTS.val_every, show_default=True,
              help="Validate, log a line and save best/last every N steps.")
@click.option("--val-images", type=int, default=DEFAULTS.val_images, show_default=True,
              help="Validation images (fixed: val split, or held out from the folder).")
@click.option("--val-size", type=int, default=DEFAULTS.val_size, show_default=True,
              help="Validation image side (multiple of 32).")
@click.option("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every,
              show_default=True, help="Save the resume state every N steps.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seed of the weights and of the data stream.")
@click.option("--workers", type=int, default=DEFAULTS.workers, show_default=True,
              help="DataLoader worker processes.")
@click.option("--threads", type=int, default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=DEFAULTS.device,
              show_default=True, help="auto: CUDA when available, else CPU.")
@click.option("--channels-last/--no-channels-last", default=DEFAULTS.channels_last,
              show_default=True, help="NHWC memory format (faster on CPU).")
@click.option("--vgg-weights", type=click.Path(path_type=Path), default=None,
              help="Local torchvision VGG16 state dict: adds the paper's 0.05 x VGG term "
                   "(--loss itm).")
@click.option("--log-mse-weight", type=float, default=DEFAULTS.log_mse_weight,
              show_default=True,
              help="Add this x mean per-image log10(MSE) (a PSNR loss; not in the paper; "
                   "--loss itm).")
@click.option("--init", "init", type=click.Path(path_type=Path), default=None,
              help="Start from this itm-onnx checkpoint (the float model, with --qat).")
@click.option("--init-weights", type=click.Path(path_type=Path), default=None,
              help="Start from this checkpoint's weights with this run's model config (e.g. "
                   "another encoding); the head's last conv starts at zero (= identity).")
@click.option("--qat", is_flag=True,
              help="Quantization-aware fine-tuning of --init (export then gives QDQ ONNX).")
@click.option("--qat-observer-steps", type=int, default=DEFAULTS.qat_observer_steps,
              show_default=True, help="Steps during which activation ranges adapt, then freeze.")
@click.option("--resume", is_flag=True, help="Continue the run in --out-dir from resume.pt.")
@click.option("--select", type=click.Choice(SELECTIONS), default=DEFAULTS.select,
              show_default=True,
              help="Final model: best validation mu-law PSNR, or the last checkpoint.")
@json_option
def train_command(out_dir, output, model_name, model_options, data, hdr_dir, val_dir, val_views,
                  synthetic_mix, view_scale, ldr_dir, input_dir,
                  target_dir, encoding, loss, crop, batch_size, steps, lr, schedule, warmup_steps,
                  val_every, val_images, val_size, checkpoint_every, seed, workers, threads,
                  device, channels_last, vgg_weights, log_mse_weight, init, init_weights, qat,
                  qat_observer_steps, resume, select, as_json):
    """Train a model on synthetic scenes, your HDR data or enhancement pairs; seeded, resumable.

    Logs one line per validation (step, loss, val mu-law PSNR, it/s, ETA) to stderr.
    The run folder gets resume.pt (every --checkpoint-every steps, atomically: a killed
    run loses little), best.safetensors and last.safetensors; the final model records
    the command, seed, data, steps, wall time, hardware and figures. Under torchrun
    (WORLD_SIZE > 1) it trains with DistributedDataParallel and rank 0 writes.

    \b
    Examples:
      itm-onnx train --steps 3000 --crop 128 --out-dir runs/mqnet -o models/mqnet.safetensors
      itm-onnx train --out-dir runs/mqnet --steps 4000 --resume
      itm-onnx train --data real --hdr-dir hdr/train --val-dir hdr/val --synthetic-mix 0.2
      itm-onnx train --data hdr-folder --hdr-dir ~/hdr --schedule paper --steps 100000
      itm-onnx train --model gated-unet-c24 --data enhance --loss qatie --crop 96 \\
        --val-size 96 --input-dir dped/iphone/training_data/iphone \\
        --target-dir dped/iphone/training_data/canon --out-dir runs/dped
      itm-onnx train --qat --init models/mqnet.safetensors --steps 500 --out-dir runs/qat
      torchrun --nproc-per-node 4 "$(which itm-onnx)" train --out-dir runs/ddp
    """
    options = parse_model_options(model_options)
    try:  # a bad --model-option is the user's to change (exit 2), found before any work
        get_entry(model_name).make_config(**options)
    except ItmOnnxError as exc:
        raise UsageError(str(exc)) from None
    config = TrainConfig(
        out_dir=out_dir, output=output, model=model_name,
        model_options=options, data=data, hdr_dir=hdr_dir,
        val_dir=val_dir, val_views=val_views, synthetic_mix=synthetic_mix,
        view_scale=view_scale,
        init_weights=init_weights,
        ldr_dir=ldr_dir, input_dir=input_dir, target_dir=target_dir, encoding=encoding,
        loss=loss, crop=crop, batch_size=batch_size, steps=steps, lr=lr,
        schedule=schedule, warmup_steps=warmup_steps, val_every=val_every,
        val_images=val_images, val_size=val_size, checkpoint_every=checkpoint_every, seed=seed,
        workers=workers, threads=threads, device=device, channels_last=channels_last,
        vgg_weights=vgg_weights, log_mse_weight=log_mse_weight, init=init, qat=qat,
        qat_observer_steps=qat_observer_steps, resume=resume, select=select,
        command=command_line(),
    )
    result = train(config, log=progress)
    if result.rank == 0:
        emit(result.to_dict(), as_json, lambda _: print_result(result))
