"""Training and QAT fine-tuning of the registered models, on one CPU/GPU or under torchrun.

``train(TrainConfig(...))`` runs a seeded, resumable training and writes into
``out_dir``:

- ``resume.pt``: everything needed to continue (model, optimizer, scheduler, step,
  RNG state, best figure, history), saved atomically every ``checkpoint_every``
  steps, so that a killed run loses at most that many steps. It is written with
  ``torch.save`` but holds only tensors and plain containers, and is read back with
  ``torch.load(weights_only=True)`` (no pickled code runs on resume);
- ``last.safetensors`` and ``best.safetensors`` (by validation PU21-PSNR with ``--data
  real``, else mu-law PSNR; a run from trained weights counts them too): itm-onnx
  checkpoints whose ``info`` records the exact command, seed, data, steps, wall time,
  hardware and figures;
- the final model (the best one) at ``output`` when given.

Determinism. The data stream is a pure function of (seed, step): sample ``i`` of the
synthetic data is scene ``i`` of the training split, and folder data is visited in
per-epoch permutations drawn from (seed, epoch). A resumed run therefore sees exactly
the batches the uninterrupted run would have seen, and with the restored model,
optimizer and RNG states it reproduces it. (This replaces ``DistributedSampler``, which
cannot restart in the middle of an epoch; under torchrun each rank takes its stride of
the same global batch, which is what ``DistributedSampler`` does.)

Data and losses. ``synthetic``, ``hdr-folder`` and ``paired`` train inverse tone mapping
(targets: HDR radiance through ``--encoding`` minmax or mulaw, default mulaw);
``enhance`` trains image enhancement on LDR photo pairs matched by stem (DPED: phone
photo -> DSLR photo), whose targets are display images: their encoding is ``display``
(set automatically; any other is refused, as is ``display`` with HDR data). ``--loss``
picks MQNet's L1 + L2 + cosine loss (``itm``, default) or QATIE's (``qatie``), see
:mod:`.losses`; the checkpoints record which.

Learning-rate schedules: ``paper`` is the released recipe (Adam 5e-5, x0.99 every 8124
steps, i.e. nearly constant over a short run); ``cosine`` (default, with a short linear
warm-up) suits short from-scratch runs at a higher rate such as 1e-3; ``constant``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import save_checkpoint
from ..errors import CheckpointError, ItmOnnxError, UsageError
from ..models import create_model, get_entry
from ..utils.atomic import atomic_output
from ..utils.progress import bar
from . import qat as qat_lib
from .config import (
    RESUME_FILE,
    RESUME_FORMAT,
    SCHEDULES,
    SELECTIONS,
    TrainConfig,
    TrainResult,
    lr_factor,
)
from .losses import LOSSES
from .runtime import (
    barrier,
    command_line,
    hardware_description,
    init_distributed,
    pick_device,
)
from .stream import StepBatches, build_datasets

__all__ = ["SCHEDULES", "SELECTIONS", "TrainConfig", "TrainResult", "lr_factor", "train"]


# --- training state -------------------------------------------------------------------------

def _model_identity(model_name: str, model: nn.Module) -> dict[str, Any]:
    return {"model": model_name, "config": dataclasses.asdict(model.config)}


def load_resume_state(path: Path, model_name: str, model: nn.Module) -> dict[str, Any]:
    """Read ``resume.pt`` safely and check it belongs to this architecture."""
    if not path.is_file():
        raise UsageError(f"--resume: no training state at {path} (nothing to resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path}: not an itm-onnx training state")
    ours, theirs = _model_identity(model_name, model), state.get("identity", {})
    if ours != theirs:
        raise CheckpointError(
            f"{path}: training state is for {_describe_identity(theirs, ours)}, not for "
            f"{_describe_identity(ours, theirs)}; use another --out-dir or the original options"
        )
    return state


def _describe_identity(identity: dict[str, Any], other: dict[str, Any]) -> str:
    """'model NAME (the config values that differ from ``other``)'."""
    mine, theirs = identity.get("config", {}), other.get("config", {})
    differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    details = ", ".join(f"{k}={mine.get(k)!r}" for k in differing)
    return f"model {identity.get('model')!r}" + (f" ({details})" if details else "")


def _save_resume_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


# --- the run ------------------------------------------------------------------------------------

class Trainer:
    """One training run; ``run()`` returns a TrainResult. Built and driven by :func:`train`."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None]) -> None:
        self.config, self.env = config, init_distributed()
        self.log = log if self.env.main else (lambda _: None)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = pick_device(config.device, self.env)
        self._check_config()
        self.out_dir = Path(config.out_dir)
        self.resume_path = self.out_dir / RESUME_FILE
        torch.manual_seed(config.seed)
        self.model = self._build_model().to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = LOSSES[config.loss](
            vgg_weights=config.vgg_weights, log_mse_weight=config.log_mse_weight).to(self.device)
        self._check_loss_encoding()
        self.train_set, self.val_set, self.data_description = build_datasets(
            config, self.env.world)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.resolved_lr())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config))
        self.step, self.best, self.best_step = 0, -math.inf, -1
        # Model selection: PU21-PSNR on real light, mu-law PSNR on the other data.
        self.select_key = "pu21_psnr" if config.data == "real" else "psnr_mulaw"
        self.history: list[dict[str, float]] = []
        self.commands: list[str] = []
        self.elapsed_before = 0.0
        self.resumed_from: int | None = None

    def _check_config(self) -> None:
        c = self.config
        get_entry(c.model)
        if c.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {c.schedule!r}; choose one of {SCHEDULES}")
        if c.select not in SELECTIONS:
            raise UsageError(f"unknown selection {c.select!r}; choose one of {SELECTIONS}")
        if c.loss not in LOSSES:
            raise UsageError(f"unknown loss {c.loss!r}; choose one of {tuple(LOSSES)}")
        self._check_encoding()
        if c.crop <= 0 or c.crop % 32 or c.val_size <= 0 or c.val_size % 32:
            raise UsageError(f"crop {c.crop} and val size {c.val_size} must be positive "
                             "multiples of 32 (the model downsamples 32x)")
        if not 0.0 <= c.synthetic_mix <= 1.0:
            raise UsageError(f"--synthetic-mix must be between 0 and 1, got {c.synthetic_mix:g}")
        if c.view_scale < 1.0:
            raise UsageError(f"--view-scale must be at least 1, got {c.view_scale:g}")
        for name in ("steps", "batch_size", "val_every", "val_images", "val_views",
                     "checkpoint_every"):
            if getattr(c, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')} must be positive")
        if c.qat and c.init is None:
            raise UsageError("--qat fine-tunes a float model: pass its checkpoint with --init PATH")
        if c.init is not None and c.model_options:
            raise UsageError("--model-option cannot change a model loaded with --init")

    def _check_encoding(self) -> None:
        """Display targets (enhance data) and HDR targets (the rest) do not mix."""
        from ..data.encoding import ENCODINGS

        c, encoding = self.config, self.config.resolved_encoding()
        if encoding not in ENCODINGS:
            raise UsageError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}")
        if c.data == "enhance" and encoding != "display":
            raise UsageError(
                f"--data enhance learns display images, not HDR radiance: its encoding is "
                f"display (the default with enhance), not {encoding!r}; drop --encoding")
        if c.data != "enhance" and encoding == "display":
            raise UsageError(
                f"--encoding display is for display-image targets (--data enhance); "
                f"--data {c.data} has HDR targets: use minmax or mulaw")

    def _check_loss_encoding(self) -> None:
        """A loss that decodes its targets (the PU21 ones: radiance relative to the clip
        level) names the encoding it needs; any other target would train on numbers that
        mean nothing."""
        needed = getattr(self.loss_fn, "target_encoding", None)
        encoding = self.config.resolved_encoding()
        if needed is not None and needed != encoding:
            hint = (" (radiance relative to the clip level, the default with --data real)"
                    if needed == "mulaw-clip" else "")
            raise UsageError(f"--loss {self.config.loss} needs {needed} targets{hint}, "
                             f"not {encoding!r}")

    def _build_model(self) -> nn.Module:
        c = self.config
        encoding = c.resolved_encoding()
        options = {"output_encoding": encoding, **c.model_options}
        if encoding != "mulaw-clip" and "output_transform" not in options and \
                getattr(create_model(c.model).config, "output_transform", None) == "hdr":
            # The "hdr" transform predicts mulaw-clip; other targets get the plain residual.
            options["output_transform"] = "bounded"
        if c.init is not None:
            model = create_model(c.model, checkpoint=c.init)
            if model.config.output_encoding != encoding:
                raise UsageError(
                    f"--init {c.init}: model outputs {model.config.output_encoding!r} but "
                    f"the training targets are {encoding!r}")
            if c.qat:
                if getattr(model.config, "qat", False):
                    raise UsageError(f"--init {c.init} is already a QAT checkpoint")
                model = qat_lib.prepare_qat(model)
            model.variant = c.model
            return model.train()
        model = create_model(c.model, **options)
        if c.init_weights is not None:
            _load_matching_weights(model, c.init_weights)
        return model.train()

    # resume / checkpoints -----------------------------------------------------------------

    def _prepare_out_dir(self) -> None:
        if self.env.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.env)
        if not self.config.resume and self.resume_path.exists():
            raise UsageError(f"{self.out_dir} holds a run ({RESUME_FILE}): pass --resume to "
                             "continue it, or choose another --out-dir")

    def _restore(self) -> None:
        state = load_resume_state(self.resume_path, self.config.model, self.model)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step, self.best, self.best_step = state["step"], state["best"], state["best_step"]
        self.history = list(state["history"])
        self.commands = list(state["commands"])
        self.elapsed_before = float(state["elapsed"])
        previous_loss = state.get("loss", "itm")  # states written before --loss existed: itm
        if previous_loss != self.config.loss:
            self.log(f"note: loss changed from {previous_loss!r} to {self.config.loss!r}")
        self.resumed_from = self.step
        if self.config.qat and self.step >= self.config.qat_observer_steps:
            qat_lib.set_observers(self.model, False)
        if state["steps"] != self.config.steps:
            self.log(f"note: total steps changed from {state['steps']} to {self.config.steps}; "
                     "the learning-rate schedule follows the new total")

    def _state(self) -> dict[str, Any]:
        return {
            "format": RESUME_FORMAT,
            "identity": _model_identity(self.config.model, self._bare_model()),
            "model": self._bare_model().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.step,
            "steps": self.config.steps,
            "best": self.best,
            "best_step": self.best_step,
            "history": self.history,
            "commands": self.commands,
            "elapsed": self.elapsed(),
            "loss": self.config.loss,
        }

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.started)

    def info(self, val: dict[str, float] | None) -> dict[str, Any]:
        c = self.config
        return {
            "command": self.commands[0] if self.commands else None,
            "commands": self.commands,
            "seed": c.seed,
            "data": self.data_description,
            "encoding": c.resolved_encoding(),
            "crop": c.crop,
            "view_scale": c.view_scale,
            "batch_size": c.batch_size,
            "world_size": self.env.world,
            "steps": self.step,
            "planned_steps": c.steps,
            "optimizer": "Adam",
            "lr": c.resolved_lr(),
            "schedule": c.schedule + (f" (warm-up {c.resolved_warmup()} steps)"
                                      if c.schedule == "cosine" else ""),
            "loss": self.loss_fn.describe(),
            "loss_name": c.loss,
            "qat": c.qat,
            "init": str(c.init) if c.init else None,
            "init_info": self._init_info(),
            "wall_seconds": round(self.elapsed(), 1),
            "hardware": hardware_description(self.device),
            "figures": {
                "val": val,
                "best_val_psnr_mulaw": self.best if self.select_key == "psnr_mulaw" else None,
                f"best_val_{self.select_key}": self.best,
                "selected_by": self.select_key,
                "best_step": self.best_step,
            },
        }

    def _init_info(self) -> dict[str, Any] | None:
        """Provenance of the --init checkpoint (its own info, history left out)."""
        if self.config.init is None:
            return None
        from ..checkpoint import load_checkpoint

        info = dict(load_checkpoint(self.config.init).info)
        info.pop("history", None)
        return info

    def _save_model(self, path: Path, val: dict[str, float] | None) -> None:
        save_checkpoint(path, self._bare_model(), model_name=self.config.model,
                        info=self.info(val))

    def _bare_model(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    # loops --------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and mu-law PSNR (decoded, as ``itm-onnx evaluate``) on the val set.

        Display targets (enhance data) also get ``psnr``: the mean per-image PSNR of the
        [0, 1] images themselves (peak 1, capped at 100 dB), the figure QATIE reports.
        """
        from ..data.encoding import ENCODINGS
        from ..metrics import psnr, psnr_mulaw

        model = self._bare_model()
        was_training = model.training
        model.eval()
        if self.select_key == "pu21_psnr":
            figures = self._validate_real(model)
            model.train(was_training)
            return figures
        display = self.config.resolved_encoding() == "display"
        decode = ENCODINGS[self.config.resolved_encoding()].decode
        losses, psnrs, plain = [], [], []
        for ldr, target in self._val_batches:
            pred = model(ldr.to(self.device))
            losses.append(float(self._loss(pred, target.to(self.device), ldr)[0]))
            for p, t in zip(decode(pred.cpu()).numpy(), decode(target).numpy(), strict=True):
                p, t = p.transpose(1, 2, 0), t.transpose(1, 2, 0)
                psnrs.append(psnr_mulaw(p, t))
                if display:
                    plain.append(min(psnr(p, t), 100.0))
        model.train(was_training)
        figures = {"loss": float(np.mean(losses)), "psnr_mulaw": float(np.mean(psnrs))}
        if display:
            figures["psnr"] = float(np.mean(plain))
        return figures

    @torch.no_grad()
    def _validate_real(self, model: nn.Module) -> dict[str, float]:
        """Loss and the real-light figures (itm_onnx.metrics) on the fixed val views."""
        from ..data.encoding import ENCODINGS
        from ..metrics import real_light_figures

        decode = ENCODINGS[self.config.resolved_encoding()].decode
        samples = self.val_set.samples()
        losses, rows, position = [], [], 0
        for ldr, target in self._val_batches:
            pred = model(ldr.to(self.device))
            losses.append(float(self._loss(pred, target.to(self.device), ldr)[0]))
            for p in decode(pred.cpu()).numpy():
                s = samples[position]
                rows.append(real_light_figures(p.transpose(1, 2, 0), s.linear, s.ldr))
                position += 1
        figures = {"loss": float(np.mean(losses))}
        for key in ("pu21_psnr", "clipped_stops_rms", "clip_floor_share", "psnr_mulaw"):
            values = [r[key] for r in rows if math.isfinite(r[key])]
            figures[key] = float(np.mean(values)) if values else math.nan
        return figures

    def _loader(self) -> DataLoader:
        c = self.config
        sampler = StepBatches(self.step, c.steps, c.batch_size, self.env)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=c.workers,
                          persistent_workers=False)

    def run(self) -> TrainResult:
        from ..data.images import ImageError

        c = self.config
        self.started = time.perf_counter()
        self._prepare_out_dir()
        if c.resume:
            self._restore()
        self.commands.append(c.command or command_line())
        if self.env.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        try:
            self._val_batches = list(DataLoader(self.val_set, batch_size=8, shuffle=False))
            self._announce()
            val = self._train_loop()
        except ImageError as exc:
            raise ItmOnnxError(f"data: {exc}") from None
        return self._finish(val)

    def _announce(self) -> None:
        c = self.config
        start = f"resuming at step {self.step}" if self.resumed_from is not None else "starting"
        self.log(
            f"{start}: {c.model}{' (QAT)' if c.qat else ''} on {self.data_description}; "
            f"batch {c.batch_size} x {self.env.world} process(es), {c.steps} steps, "
            f"{self.device} ({torch.get_num_threads()} threads); Adam lr {c.resolved_lr():g} "
            f"{c.schedule}; loss {self.loss_fn.describe()}; out {self.out_dir}")

    def _loss(self, pred: torch.Tensor, target: torch.Tensor,
              ldr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss; those that score like the real-light benchmark also see the photo."""
        if getattr(self.loss_fn, "takes_input", False):
            return self.loss_fn(pred, target, self._to_device(ldr))
        return self.loss_fn(pred, target)

    def _train_step(self, ldr: torch.Tensor, target: torch.Tensor) -> float:
        if self.config.qat:
            observing = self.step < self.config.qat_observer_steps
            qat_lib.set_observers(self.model, observing)
            if not observing and not qat_lib.has_bias_grids(self._bare_model()):
                # Ranges are final: from now on biases train on their int32 grids too.
                qat_lib.assign_bias_grids(self._bare_model(), self.config.seed)
        pred = self.model(self._to_device(ldr))
        loss, _ = self._loss(pred, target.to(self.device, non_blocking=True), ldr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if self.config.channels_last \
            else batch

    def _train_loop(self) -> dict[str, float] | None:
        c = self.config
        self.model.train()
        if self.step == 0 and not c.qat and self.env.main:
            self._validate_start()
        with bar("training", total=c.steps - self.step, unit="step") as steps:
            val = self._run_steps(steps)
        if val is None and self.env.main:  # resumed at the end: nothing left to train
            val = self.validate()
        return val

    def _run_steps(self, steps: Any) -> dict[str, float] | None:
        """Train to the last step, validating and saving on schedule; the last validation."""
        c, val = self.config, None
        window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        for ldr, target in self._loader():
            window_loss += self._train_step(ldr, target)
            self.step += 1
            window_steps += 1
            steps.update(1)
            last = self.step == c.steps
            if self.step % c.val_every == 0 or last:
                rate = window_steps / (time.perf_counter() - window_start)
                val = self._validate_and_save(window_loss / window_steps, rate)
                window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
            elif self.step % c.checkpoint_every == 0 and self.env.main:
                _save_resume_state(self.resume_path, self._state())
        return val

    def _validate_start(self) -> None:
        """Figures of the untrained model: the line every later one is compared with.

        A run from trained weights (``--init``, ``--init-weights``) counts them as its first
        candidate for best: a fine-tune that never beats its start then hands back the start,
        not the least bad of its own checkpoints (which ``-o models/...`` would ship).
        """
        val = self.validate()
        self.history.append({"step": 0, "train_loss": None, "val_loss": val["loss"],
                             "lr": 0.0, **_val_record(val)})
        self.log(f"step 0/{self.config.steps}  val loss {val['loss']:.4f}  "
                 f"{_val_line(val)} (before training)")
        if self.config.init is not None or self.config.init_weights is not None:
            self.best, self.best_step = val[self.select_key], 0
            self._save_model(self.out_dir / "best.safetensors", val)

    def _validate_and_save(self, train_loss: float, rate: float) -> dict[str, float] | None:
        if not self.env.main:
            barrier(self.env)
            return None
        val = self.validate()
        record = {"step": self.step, "train_loss": train_loss, "val_loss": val["loss"],
                  "lr": self.scheduler.get_last_lr()[0], **_val_record(val)}
        self.history.append(record)
        improved = val[self.select_key] > self.best
        if improved:
            self.best, self.best_step = val[self.select_key], self.step
            self._save_model(self.out_dir / "best.safetensors", val)
        self._save_model(self.out_dir / "last.safetensors", val)
        _save_resume_state(self.resume_path, self._state())
        eta = (self.config.steps - self.step) / rate if rate > 0 else float("nan")
        self.log(f"step {self.step}/{self.config.steps}  loss {train_loss:.4f}  "
                 f"val loss {val['loss']:.4f}  {_val_line(val)}"
                 f"{' *' if improved else ''}  {rate:.2f} it/s  "
                 f"ETA {_duration(eta)}")
        barrier(self.env)
        return val

    def _finish(self, val: dict[str, float] | None) -> TrainResult:
        best, last = self.out_dir / "best.safetensors", self.out_dir / "last.safetensors"
        if self.env.main:
            for path in (best, last):
                if not path.is_file():  # e.g. resumed after the last step
                    self._save_model(path, val)
        chosen = best if self.config.select == "best" else last
        if self.env.main and self.config.select == "best" and self.best_step == 0:
            self.log("no validation beat the starting weights: best.safetensors holds them")
        final = Path(self.config.output) if self.config.output else chosen
        info = self.info(val)
        if self.env.main and self.config.output:
            self._write_final(chosen, final)
        barrier(self.env)
        if self.env.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
        val = val or {"loss": math.nan, "psnr_mulaw": math.nan}
        return TrainResult(
            out_dir=str(self.out_dir), final_checkpoint=str(final), best_checkpoint=str(best),
            last_checkpoint=str(last), steps=self.step,
            best_step=self.best_step, best_val_psnr_mulaw=self.best,
            final_val_psnr_mulaw=val["psnr_mulaw"], final_val_loss=val["loss"],
            wall_seconds=round(self.elapsed(), 1), resumed_from_step=self.resumed_from,
            info=info, rank=self.env.rank)

    def _write_final(self, chosen: Path, final: Path) -> None:
        """Copy the chosen model to ``output``, its info updated with the run's totals."""
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(chosen)
        model = create_model(self.config.model, checkpoint=chosen)
        selected = (f"best validation {self.select_key} (step {self.best_step})"
                    if self.config.select == "best" else f"last (step {ckpt.info.get('steps')})")
        info = {**ckpt.info, "commands": self.commands, "init_info": self._init_info(),
                "steps_trained": self.step,
                "wall_seconds": round(self.elapsed(), 1), "selected": selected,
                "history": self.history}
        if not final.parent.is_dir():
            raise UsageError(f"--output folder {final.parent} does not exist")
        save_checkpoint(final, model, model_name=self.config.model, info=info)


def _load_matching_weights(model: nn.Module, path: Path) -> None:
    """Copy every same-named, same-shaped tensor of checkpoint ``path`` into ``model``.

    The head's last conv is then zeroed: with the residual output transforms the model
    starts exactly at the identity prediction, whatever the old head had learned.
    """
    from ..checkpoint import load_checkpoint

    try:
        tensors = load_checkpoint(path).state_dict
    except CheckpointError as exc:
        raise UsageError(f"--init-weights: {exc}") from None
    own = model.state_dict()
    matching = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise UsageError(f"--init-weights {path}: no tensor fits this model")
    own.update(matching)
    model.load_state_dict(own)
    last = getattr(getattr(model, "head", None), "conv3", None)
    if last is not None:
        with torch.no_grad():
            last.weight.zero_()


def _plain_psnr(val: dict[str, float]) -> str:
    """The log line's plain-PSNR field, for runs that have one (display targets)."""
    return f"  PSNR {val['psnr']:.2f} dB" if "psnr" in val else ""


def _val_record(val: dict[str, float]) -> dict[str, float]:
    """A validation's figures as history fields (``val_<name>``)."""
    return {f"val_{k}": v for k, v in val.items() if k != "loss"}


def _val_line(val: dict[str, float]) -> str:
    """The figures of one validation, for the log line."""
    if "pu21_psnr" in val:
        return (f"val PU21 {val['pu21_psnr']:.2f} dB  clipped RMS "
                f"{val['clipped_stops_rms']:.2f} stops  PSNR-mu {val['psnr_mulaw']:.2f} dB")
    return f"val PSNR-mu {val['psnr_mulaw']:.2f} dB{_plain_psnr(val)}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train(config: TrainConfig, log: Callable[[str], None] = lambda _: None) -> TrainResult:
    """Run (or resume) a training; raises ItmOnnxError subclasses with one-line messages."""
    return Trainer(config, log).run()
