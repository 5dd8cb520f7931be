import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from itm_onnx import onnx_meta
from itm_onnx.errors import UsageError
from itm_onnx.export import ExportConfig, export_model, model_card_path

from .conftest import TINY


def test_artifact_is_checked_tagged_and_parity_holds(tiny_export):
    path, report = tiny_export
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert report["parity"]["passed"]
    assert report["parity"]["max_abs_error"] <= 1e-4
    assert set(report["parity"]["per_input"]) == {
        f"{name}@{TINY}x{TINY}" for name in ("random", "flat_grey", "hard_edge", "saturated")
    }
    onnx_meta.require_tags(model)
    assert report["parts"]["backbone"] > report["parts"]["head"] > 0
    # Fixed shapes: onnxsim folded all shape arithmetic away.
    assert not [n for n in model.graph.node if n.op_type in ("Shape", "InstanceNormalization")]


def test_head_tags_cover_exactly_the_head_convolutions(tiny_export):
    model = onnx.load(tiny_export[0])
    head_convs = [
        n
        for n in model.graph.node
        if n.op_type == "Conv" and onnx_meta.node_part(n) == onnx_meta.HEAD
    ]
    assert len(head_convs) == 3  # conv 3x3 16->12, conv 1x1 12->6, conv 1x1 6->3
    assert [n.name for n in model.graph.node][-1] in onnx_meta.nodes_in_part(model, "head")


def test_metadata_an_integrator_needs(tiny_export):
    path, report = tiny_export
    meta = onnx_meta.read_model_metadata(onnx.load(path))
    for key in (
        "model",
        "model_version",
        "input_name",
        "output_name",
        "layout",
        "dtype",
        "input_range",
        "output_range",
        "output_encoding",
        "output_encoding_description",
        "required_multiple",
        "node_tags",
    ):
        assert meta[key], key
    assert meta["random_init"] == "true" and meta["model_version"] == "random-init"
    assert meta["required_multiple"] == "32"
    card = json.loads(model_card_path(path).read_text())
    assert card["sha256"] == report["sha256"]


def test_export_is_reproducible(tiny_export, tmp_path):
    path, _ = tiny_export
    again = tmp_path / "again.onnx"
    export_model(ExportConfig(output=again, random_init=True, height=TINY, width=TINY))
    assert again.read_bytes() == path.read_bytes()


def test_dynamic_export_runs_at_other_sizes(tmp_path, random_checkpoint):
    out = tmp_path / "dyn.onnx"
    report = export_model(ExportConfig(output=out, checkpoint=random_checkpoint, dynamic=True))
    assert report.input_shape == [1, 3, "height", "width"]
    assert report.parity["passed"] and len(report.parity["per_input"]) == 12
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    result = session.run(None, {"ldr": np.random.rand(1, 3, 96, 160).astype(np.float32)})[0]
    assert result.shape == (1, 3, 96, 160)
    assert onnx_meta.read_model_metadata(onnx.load(out))["model_version"] == "test"


@pytest.mark.parametrize("height, width", [(100, 64), (64, 0), (-32, 64)])
def test_sizes_must_be_multiples_of_32(tmp_path, height, width):
    with pytest.raises(UsageError, match="not a positive multiple of 32"):
        export_model(
            ExportConfig(output=tmp_path / "x.onnx", random_init=True, height=height, width=width)
        )
    assert list(tmp_path.iterdir()) == []


def test_no_checkpoint_and_no_random_init_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ITM_ONNX_HOME", str(tmp_path))  # a home without shipped models
    with pytest.raises(UsageError, match="--random-init"):
        export_model(ExportConfig(output=tmp_path / "x.onnx"))
