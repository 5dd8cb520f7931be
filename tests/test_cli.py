"""The CLI's contract: --help everywhere, one-line errors with the right exit code."""

import subprocess
import sys

import click
import pytest

from itm_onnx.cli import main

from .conftest import TINY, tiny_export_args


def assert_one_line_error(result, code, fragment):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1


def test_every_command_has_help(runner):
    assert runner.invoke(main, ["--help"]).exit_code == 0
    names = main.list_commands(click.Context(main))
    assert {"export", "quantize", "bench", "pipeline", "run", "train", "evaluate"} <= set(names)
    for name in names:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output


def test_cli_starts_without_torch_or_onnxruntime():
    # `itm-onnx --help` in a fraction of a second, and a small parent for `pipeline`, whose
    # stages run in child processes.
    code = ("import sys; import itm_onnx.cli, itm_onnx.cli.pipeline; "
            "print(sorted({'torch', 'onnxruntime', 'onnx'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_pipeline_stage_error_is_one_line(runner, tmp_path):
    # Raised in the export stage's child process, reported here like any usage error.
    result = runner.invoke(main, ["pipeline", "--random-init", "--height", "100", "--width",
                                  "64", "--out-dir", str(tmp_path / "out")])
    assert_one_line_error(result, 2, "height 100 is not a positive multiple of 32")


def test_bad_size_is_usage_error(runner, tmp_path):
    result = runner.invoke(
        main, ["export", "--random-init", "--height", "100", "--output", str(tmp_path / "m.onnx")]
    )
    assert_one_line_error(result, 2, "height 100 is not a positive multiple of 32")
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint(runner, tmp_path):
    result = runner.invoke(
        main,
        [
            "export",
            "--checkpoint",
            str(tmp_path / "none.safetensors"),
            "--output",
            str(tmp_path / "m.onnx"),
        ],
    )
    assert_one_line_error(result, 1, "checkpoint not found")


def test_checkpoint_of_other_architecture(runner, tmp_path, random_checkpoint):
    result = runner.invoke(
        main,
        [
            "export",
            "--model",
            "mqnet-sa",
            "--checkpoint",
            str(random_checkpoint),
            "--output",
            str(tmp_path / "m.onnx"),
        ],
    )
    assert_one_line_error(result, 1, "holds model 'mqnet', not 'mqnet-sa'")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("parent", ["missing-dir", "a-file"])
def test_unusable_output_folder(runner, tmp_path, parent):
    (tmp_path / "a-file").write_text("x")
    result = runner.invoke(
        main, ["export", "--random-init", "--output", str(tmp_path / parent / "m.onnx")]
    )
    assert_one_line_error(result, 2, "does not exist")


def test_failed_parity_writes_nothing(runner, tmp_path):
    out = tmp_path / "m.onnx"
    result = runner.invoke(main, tiny_export_args(out, "--tolerance", "1e-12"))
    assert_one_line_error(result, 1, "parity check failed")
    assert list(tmp_path.iterdir()) == []


def test_json_report_fields(tiny_export):
    _, report = tiny_export
    for key in (
        "artifact",
        "sha256",
        "opset",
        "input_shape",
        "parameters",
        "node_counts",
        "parity",
        "export_seconds",
    ):
        assert key in report
    assert report["input_shape"] == [1, 3, TINY, TINY]
    assert report["parameters"] == 875_432


@pytest.mark.parametrize("option, fragment", [("attention=bogus", "attention must be one of"),
                                              ("nothere=1", "unknown option(s)")])
def test_bad_model_option_is_usage_error(runner, tmp_path, option, fragment):
    result = runner.invoke(main, ["train", "--model-option", option, "--steps", "1",
                                  "--out-dir", str(tmp_path / "run")])
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "run").exists()
