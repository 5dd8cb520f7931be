"""itm-onnx bench on two tiny hand-made models: sane numbers, clean EP messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from itm_onnx import onnx_meta
from itm_onnx.bench import BenchConfig, ModelSpec, parse_sizes, resolve_ep, run_bench
from itm_onnx.cli import main
from itm_onnx.errors import UsageError


def _tiny_model(path: Path, channels: int, dynamic: bool = False,
                session_options: dict | None = None) -> Path:
    """ldr (1x3xHxW) -> 3x3 conv to ``channels`` -> 1x1 conv back to 3 -> sigmoid."""
    rng = np.random.default_rng(channels)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (channels, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (3, channels, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["ldr", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["hdr"])]
    shape = [1, 3, "h", "w"] if dynamic else [1, 3, 32, 48]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("ldr", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("hdr", TensorProto.FLOAT, shape)],
                              initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if session_options:
        onnx_meta.write_model_metadata(model, {onnx_meta.SESSION_OPTIONS_KEY: session_options})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    return (_tiny_model(folder / "small.onnx", 4),
            _tiny_model(folder / "wide.onnx", 32,
                        session_options={"disabled_optimizers": ["NchwcTransformer"]}))


def test_two_models_side_by_side(models):
    rows = run_bench(BenchConfig(models=[ModelSpec("small", models[0]),
                                         ModelSpec("wide", models[1])], runs=4, warmup=1))
    assert [r.label for r in rows] == ["small", "wide"]
    for row in rows:
        assert row.status == "ok" and row.size == "32x48" and row.ep == "cpu"
        assert 0 < row.min_ms <= row.median_ms <= row.p90_ms < 5000
        assert len(row.times_ms) == 4
        assert row.session_s is not None and row.session_s >= 0
        assert row.peak_rss_mb is not None and row.peak_rss_mb >= row.baseline_rss_mb > 10
    assert rows[0].ratio_to_first == 1.0 and rows[1].ratio_to_first > 0
    # per-round ratios pair each run with the first model's run of the same round
    paired = np.asarray(rows[1].times_ms) / np.asarray(rows[0].times_ms)
    assert rows[0].round_ratio_median == 1.0 and rows[0].round_ratio_iqr == [1.0, 1.0]
    assert rows[1].round_ratio_median == pytest.approx(np.median(paired), abs=1e-3)
    low, high = rows[1].round_ratio_iqr
    assert low <= rows[1].round_ratio_median <= high
    assert rows[1].session_options == {"disabled_optimizers": ["NchwcTransformer"]}


def test_sequential_mode_times_every_model_and_measures_fidelity(models):
    specs = [ModelSpec("small", models[0]), ModelSpec("wide", models[1])]
    images = lambda h, w: [np.random.default_rng(1).random((1, 3, h, w), np.float32)]  # noqa: E731
    rows = {mode: run_bench(BenchConfig(models=specs, runs=3, memory=False, profile=False,
                                        fidelity_images=1, sequential=mode), images=images)
            for mode in (False, True)}
    for row in rows[True]:
        assert row.status == "ok" and len(row.times_ms) == 3 and row.median_ms > 0
        assert row.round_ratio_median is None  # timed one model at a time: no rounds to pair
    # the same models on the same image: the same 10-bit fidelity, whichever the mode
    assert rows[True][1].fidelity == rows[False][1].fidelity
    assert rows[True][1].fidelity["reference"] == "small" and not rows[True][0].fidelity


def test_profile_summarizes_ort_traces(models, tmp_path):
    rows = run_bench(BenchConfig(models=[ModelSpec("small", models[0])], runs=1, memory=False,
                                 profile_dir=tmp_path / "prof"))
    profile = rows[0].profile
    assert Path(profile["trace"]).is_file() and profile["runs"] == 2
    ops = [op for op, _ in profile["by_op_type_ms"]]
    assert "Conv" in ops or "FusedConv" in ops
    times = [ms for _, ms in profile["top_nodes_ms"]]
    assert times == sorted(times, reverse=True)


def test_cli_json_table_chart_and_fidelity(models, runner, tmp_path):
    chart = tmp_path / "chart.png"
    result = runner.invoke(main, ["bench", "--model", str(models[0]), "--model", str(models[1]),
                                  "--runs", "3", "--warmup", "0", "--no-memory",
                                  "--fidelity-images", "1", "--chart", str(chart), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["label"] for r in data["rows"]] == ["small", "wide"]
    assert data["rows"][1]["fidelity"]["psnr_10bit_db"] > 0  # a different model: finite PSNR
    wide = data["rows"][1]
    assert wide["round_ratio_median"] > 0 and len(wide["round_ratio_iqr"]) == 2
    assert data["rows"][0]["peak_rss_mb"] is None
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 500
    human = runner.invoke(main, ["bench", "--model", str(models[0]), "--runs", "2",
                                 "--no-memory", "--no-chart"])
    assert human.exit_code == 0, human.output
    assert "median ms" in human.output and "small" in human.output
    assert "per round [IQR]" in human.output


def test_unavailable_provider_is_reported_not_raised(models, runner):
    provider, status = resolve_ep("nnapi")
    assert provider is None and "not available in this build" in status
    assert "onnxruntime-android" in status
    result = runner.invoke(main, ["bench", "--model", str(models[0]), "--ep", "cpu,xnnpack,coreml",
                                  "--runs", "2", "--no-memory", "--no-chart"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "xnnpack" in result.output and "not available in this build" in result.output
    assert "macOS" in result.output


def test_usage_errors_are_one_line(models, runner, tmp_path):
    cases = [
        ["bench", "--model", str(models[0]), "--ep", "warp-drive"],
        ["bench", "--model", str(tmp_path / "missing.onnx")],
        ["bench", "--model", str(models[0]), "--size", "big"],
        ["bench"],
    ]
    for args in cases:
        result = runner.invoke(main, args + ["--no-memory", "--no-chart"])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_sizes_dynamic_models_and_fixed_mismatch(tmp_path):
    dynamic = _tiny_model(tmp_path / "dyn.onnx", 4, dynamic=True)
    fixed = _tiny_model(tmp_path / "fixed.onnx", 4)
    assert parse_sizes("64x96, 32x48") == [(64, 96), (32, 48)]
    with pytest.raises(UsageError):
        run_bench(BenchConfig(models=[ModelSpec("dyn", dynamic)], memory=False))
    rows = run_bench(BenchConfig(models=[ModelSpec("dyn", dynamic), ModelSpec("fixed", fixed)],
                                 sizes=[(64, 96), (32, 48)], runs=2, memory=False))
    by_size = {(r.label, r.size): r for r in rows}
    assert by_size[("dyn", "64x96")].status == "ok"
    assert by_size[("fixed", "64x96")].status.startswith("skipped: fixed input 32x48")
    assert by_size[("fixed", "32x48")].median_ms is not None


XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx_vnni avx512_vnni amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
"""
EPYC = ("cpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\nstepping\t: 0\n"
        "flags\t\t: fpu sse fma avx2\n")
