"""validate-arm64: ORT's aarch64 build under QEMU against the host.

The `arm64`-marked test really runs the emulated environment on a 64x64 model; it skips
(with the reason) where `qemu-user-static` or the environment (`itm-onnx validate-arm64
--setup`) is missing. The other tests check the comparison and the one-line errors and
always run.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from itm_onnx import arm64
from itm_onnx.arm64 import (
    Arm64Env,
    Arm64EnvConfig,
    Arm64EnvError,
    ParityConfig,
    code_difference,
    find_env,
    run_parity,
    setup_env,
    synthetic_inputs,
)
from itm_onnx.cli import main


def _which_without(*missing):
    real = shutil.which

    def which(name, *args, **kwargs):
        if name in missing:
            return None
        return real(name, *args, **kwargs) or f"/usr/bin/{name}"

    return which


def test_code_difference_counts_pixels_on_the_10_bit_scale():
    reference = np.zeros((1, 3, 2, 2), np.float32)
    candidate = reference.copy()
    candidate[0, 1, 0, 0] = 1.0 / 1023  # one code, one channel
    candidate[0, 2, 1, 1] = 3.0 / 1023  # three codes
    result = code_difference(reference, candidate)
    assert result["pixels"] == 4 and result["max_code_diff"] == 3
    assert result["share_code_diff_gt0"] == 0.5 and result["share_code_diff_gt1"] == 0.25
    assert result["within_1_code"] == 0.75
    assert result["max_abs_diff"] == pytest.approx(3 / 1023)


def test_synthetic_inputs_are_8_bit_ldr_at_the_model_shape():
    images = synthetic_inputs(2, 64, 96, seed=3)
    assert [i.shape for i in images] == [(1, 3, 64, 96)] * 2
    for image in images:
        assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        assert np.allclose(image * 255, np.rint(image * 255), atol=1e-4)


def test_missing_qemu_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", _which_without(arm64.QEMU))
    with pytest.raises(Arm64EnvError) as info:
        find_env(Arm64EnvConfig(env_dir=tmp_path))
    message = str(info.value)
    assert "apt-get install qemu-user-static" in message and "--setup" in message
    assert "\n" not in message


def test_missing_environment_says_setup_needs_network_once(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", _which_without())
    with pytest.raises(Arm64EnvError, match=r"--setup.*network.*offline"):
        find_env(Arm64EnvConfig(env_dir=tmp_path))


def test_stale_environment_names_the_version_mismatch(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", _which_without())
    (tmp_path / "env").mkdir()
    manifest = {"format": arm64.ENV_FORMAT, "onnxruntime": "1.0.0", "numpy": "1.0.0"}
    (tmp_path / "env" / arm64.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(Arm64EnvError, match=r"has onnxruntime 1\.0\.0 but .* --setup"):
        find_env(Arm64EnvConfig(env_dir=tmp_path))


def test_setup_without_apt_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", _which_without("apt-get"))
    with pytest.raises(Arm64EnvError, match="needs apt-get"):
        setup_env(Arm64EnvConfig(env_dir=tmp_path))


def test_emulated_command_binds_an_arm_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(arm64.shutil, "which", _which_without())
    env = Arm64Env(path=tmp_path, manifest={})
    command = env.python_command(tmp_path / "script.py", "jobs.json")
    assert command[0] == "unshare" and "--mount" in command
    assert 'mount --bind "$1" /proc/cpuinfo' in " ".join(command)
    assert str(tmp_path / "cpuinfo") in command
    qemu = command.index(f"/usr/bin/{arm64.QEMU}") if f"/usr/bin/{arm64.QEMU}" in command else [
        i for i, part in enumerate(command) if part.endswith(arm64.QEMU)][0]
    assert command[qemu + 1: qemu + 5] == ["-cpu", "neoverse-n1", "-L", str(tmp_path / "root")]
    assert "0xd0c" in arm64.CPUINFO_BLOCK and "asimddp" in arm64.CPUINFO_BLOCK


def _relu_model(path):
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Relu", ["ldr"], ["hdr"])], "relu",
                              [value("ldr", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [value("hdr", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)],
                                ir_version=10), str(path))
    return path


def test_cli_errors_are_one_line(runner, tmp_path):
    no_model = runner.invoke(main, ["validate-arm64", "--env-dir", str(tmp_path)])
    assert no_model.exit_code == 2
    missing = runner.invoke(main, ["validate-arm64", "--model", str(tmp_path / "x.onnx"),
                                   "--env-dir", str(tmp_path), "--json"])
    assert missing.exit_code == 2 and "model file not found" in missing.stderr
    path = _relu_model(tmp_path / "relu.onnx")
    no_env = runner.invoke(main, ["validate-arm64", "--model", str(path),
                                  "--env-dir", str(tmp_path / "empty"), "--json"])
    lines = no_env.stderr.strip().splitlines()
    assert no_env.exit_code == 1 and len(lines) == 1 and "--setup" in lines[0]


@pytest.fixture(scope="module")
def arm64_env():
    try:
        return find_env()
    except Arm64EnvError as exc:
        pytest.skip(f"ARM64 emulation not available: {exc}")


@pytest.fixture(scope="module")
def tiny_quantized(tiny_export, tmp_path_factory):
    """The 64x64 export with an int8 backbone and a float head (quantize_static, QDQ)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from itm_onnx import onnx_meta

    path, _ = tiny_export

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(synthetic_inputs(4, 64, 64, seed=7))

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"ldr": image}

    out = tmp_path_factory.mktemp("arm64") / "tiny-mixed.onnx"
    head = onnx_meta.nodes_in_part(onnx.load(str(path)), onnx_meta.HEAD)
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=head)
    return out


@pytest.mark.arm64
def test_arm64_matches_the_host_on_a_tiny_model(arm64_env, tiny_export, tiny_quantized):
    path, _ = tiny_export
    report = run_parity(ParityConfig(models=[path, tiny_quantized], count=2))
    assert report.arm64["machine"] == "aarch64" and report.host["machine"] != "aarch64"
    assert report.arm64["onnxruntime"] == report.host["onnxruntime"]
    fp32, mixed = report.models
    assert fp32.max_abs_diff < 1e-4 and fp32.within_1_code == 1.0
    assert mixed.within_1_code >= 0.999, mixed
    assert report.passed
