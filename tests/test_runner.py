"""`itm-onnx run` and `itm_onnx.Runner`: any photo in, same-size HDR out, clear failures.

Most tests use tiny hand-made ONNX models whose output is a known per-pixel function of
the input (y = 0.8 x + 0.1 behind a SpaceToDepth/DepthToSpace pair that only accepts
sides divisible by 32), so padding, tiling and cropping can be checked exactly; the
real MQNet export (conftest's 64x64 ``tiny_export``) checks tiling on the network.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from itm_onnx import Runner
from itm_onnx.cli import main
from itm_onnx.data import mulaw_decode, read_hdr, save_png16
from itm_onnx.errors import UsageError
from itm_onnx.onnx_meta import write_model_metadata
from itm_onnx.runner import Geometry, plan_axis

from .test_cli import assert_one_line_error

RNG = np.random.default_rng(5)
SCALE, OFFSET = 0.8, 0.1


def affine_model(path: Path, height: int | str = "height", width: int | str = "width",
                 metadata: dict | None = None, input_name: str = "ldr") -> Path:
    """y = 0.8 x + 0.1 for sides divisible by 32 (ORT refuses others, as MQNet would)."""
    shape = [1, 3, height, width]
    nodes = [
        helper.make_node("SpaceToDepth", [input_name], ["s2d"], blocksize=32),
        helper.make_node("DepthToSpace", ["s2d"], ["d2s"], blocksize=32, mode="DCR"),
        helper.make_node("Mul", ["d2s", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["hdr"]),
    ]
    graph = helper.make_graph(
        nodes, "affine",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("hdr", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
         numpy_helper.from_array(np.array(OFFSET, np.float32), "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if metadata is not None:
        write_model_metadata(model, metadata)
    onnx.save(model, path)
    return path


META = {"input_name": "ldr", "output_name": "hdr", "output_encoding": "mulaw",
        "required_multiple": 32, "output_bits": 10}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "dynamic": affine_model(folder / "dynamic.onnx", metadata=META),
        "fixed": affine_model(folder / "fixed.onnx", 64, 64, metadata=META),
        "bare": affine_model(folder / "bare.onnx", input_name="input"),
        "tuned": affine_model(folder / "tuned.onnx", metadata={**META, "session_options": {
            "graph_optimization_level": "ORT_ENABLE_BASIC",
            "disabled_optimizers": ["NchwcTransformer"],
            "session.intra_op.allow_spinning": "0",
            "no_such_option": 1,
        }}),
    }


def expected_codes(rgb: np.ndarray) -> np.ndarray:
    y = SCALE * (rgb.astype(np.float32) / np.float32(255.0)) + np.float32(OFFSET)
    return np.round(y * 1023).astype(np.uint16)


def save_rgb(path: Path, height: int, width: int) -> np.ndarray:
    rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def run_cli(runner, *args):
    return runner.invoke(main, ["run", *map(str, args)])


# --- sizes ------------------------------------------------------------------------------


def test_odd_size_round_trip_all_formats(runner, models, tmp_path):
    rgb = save_rgb(tmp_path / "odd.png", 333, 517)
    result = run_cli(runner, "--model", models["dynamic"], tmp_path / "odd.png",
                     "--output", tmp_path / "out", "--format", "png16,exr,hdr")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["odd.exr", "odd.hdr", "odd.png"]
    codes = imagecodecs.png_decode((out / "odd.png").read_bytes())
    assert codes.shape == (333, 517, 3) and codes.max() <= 1023
    np.testing.assert_array_equal(codes, expected_codes(rgb))  # padding cropped off exactly
    y = SCALE * rgb / 255.0 + OFFSET
    np.testing.assert_allclose(read_hdr(out / "odd.exr"), mulaw_decode(y), rtol=1e-5, atol=1e-7)
    assert read_hdr(out / "odd.hdr").shape == (333, 517, 3)
    assert "padded to 544x352" in result.stderr


def test_fixed_shape_model_pads_small_and_tiles_large_images(models):
    runner = Runner(models["fixed"])
    for height, width in ((333, 517), (40, 30), (64, 200), (1, 1)):
        rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
        y = runner.predict(rgb)
        assert y.shape == (height, width, 3) and y.dtype == np.float32
        np.testing.assert_array_equal(runner.to_codes(y), expected_codes(rgb))
    assert runner.geometry.describe(40, 30) == "padded to 64x64"
    assert runner.geometry.describe(333, 517) == "77 tiles of 64x64"


@pytest.mark.parametrize("length", [65, 100, 333, 517, 1000])
def test_tiles_cover_the_side_overlap_and_blend_to_one(length):
    plan = plan_axis(length, fixed=64, multiple=32)
    starts = plan.starts
    assert starts[0] == 0 and starts[-1] + plan.tile == length == plan.padded
    steps = np.diff(starts)
    assert (steps <= 64 - 16).all()  # neighbours overlap by at least a quarter of the tile
    total = np.zeros(length)
    for start, weight in zip(starts, plan.weights(), strict=True):
        assert (weight > 0).all()
        total[start:start + plan.tile] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # a partition of unity: no seams


def test_dynamic_axes_pad_to_the_multiple():
    rows, cols = Geometry((None, None), 32).plan(333, 517)
    assert (rows.padded, cols.padded, rows.starts, cols.starts) == (352, 544, (0,), (0,))


@pytest.mark.parametrize(("height", "width"), [(333, 517), (3024, 4032), (6048, 8064),
                                               (200, 9000)])
def test_dynamic_axes_tile_above_the_pixel_budget(height, width):
    """Big photos on a dynamic model: tiles within the budget, sides multiples of 32,
    covering the photo; photos within the budget still run whole."""
    budget = 4096 * 3072
    rows, cols = Geometry((None, None), 32, max_tile_pixels=budget).plan(height, width)
    whole = -(-height // 32) * 32 * (-(-width // 32) * 32) <= budget
    assert (len(rows.starts) * len(cols.starts) == 1) == whole
    assert rows.tile % 32 == 0 and cols.tile % 32 == 0 and rows.tile * cols.tile <= budget
    for plan, length in ((rows, height), (cols, width)):
        assert plan.starts[0] == 0 and plan.starts[-1] + plan.tile == plan.padded >= length
    never = Geometry((None, None), 32, max_tile_pixels=0).plan(height, width)
    assert len(never[0].starts) == len(never[1].starts) == 1


def test_dynamic_model_tiled_over_budget_gives_the_whole_image_result(models):
    """The affine model is pointwise, so tiles cross-faded must reproduce it exactly."""
    runner = Runner(models["dynamic"], max_tile_pixels=64 * 96)
    rgb = RNG.integers(0, 256, (100, 230, 3), dtype=np.uint8)
    rows, cols = runner.geometry.plan(100, 230)
    assert len(rows.starts) * len(cols.starts) > 1 and rows.tile * cols.tile <= 64 * 96
    np.testing.assert_array_equal(runner.to_codes(runner.predict(rgb)), expected_codes(rgb))
    assert not runner.session.get_session_options().enable_mem_pattern  # dynamic: off
    assert Runner(models["fixed"]).session.get_session_options().enable_mem_pattern
    with pytest.raises(UsageError, match="max tile pixels"):
        Runner(models["dynamic"], max_tile_pixels=-1)


def test_real_mqnet_tiles_blend_between_the_tile_outputs(tiny_export):
    """100 px wide on a 64 px model: tiles at x = 0 and x = 36. Where one tile alone
    covers the image the output is that tile's; in the overlap it lies between both."""
    runner = Runner(tiny_export[0], threads=1)
    rgb = RNG.integers(0, 256, (64, 100, 3), dtype=np.uint8)
    assert plan_axis(100, 64, 32).starts == (0, 36)
    left, right = runner.predict(rgb[:, :64]), runner.predict(rgb[:, 36:])
    tiled = runner.predict(rgb)
    np.testing.assert_allclose(tiled[:, :36], left[:, :36], atol=1e-6)
    np.testing.assert_allclose(tiled[:, 64:], right[:, 28:], atol=1e-6)
    low = np.minimum(left[:, 36:], right[:, :28]) - 1e-6
    high = np.maximum(left[:, 36:], right[:, :28]) + 1e-6
    assert ((tiled[:, 36:64] >= low) & (tiled[:, 36:64] <= high)).all()
    odd = runner.predict(RNG.integers(0, 256, (333, 517, 3), dtype=np.uint8))
    assert odd.shape == (333, 517, 3) and 0.0 <= odd.min() and odd.max() <= 1.0


