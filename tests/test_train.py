"""Training: a tiny run learns, a killed run resumes exactly, bad inputs give one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from itm_onnx.checkpoint import load_checkpoint
from itm_onnx.cli import main
from itm_onnx.train import trainer as trainer_mod
from itm_onnx.train.losses import ITMLoss, VGG16Features
from itm_onnx.train.trainer import TrainConfig, lr_factor, train


def tiny_config(out_dir: Path, **overrides) -> TrainConfig:
    """32x32 crops, batch 2, 2 validation images: seconds per run on a busy CPU."""
    values = dict(out_dir=out_dir, crop=32, batch_size=2, steps=6, val_every=3,
                  val_images=2, val_size=32, checkpoint_every=100, threads=1, seed=0,
                  lr=3e-3, schedule="constant")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, trainer_mod.TrainResult]:
    out_dir = tmp_path_factory.mktemp("run")
    result = train(tiny_config(out_dir, steps=8, val_every=4))
    return out_dir, result


def test_tiny_run_decreases_validation_loss(finished_run):
    out_dir, result = finished_run
    assert result.steps == 8
    records = torch.load(out_dir / "resume.pt", weights_only=True)["history"]
    assert [r["step"] for r in records] == [0, 4, 8]  # step 0: the untrained model
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    info = load_checkpoint(out_dir / "last.safetensors").info
    assert info["seed"] == 0 and info["steps"] == 8


def test_checkpoints_record_provenance(finished_run):
    out_dir, result = finished_run
    for name in ("best.safetensors", "last.safetensors"):
        info = load_checkpoint(out_dir / name).info
        for key in ("command", "seed", "data", "steps", "wall_seconds", "hardware", "figures"):
            assert key in info, (name, key)
    assert result.best_step > 0



def test_a_fine_tune_that_never_beats_its_start_hands_back_the_start(finished_run, tmp_path,
                                                                     monkeypatch):
    start = finished_run[0] / "best.safetensors"
    scores = iter([30.0, 20.0, 10.0])  # the start, then two worse validations
    original_validate = trainer_mod.Trainer.validate

    def worsening(self):
        return {**original_validate(self), "psnr_mulaw": next(scores)}

    monkeypatch.setattr(trainer_mod.Trainer, "validate", worsening)
    shipped = tmp_path / "model.safetensors"
    result = train(tiny_config(tmp_path / "run", init=start, output=shipped))
    assert result.best_step == 0 and result.best_val_psnr_mulaw == 30.0
    a, b = load_file(str(start)), load_file(str(shipped))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(shipped).info["selected"].endswith("(step 0)")

def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = train(tiny_config(tmp_path / "straight"))

    original_step = trainer_mod.Trainer._train_step

    def killed_at_step_4(self, ldr, target):
        if self.step == 4:  # state was last saved at the step-3 validation
            raise KeyboardInterrupt
        return original_step(self, ldr, target)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "killed"))
    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", original_step)

    resumed = train(tiny_config(tmp_path / "killed", resume=True))
    assert resumed.resumed_from_step == 3 and resumed.steps == 6
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "killed" / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert resumed.final_val_psnr_mulaw == straight.final_val_psnr_mulaw


def test_cosine_schedule_warms_up_then_decays():
    config = TrainConfig(steps=100, schedule="cosine", warmup_steps=10)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(55, config) == pytest.approx(0.5, abs=0.02)
    assert lr_factor(100, config) == pytest.approx(0.0, abs=1e-9)
    paper = TrainConfig(schedule="paper")
    assert lr_factor(8124, paper) == pytest.approx(0.99)


def test_loss_is_zero_for_a_perfect_prediction():
    target = torch.rand(2, 3, 32, 32) + 0.1
    total, parts = ITMLoss()(target, target)
    assert float(total) == pytest.approx(0.0, abs=1e-6)
    assert set(parts) == {"l1", "l2", "cosine"}


def test_vgg_weights_file_is_validated(tmp_path):
    good = tmp_path / "vgg16.pth"
    state = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    torch.save(state, good)
    vgg = VGG16Features.from_file(good)
    assert len(vgg(torch.rand(1, 3, 32, 32))) == 3
    torch.save({"classifier.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="not a torchvision VGG16 state dict"):
        VGG16Features.from_file(tmp_path / "bad.pth")


def run_cli(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def test_cli_missing_data_folder_is_a_usage_error(tmp_path):
    result = run_cli("--data", "hdr-folder", "--hdr-dir", str(tmp_path / "nope"),
                     "--out-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "folder not found" in result.output
    assert "Traceback" not in result.output


def test_cli_empty_data_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = run_cli("--data", "hdr-folder", "--hdr-dir", str(tmp_path / "empty"),
                     "--out-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "no .hdr or .exr files" in result.output


def test_cli_resume_with_another_architecture_fails_cleanly(finished_run):
    out_dir, _ = finished_run
    result = run_cli("--model", "mqnet-sa", "--resume", "--out-dir", str(out_dir),
                     "--crop", "32", "--val-size", "32", "--val-images", "2", "--steps", "9")
    assert result.exit_code == 1
    assert "training state is for model 'mqnet'" in result.output
    assert "mqnet-sa" in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_refuses_to_overwrite_a_run_without_resume(finished_run):
    out_dir, _ = finished_run
    result = run_cli("--out-dir", str(out_dir), "--crop", "32", "--val-size", "32")
    assert result.exit_code == 2
    assert "--resume" in result.output


def test_cli_qat_needs_init(tmp_path):
    result = run_cli("--qat", "--out-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--init" in result.output


# --- --loss qatie, --data enhance -----------------------------------------------------------------

TINY_CLI = ("--crop", "32", "--val-size", "32", "--batch-size", "2", "--steps", "2",
            "--val-every", "2", "--val-images", "2", "--checkpoint-every", "100",
            "--threads", "1", "--schedule", "constant", "--lr", "3e-3")


def enhance_folders(root: Path, count: int = 4, stems: str = "") -> tuple[Path, Path]:
    """``count`` 48x48 phone/DSLR pairs (PNG inputs, JPEG targets); ``stems`` prefixes targets."""
    from PIL import Image

    inputs, targets = root / "phone", root / "dslr"
    inputs.mkdir(parents=True)
    targets.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 200, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(image).save(inputs / f"{i}.png")
        Image.fromarray(image + 40).save(targets / f"{stems}{i}.jpg", quality=95)
    return inputs, targets


def test_cli_trains_with_the_qatie_loss(tmp_path):
    result = run_cli("--loss", "qatie", "--out-dir", str(tmp_path / "run"), *TINY_CLI)
    assert result.exit_code == 0, result.output
    assert "QATIE" in result.output  # the start line names the loss
    info = load_checkpoint(tmp_path / "run" / "last.safetensors").info
    assert info["loss_name"] == "qatie" and info["loss"].startswith("QATIE")
    assert info["steps"] == 2


def test_cli_trains_on_enhancement_pairs(tmp_path):
    inputs, targets = enhance_folders(tmp_path)
    out = tmp_path / "run"
    result = run_cli("--data", "enhance", "--input-dir", str(inputs), "--target-dir",
                     str(targets), "--loss", "qatie", "--out-dir", str(out), *TINY_CLI)
    assert result.exit_code == 0, result.output
    info = load_checkpoint(out / "last.safetensors").info
    assert info["encoding"] == "display" and info["loss_name"] == "qatie"
    assert "enhancement pairs" in info["data"] and "1 held-out" in info["data"]
    assert info["steps"] == 2 and 0 < info["figures"]["val"]["psnr"] < 100
    model = load_checkpoint(out / "last.safetensors")
    assert model.config["output_encoding"] == "display"


def test_cli_enhance_without_matching_stems_fails_in_one_line(tmp_path):
    inputs, targets = enhance_folders(tmp_path, count=2, stems="dslr_")
    result = run_cli("--data", "enhance", "--input-dir", str(inputs), "--target-dir",
                     str(targets), "--out-dir", str(tmp_path / "run"), *TINY_CLI)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and "no input/target pairs with matching file stems" in errors[0]
    assert "Traceback" not in result.output


def test_cli_refuses_mixing_display_and_hdr_targets(tmp_path):
    inputs, targets = enhance_folders(tmp_path, count=1)
    result = run_cli("--data", "enhance", "--input-dir", str(inputs), "--target-dir",
                     str(targets), "--encoding", "mulaw", "--out-dir", str(tmp_path / "a"))
    assert result.exit_code == 2 and "drop --encoding" in result.output
    result = run_cli("--encoding", "display", "--out-dir", str(tmp_path / "b"))
    assert result.exit_code == 2 and "--data enhance" in result.output
    result = run_cli("--data", "enhance", "--input-dir", str(inputs),
                     "--out-dir", str(tmp_path / "c"))
    assert result.exit_code == 2 and "--target-dir" in result.output
    result = run_cli("--loss", "qatie", "--log-mse-weight", "0.1",
                     "--out-dir", str(tmp_path / "d"))
    assert result.exit_code == 2 and "--loss itm" in result.output
    for loss in ("pu21", "pu21-psnr", "pu21-psnr-mse"):  # they decode clip-relative radiance
        result = run_cli("--loss", loss, "--out-dir", str(tmp_path / loss))
        assert result.exit_code == 2 and "mulaw-clip" in result.output, loss
        assert not (tmp_path / loss / "resume.pt").exists()
