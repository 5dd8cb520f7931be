"""The main job end to end at a tiny size: every stage runs and reports."""

import json

from itm_onnx.cli import main


def test_pipeline_runs_every_stage(runner, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["pipeline", "--random-init", "--height", "64", "--width", "64",
                                  "--runs", "1", "--out-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"export", "quantize", "validate", "bench"}
    assert report["export"]["parity"]["passed"]
    labels = [row["label"] for row in report["bench"]["rows"]]
    assert labels[:4] == ["fp32 (peer 1)", "naive mixed (peer 2)", "full-int8 (peer 3)",
                          "mixed (itm-onnx)"]
    assert all(row["status"] == "ok" for row in report["bench"]["rows"])
    # each side also with the other's session settings: fp32 with mixed's, mixed with ORT's
    rows = {row["label"]: row for row in report["bench"]["rows"]}
    recommended = rows["mixed (itm-onnx)"]["session_options"]
    assert recommended and rows["fp32 + mixed's session options"]["session_options"] == recommended
    assert rows["mixed + ORT's default session options"]["session_options"] == {}
    assert rows["fp32 (peer 1)"]["session_options"] == {}
    for name in ("mqnet-64x64-fp32.onnx", "mqnet-64x64-mixed.onnx", "validate-report.png",
                 "bench.png"):
        assert (out / name).is_file(), name