NEOVERSE = ("processor\t: 0\nFeatures\t: fp asimd aes crc32 atomics asimddp i8mm\n"
            "CPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")


def test_cpu_facts_name_the_int8_dot_product_instructions():
    from itm_onnx.bench.machine import cpuinfo_facts

    xeon = cpuinfo_facts(XEON)
    assert xeon["model"] == "Intel(R) Xeon(R) Processor"
    assert xeon["int8_dot_product"] == ["AVX2", "AVX-VNNI", "AVX512-VNNI", "AMX-INT8"]
    assert xeon["vnni_or_amx"]
    epyc = cpuinfo_facts(EPYC)
    assert epyc["int8_dot_product"] == ["AVX2"] and not epyc["vnni_or_amx"]
    # "model" in cpuinfo is the model number; the name is "model name"
    assert epyc["model"] == "AMD EPYC 7B13" and epyc["cpu_id"] == "family 25 model 1 stepping 0"
    arm = cpuinfo_facts(NEOVERSE)
    assert arm["int8_dot_product"] == ["dotprod", "i8mm"] and arm["arm_dotprod"]
    assert arm["model"] == "ARM implementer 0x41 part 0xd0c" and arm["cpu_id"] is None


def test_json_has_the_machine_and_each_models_top_ops(models, runner):
    result = runner.invoke(main, ["bench", "--model", str(models[0]), "--model", str(models[1]),
                                  "--runs", "2", "--no-memory", "--no-chart", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    machine = data["machine"]
    assert machine["model"] and machine["logical_cpus"] >= 1 and machine["onnxruntime"]
    assert isinstance(machine["int8_dot_product"], list)
    for row in data["rows"]:
        assert row["cpu_median_ms"] > 0  # CPU time per run, beside the wall time
        profile = row["profile"]
        assert profile["runs"] == 2 and profile["trace"] is None  # summarized, not kept
        assert profile["by_op_type_ms"] and all(ms >= 0 for _, ms in profile["by_op_type_ms"])
    skipped = runner.invoke(main, ["bench", "--model", str(models[0]), "--runs", "1",
                                   "--no-memory", "--no-chart", "--no-profile", "--json"])
    assert json.loads(skipped.stdout)["rows"][0]["profile"] == {}
    human = runner.invoke(main, ["bench", "--model", str(models[0]), "--runs", "1",
                                 "--no-memory", "--no-chart"])
    assert "int8 dot-product instructions" in human.output and "by op type" in human.output


def test_rows_that_cannot_run_say_why_and_litert_without_its_extra(models, tmp_path):
    from itm_onnx.bench import litert
    from itm_onnx.bench.peers import PeerConfig, litert_peers

    rows = run_bench(BenchConfig(models=[ModelSpec("small", models[0]),
                                         ModelSpec("absent", unavailable="not installed: x")],
                                 runs=1, memory=False, profile=False))
    assert rows[0].status == "ok" and rows[1].status == "not installed: x"
    assert rows[1].median_ms is None
    if litert.missing_packages():
        specs = litert_peers(PeerConfig(fp32=models[0], work_dir=tmp_path), lambda _: None)
        assert [s.label for s in specs] == list(litert.VARIANTS)
        assert all("pip install '.[litert]'" in s.unavailable for s in specs)


def test_litert_peer_runs_a_converted_model(tmp_path, random_checkpoint):
    """Only where the [litert] extra is installed: convert, quantize, run, compare."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("litert_torch")
    from itm_onnx.bench import litert

    calibration = [np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32)
                   for i in range(2)]
    built = litert.build_litert_models(random_checkpoint, "mqnet", (64, 64), calibration,
                                       tmp_path / "cache")
    assert list(built) == list(litert.VARIANTS)
    rows = run_bench(BenchConfig(models=[ModelSpec(k, tflite=v) for k, v in built.items()],
                                 runs=1, memory=True, profile=False, sizes=[(64, 64)]))
    assert all(r.status == "ok" and r.median_ms > 0 and r.peak_rss_mb for r in rows), rows
    out = litert.LiteRTRunner(built["litert fp32 (XNNPACK)"], 1)(calibration[0])
    assert out.shape == (1, 3, 64, 64) and np.isfinite(out).all()
