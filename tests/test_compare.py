"""`itm-onnx compare`: one table over several models scored on identical data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from itm_onnx.cli import main
from itm_onnx.compare import compare_models, parse_model_spec, recovered_share
from itm_onnx.errors import UsageError
from itm_onnx.evaluate import FIGURES, EvalConfig
from itm_onnx.onnx_meta import write_model_metadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, IMAGES = 64, 2
DATA = ["--size", str(SIZE), "--images", str(IMAGES)]


def tiny_onnx(path: Path, node: str, *inputs: str) -> Path:
    """A one-node ONNX model ldr -> hdr (output read as mu-law), with itm-onnx metadata."""
    initializers = [helper.make_tensor("k", TensorProto.FLOAT, [], [1.5])]
    graph = helper.make_graph(
        [helper.make_node(node, ["ldr", *inputs], ["hdr"])], node.lower(),
        [helper.make_tensor_value_info("ldr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("hdr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        initializer=initializers if inputs else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    write_model_metadata(model, {"output_encoding": "mulaw", "model": node.lower(),
                                 "required_multiple": 32})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> Path:
    """Returns its input (LDR read as mu-law HDR): a decent reference."""
    return tiny_onnx(tmp_path_factory.mktemp("echo") / "echo.onnx", "Identity")


@pytest.fixture(scope="module")
def three(tmp_path_factory, runner, echo, random_checkpoint):
    """--json report and grid of echo (reference), a random checkpoint, an x**1.5 model."""
    folder = tmp_path_factory.mktemp("three")
    power = tiny_onnx(folder / "power.onnx", "Pow", "k")
    result = runner.invoke(main, [
        "compare", "--model", f"ref={echo}", "--model", f"rnd=mqnet:{random_checkpoint}",
        "--model", str(power), *DATA, "--grid", str(folder / "grid.png"), "--grid-images", "2",
        "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), folder / "grid.png"


def test_one_row_per_model_in_order_with_deltas_against_the_first(three):
    report, _ = three
    rows = report["rows"]
    assert [row["label"] for row in rows] == ["ref", "rnd", "power"]
    assert rows[1]["source"].startswith("mqnet:") and rows[2]["source"].endswith("power.onnx")
    assert report["images"] == IMAGES and report["size"] == SIZE
    assert rows[0]["delta_psnr_mulaw"] == 0.0
    for row in rows:
        assert all(math.isfinite(row[figure]) for figure in FIGURES)
        assert row["delta_psnr_mulaw"] == pytest.approx(row["psnr_mulaw"]
                                                        - rows[0]["psnr_mulaw"])
    assert set(report["baselines"]) == {"identity", "akyuz"}
    assert set(report["baselines"]["identity"]) == set(FIGURES)


def test_recovered_share_of_the_third_row_follows_the_formula(three):
    rows = three[0]["rows"]
    first, second, third = (row["psnr_mulaw"] for row in rows)
    assert first > second  # the echo reference beats a random network: a loss to recover
    assert rows[0]["recovered_share"] is None and rows[1]["recovered_share"] is None
    assert rows[2]["recovered_share"] == pytest.approx((third - second) / (first - second))


def test_recovered_share_is_none_when_the_second_model_loses_nothing():
    assert recovered_share(30.0, 30.0, 29.0) is None
    assert recovered_share(30.0, 31.0, 29.0) is None
    assert recovered_share(30.0, 20.0, 25.0) == pytest.approx(0.5)
    assert recovered_share(math.inf, 20.0, 25.0) is None


def test_grid_has_input_target_and_a_prediction_and_error_per_model(three):
    _, grid = three
    with Image.open(grid) as image:
        width, height = image.size
    tiles, gap, label = 2 + 2 * 3, 2, 14
    assert width == tiles * (SIZE + gap) - gap
    assert height == label + 2 * (SIZE + gap) - gap


def test_identical_models_give_identical_figures(echo):
    base = EvalConfig(images=IMAGES, size=SIZE)
    report = compare_models([parse_model_spec(f"a={echo}", base),
                             parse_model_spec(f"b={echo}", base)])
    a, b = report.rows
    assert [a.label, b.label] == ["a", "b"]
    assert all(getattr(a, f) == getattr(b, f) for f in FIGURES)
    assert b.delta_psnr_mulaw == 0.0 and b.recovered_share is None
    assert report.to_dict()["rows"][1]["label"] == "b"


def test_human_table_lists_the_models_then_the_baselines(runner, echo, random_checkpoint):
    result = runner.invoke(main, ["compare", "--model", str(echo),
                                  "--model", f"mqnet:{random_checkpoint}", *DATA])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "PSNR-mu dB" in line)
    labels = [line.split()[0] for line in lines[header + 1:header + 5]]
    assert labels == ["echo", random_checkpoint.stem, "identity", "akyuz"]
    assert lines[header + 1].split()[2] == "+0.00"


def test_spec_parsing_labels_and_configs(tmp_path):
    base = EvalConfig(images=3, seed=7)
    label, config = parse_model_spec("qat=/tmp/g-qat.onnx", base)
    assert (label, config.model, config.checkpoint, config.seed) == \
        ("qat", "/tmp/g-qat.onnx", None, 7)
    label, config = parse_model_spec("gated-unet-c12:models/g.safetensors", base)
    assert (label, config.model, config.checkpoint) == \
        ("g", "gated-unet-c12", Path("models/g.safetensors"))
    with pytest.raises(UsageError, match="not an .onnx file"):
        parse_model_spec("weights.safetensors")
    with pytest.raises(UsageError, match="empty label"):
        parse_model_spec("=x.onnx")


def test_models_on_different_data_are_refused(echo):
    with pytest.raises(UsageError, match="identical data"):
        compare_models([("a", EvalConfig(model=str(echo), images=2)),
                        ("b", EvalConfig(model=str(echo), images=3))])
    with pytest.raises(UsageError, match="duplicate"):
        compare_models([("a", EvalConfig(model=str(echo))), ("a", EvalConfig(model=str(echo)))])


def _error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--model", "{echo}"], 2, "at least two --model"),
    (["--model", "{echo}", "--model", "weights.safetensors"], 2, "not an .onnx file"),
    (["--model", "{echo}", "--model", "=x.onnx"], 2, "empty label"),
    (["--model", "{echo}", "--model", "{tmp}/missing.onnx"], 2, "ONNX model not found"),
    (["--model", "{echo}", "--model", "mqnet:{tmp}/no.safetensors"], 1, "checkpoint not found"),
    (["--model", "{echo}", "--model", "no-such-net:{tmp}/x.safetensors"], 1, "unknown model"),
])
def test_bad_specs_fail_with_one_line(runner, echo, tmp_path, args, code, message):
    args = [a.format(echo=echo, tmp=tmp_path) for a in args]
    result = runner.invoke(main, ["compare", *args, *DATA])
    assert result.exit_code == code, result.output
    assert message in _error_line(result.output)
