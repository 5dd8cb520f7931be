"""Shared fixtures: one tiny random-init export per test session, made through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from itm_onnx.checkpoint import save_checkpoint
from itm_onnx.cli import main
from itm_onnx.models import create_model

TINY = 64  # smallest side that keeps MQNet's 1/32 bottleneck at 2x2


def tiny_export_args(output: Path, *extra: str) -> list[str]:
    """CLI arguments of a TINY x TINY random-init export to ``output``."""
    return ["export", "--random-init", "--height", str(TINY), "--width", str(TINY),
            "--output", str(output), *extra]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a busy 2-core machine, two threads spin-wait for each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mqnet-random.safetensors"
    save_checkpoint(path, create_model("mqnet"), info={"version": "test"})
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, runner) -> tuple[Path, dict]:
    """(artifact path, --json report) of a 64x64 random-init fp32 export."""
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    result = runner.invoke(main, tiny_export_args(out, "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)
