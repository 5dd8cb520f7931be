import json

import pytest
import torch
from safetensors.torch import save_file

from itm_onnx import create_model
from itm_onnx.checkpoint import FORMAT_NAME, load_checkpoint, save_checkpoint
from itm_onnx.errors import CheckpointError


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = create_model("mqnet-sa").eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, info={"steps": 3})
    loaded = create_model("mqnet-sa", checkpoint=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_checkpoint(path).info == {"steps": 3}


def test_config_travels_with_the_checkpoint(tmp_path):
    model = create_model("mqnet", output_transform="sigmoid")
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    assert create_model("mqnet", checkpoint=path).config.output_transform == "sigmoid"


def test_other_architecture_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "noatt.safetensors", create_model("mqnet-noatt"))
    with pytest.raises(CheckpointError, match="holds model 'mqnet-noatt', not 'mqnet'"):
        create_model("mqnet", checkpoint=path)


def test_weights_that_do_not_fit_are_named(tmp_path):
    model = create_model("mqnet")
    state = {
        k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.conv3")
    }
    state["backbone.decoder.stage4.project.0.weight"] = torch.zeros(1, 1, 1, 1)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": "1",
        "model": "mqnet",
        "config": json.dumps({}),
        "info": "{}",
    }
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError) as err:
        create_model("mqnet", checkpoint=tmp_path / "bad.safetensors")
    assert "missing: head.conv3.weight" in str(err.value)
    assert "wrong shape: backbone.decoder.stage4.project.0.weight" in str(err.value)


def test_newer_format_version_is_refused(tmp_path):
    metadata = {
        "format": FORMAT_NAME,
        "format_version": "2",
        "model": "mqnet",
        "config": "{}",
        "info": "{}",
    }
    save_file({"x": torch.zeros(1)}, str(tmp_path / "v2.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="format version 2 is not supported"):
        load_checkpoint(tmp_path / "v2.safetensors")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 64])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable itm-onnx checkpoint"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not an itm-onnx checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
