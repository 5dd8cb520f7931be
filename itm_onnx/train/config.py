"""What a training run depends on (:class:`TrainConfig`, the CLI's defaults), what it
returns (:class:`TrainResult`), and its learning-rate schedule (:func:`lr_factor`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULES = ("cosine", "paper", "constant")
SELECTIONS = ("best", "last")
DEFAULT_LR = {"cosine": 1e-3, "paper": 5e-5, "constant": 1e-3}
DEFAULT_QAT_LR = 1e-4
PAPER_DECAY, PAPER_DECAY_STEPS = 0.99, 8124
RESUME_FILE = "resume.pt"
RESUME_FORMAT = "itm-onnx-train-state-1"


@dataclass
class TrainConfig:
    """Everything a run depends on; the defaults are the CLI's defaults."""

    out_dir: Path = Path("runs/mqnet")
    output: Path | None = None  # also write the final (best) model here
    model: str = "mqnet"
    model_options: dict[str, Any] = field(default_factory=dict)  # config overrides
    data: str = "synthetic"  # one of DATA_SOURCES
    hdr_dir: Path | None = None  # data="real", "hdr-folder" or "paired"
    # data="real": validation HDR files (the validation split; None: hold some out of
    # hdr_dir), views per validation file, and the share of procedural scenes mixed in.
    val_dir: Path | None = None
    val_views: int = 2
    synthetic_mix: float = 0.0
    # data="real": crops come from views rendered up to this many times the crop size
    # (log-uniform; 1 = the whole view at crop size).
    view_scale: float = 1.0
    ldr_dir: Path | None = None  # data="paired"
    input_dir: Path | None = None  # data="enhance": LDR input photos
    target_dir: Path | None = None  # data="enhance": LDR target photos, matched by stem
    # Target encoding, a key of itm_onnx.data.encoding.ENCODINGS; None: display with
    # data="enhance", else mulaw (see resolved_encoding).
    encoding: str | None = None
    loss: str = "itm"  # a key of itm_onnx.train.losses.LOSSES
    crop: int = 128
    batch_size: int = 8
    steps: int = 1000
    lr: float | None = None  # None: DEFAULT_LR[schedule], or DEFAULT_QAT_LR with qat
    schedule: str = "cosine"  # one of SCHEDULES
    warmup_steps: int | None = None  # cosine only; None: 3 % of steps
    val_every: int = 100
    val_images: int = 16
    val_size: int = 128
    checkpoint_every: int = 25
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    device: str = "auto"  # auto: CUDA if available, else CPU
    channels_last: bool = True  # NHWC memory format: ~20 % faster steps on CPU here
    vgg_weights: Path | None = None  # torchvision VGG16 state dict: adds the perceptual term
    log_mse_weight: float = 0.0  # optional per-image log-MSE ("PSNR loss") term, see losses
    init: Path | None = None  # start from this itm-onnx checkpoint (required with qat)
    # Start from these weights but this run's model config (e.g. another output encoding);
    # the head's last conv is zeroed so that the "hdr" output starts as the identity.
    init_weights: Path | None = None
    qat: bool = False
    qat_observer_steps: int = 100  # activation ranges follow the data, then freeze
    resume: bool = False
    # Which checkpoint becomes the final model: the best by validation mu-law PSNR, or the
    # last one (the end of the schedule; steadier when the validation set is small).
    select: str = "best"
    command: str | None = None  # the exact command line, recorded in the checkpoints

    def resolved_encoding(self) -> str:
        if self.encoding is not None:
            return self.encoding
        return {"enhance": "display", "real": "mulaw-clip"}.get(self.data, "mulaw")

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return DEFAULT_QAT_LR if self.qat else DEFAULT_LR[self.schedule]

    def resolved_warmup(self) -> int:
        if self.schedule != "cosine":
            return 0
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps * 3 // 100)


@dataclass
class TrainResult:
    out_dir: str
    final_checkpoint: str
    best_checkpoint: str
    last_checkpoint: str
    steps: int
    best_step: int
    best_val_psnr_mulaw: float
    final_val_psnr_mulaw: float
    final_val_loss: float
    wall_seconds: float
    resumed_from_step: int | None
    info: dict[str, Any]
    rank: int = 0  # under torchrun, only rank 0's result carries the figures

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if config.schedule == "paper":
        return PAPER_DECAY ** (step / PAPER_DECAY_STEPS)
    if config.schedule == "constant":
        return 1.0
    warmup = config.resolved_warmup()
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