def test_cli_odd_size_with_real_mqnet(runner, tiny_export, tmp_path):
    save_rgb(tmp_path / "odd.jpg", 333, 517)
    result = run_cli(runner, "-m", tiny_export[0], tmp_path / "odd.jpg", "-o", tmp_path / "out",
                     "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["formats"] == ["png16", "exr"]  # auto: the model names its encoding
    codes = imagecodecs.png_decode((tmp_path / "out" / "odd.png").read_bytes())
    assert codes.shape == (333, 517, 3) and codes.max() <= 1023
    assert read_hdr(tmp_path / "out" / "odd.exr").shape == (333, 517, 3)


# --- inputs -----------------------------------------------------------------------------


def test_image_modes_are_converted_and_noted(runner, models, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rgb = RNG.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(src / "grey.png")
    Image.fromarray(rgb).quantize(16).save(src / "palette.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(src / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(src / "grey16.png")
    save_png16(src / "rgb16.png", rgb.astype(np.uint16) * 257)
    result = run_cli(runner, "-m", models["dynamic"], src, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    done = {Path(item["input"]).name: item for item in json.loads(result.stdout)["done"]}
    assert set(done) == {"grey.png", "palette.png", "rgba.png", "grey16.png", "rgb16.png"}
    assert "8-bit grey replicated to RGB" in done["grey.png"]["notes"]
    assert any("palette expanded" in n for n in done["palette.png"]["notes"])
    assert any("alpha dropped" in n for n in done["rgba.png"]["notes"])
    assert any("16-bit grey" in n for n in done["grey16.png"]["notes"])
    assert any("16-bit RGB" in n for n in done["rgb16.png"]["notes"])
    for name in done:
        codes = imagecodecs.png_decode((tmp_path / "out" / name).read_bytes())
        assert codes.shape == (37, 45, 3)
    grey_codes = imagecodecs.png_decode((tmp_path / "out" / "grey.png").read_bytes())
    np.testing.assert_array_equal(grey_codes, expected_codes(np.repeat(rgb[..., :1], 3, 2)))


def test_folder_with_a_corrupt_file_is_a_partial_success(runner, models, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    save_rgb(src / "a.png", 40, 50)
    save_rgb(src / "c.jpg", 33, 31)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (src / "notes.txt").write_text("not an image")
    result = run_cli(runner, "-m", models["dynamic"], src, "-o", tmp_path / "out")
    assert result.exit_code == 3, result.output  # documented: some converted, some failed
    assert "done 2, failed 1" in result.stdout
    assert f"{src / 'b.png'}: " in result.stdout  # the per-file error list
    assert "[2/3]" in result.stderr and "FAILED" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.exr", "a.png", "c.exr",
                                                                    "c.png"]
    report = json.loads(run_cli(runner, "-m", models["dynamic"], src, "-o", tmp_path / "out",
                                "--json").stdout)
    assert report["exit_code"] == 3 and report["ignored"] == [str(src / "notes.txt")]
    assert [f["input"] for f in report["failed"]] == [str(src / "b.png")]


def test_nothing_usable_exits_1(runner, models, tmp_path):
    (tmp_path / "x.png").write_text("junk")
    (tmp_path / "y.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 10)
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "x.png", tmp_path / "y.jpg",
                     tmp_path / "missing.png", "-o", tmp_path / "out")
    assert_one_line_error(result, 1, "no image converted: all 3 inputs failed")
    assert not list((tmp_path / "out").iterdir())


def test_folder_without_images_is_a_usage_error(runner, models, tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    result = run_cli(runner, "-m", models["dynamic"], tmp_path, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "no image files in")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height but holds almost no data (a bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_before_decoding(runner, models, tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(9000, 9000))  # 81 MP > 64 MP default
    save_rgb(tmp_path / "small.png", 64, 64)
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "bomb.png", tmp_path / "small.png",
                     "-o", tmp_path / "out", "--json")
    assert result.exit_code == 3, result.output
    (failure,) = json.loads(result.stdout)["failed"]
    assert "81,000,000 pixels, over the limit of 64,000,000" in failure["error"]
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "small.png",
                     "-o", tmp_path / "out2", "--max-pixels", "1000")
    assert_one_line_error(result, 1, "over the limit of 1,000")


def test_zero_size_array_and_wrong_dtype_are_refused(models):
    runner = Runner(models["dynamic"])
    with pytest.raises(UsageError, match="zero size"):
        runner.predict(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        runner.predict(np.zeros((5, 5, 3), np.float32))


def test_outputs_never_overwrite_inputs_or_each_other(runner, models, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_rgb(tmp_path / "a" / "x.png", 32, 32)
    save_rgb(tmp_path / "b" / "x.jpg", 32, 32)
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "a", tmp_path / "b",
                     "-o", tmp_path / "out", "--json")
    assert result.exit_code == 3
    assert "already taken by" in json.loads(result.stdout)["failed"][0]["error"]
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "a", "-o", tmp_path / "a",
                     "--format", "png16")
    assert_one_line_error(result, 1, "would overwrite the input")


# --- models and providers ---------------------------------------------------------------


def test_non_onnx_model_file_is_one_line(runner, tmp_path):
    save_rgb(tmp_path / "a.png", 32, 32)
    (tmp_path / "model.onnx").write_text("this is not a model\n")
    result = run_cli(runner, "-m", tmp_path / "model.onnx", tmp_path / "a.png", "-o", tmp_path)
    assert_one_line_error(result, 2, "model.onnx: not an ONNX model")
    result = run_cli(runner, "-m", tmp_path / "none.onnx", tmp_path / "a.png", "-o", tmp_path)
    assert_one_line_error(result, 2, "model file not found")


def test_unknown_provider_lists_the_available_ones(runner, models, tmp_path):
    save_rgb(tmp_path / "a.png", 32, 32)
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "a.png", "-o", tmp_path / "o",
                     "--providers", "tpu")
    assert_one_line_error(result, 2, "unknown execution provider 'tpu'; available here:")
    assert "cpu" in result.stderr
    result = run_cli(runner, "-m", models["dynamic"], tmp_path / "a.png", "-o", tmp_path / "o",
                     "--ep", "nnapi,cpu")
    assert_one_line_error(result, 2, "(NnapiExecutionProvider) is not in this ONNX Runtime build")
    assert Runner(models["dynamic"], providers=["CPUExecutionProvider"]).describe()[
        "providers"] == ["cpu"]


def test_model_without_metadata_works_with_one_notice(runner, models, tmp_path):
    rgb = save_rgb(tmp_path / "a.png", 45, 70)
    save_rgb(tmp_path / "b.png", 20, 20)
    result = run_cli(runner, "-m", models["bare"], tmp_path / "a.png", tmp_path / "b.png",
                     "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("has no itm-onnx metadata") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    np.testing.assert_array_equal(imagecodecs.png_decode((tmp_path / "out" / "a.png").read_bytes()),
                                  expected_codes(rgb))
    result = run_cli(runner, "-m", models["bare"], tmp_path / "a.png", "-o", tmp_path / "out",
                     "--format", "exr")
    assert_one_line_error(result, 2, "output encoding is unknown")
    with pytest.raises(UsageError, match="cannot be decoded to linear"):
        Runner(models["bare"]).to_linear(np.zeros((2, 2, 3), np.float32))


def test_recommended_session_options_are_applied(models):
    runner = Runner(models["tuned"], threads=1)
    assert runner.notices == ["recommended session option 'no_such_option' is unknown here; "
                              "skipped"]
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    rgb = RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(runner.to_codes(runner.predict(rgb)), expected_codes(rgb))


def test_runner_api_on_a_quantized_model(tiny_export, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"ldr": rng.random((1, 3, 64, 64), dtype=np.float32)}
                               for _ in range(2)])

        def get_next(self):
            return next(self.feeds, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(tiny_export[0]), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
    runner = Runner(qdq, threads=1)
    assert runner.notices == [] and runner.encoding == "mulaw-clip"  # metadata survived
    y = runner.predict(RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    assert y.shape == (70, 90, 3) and y.dtype == np.float32
    codes, linear = runner.to_codes(y), runner.to_linear(y)
    assert codes.dtype == np.uint16 and codes.max() <= 1023
    assert linear.dtype == np.float32 and linear.min() >= 0 and linear.max() <= 32.0 + 1e-4
