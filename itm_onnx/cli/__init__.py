"""The `itm-onnx` command line: a thin Click layer over the Python API."""

from __future__ import annotations

import click

from .. import __version__
from .common import ItmGroup

# Command name -> "module:attribute" under itm_onnx.cli. Loaded when used (click's lazy
# subcommand pattern): most commands import PyTorch and ONNX Runtime, which cost seconds
# and ~0.25 GB in every process that starts the CLI; `itm-onnx pipeline` keeps its own
# process small while its stages run in child processes (itm_onnx/pipeline.py).
COMMANDS = {
    "export": "export:export_command",
    "pipeline": "pipeline:pipeline_command",
    "train": "train:train_command",
    "evaluate": "evaluate:evaluate_command",
    "quantize": "quantize:quantize_command",
    "run": "run:run_command",
    "validate": "validate:validate_command",
    "bench": "bench:bench_command",
    "mobile-check": "mobile:mobile_check_command",
    "mobile-prepare": "mobile:mobile_prepare_command",
    "validate-arm64": "arm64:validate_arm64_command",
    "compare": "compare:compare_command",
}


@click.group(cls=ItmGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="itm-onnx")
def main(debug: bool) -> None:
    """itm-onnx: take an inverse-tone-mapping network from PyTorch to a fast, faithful,
    mobile-ready ONNX artifact.

    Pipeline: checkpoint -> PyTorch model -> fp32 ONNX (export) -> mixed-precision QDQ
    ONNX (quantize) -> validation and benchmark reports. `itm-onnx pipeline` runs it all
    on the shipped default model.
    """

