"""The `itm-onnx` command line: a thin Click layer over the Python API."""

from __future__ import annotations

import click

from .. import __version__
from .arm64 import validate_arm64_command
from .bench import bench_command
from .common import ItmGroup
from .compare import compare_command
from .evaluate import evaluate_command
from .export import export_command
from .mobile import mobile_check_command, mobile_prepare_command
from .pipeline import pipeline_command
from .quantize import quantize_command
from .run import run_command
from .train import train_command
from .validate import validate_command


@click.group(cls=ItmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="itm-onnx")
def main(debug: bool) -> None:
    """itm-onnx: take an inverse-tone-mapping network from PyTorch to a fast, faithful,
    mobile-ready ONNX artifact.

    Pipeline: checkpoint -> PyTorch model -> fp32 ONNX (export) -> mixed-precision QDQ
    ONNX (quantize) -> validation and benchmark reports. `itm-onnx pipeline` runs it all
    on the shipped default model.
    """


for command in (export_command, pipeline_command, train_command, evaluate_command,
                quantize_command, run_command, validate_command, bench_command,
                mobile_check_command, mobile_prepare_command, validate_arm64_command,
                compare_command):
    main.add_command(command)
