"""Where a training run runs: its torchrun rank, its device, and what it records of them.

``Dist`` is this process's place in a torchrun job (rank 0 of 1 without torchrun); the
hardware description and the command line go into every checkpoint's ``info``.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..utils.cpu import cpu_facts


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(env: Dist) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def pick_device(name: str, env: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        return torch.device("cuda", env.local_rank)
    return torch.device(name)


def hardware_description(device: torch.device) -> dict[str, Any]:
    cpu = cpu_facts()
    info = {
        "device": str(device),
        "cpu": cpu["model"] or platform.processor() or platform.machine(),
        "cpu_id": cpu["cpu_id"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line() -> str:
    """The command as typed: ``itm-onnx ...`` when run from the CLI."""
    program = Path(sys.argv[0]).name
    return shlex.join([program if program == "itm-onnx" else sys.argv[0], *sys.argv[1:]])
