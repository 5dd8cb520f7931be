"""Enhancement pairs (LDR input -> LDR target, matched by stem) and the display encoding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from itm_onnx.data.datasets import EnhanceFolder
from itm_onnx.data.encoding import ENCODINGS
from itm_onnx.data.images import ImageError, save_png8, save_png16


def coordinate_image(height: int, width: int, offset: int = 0) -> np.ndarray:
    """R = column, G = row (mod 256), B = offset: crops and flips can be read back."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols % 256, rows % 256, np.full_like(rows, offset)], axis=-1).astype(np.uint8)


def make_pairs(root: Path, count: int = 3, size: tuple[int, int] = (40, 56)) -> tuple[Path, Path]:
    """``count`` pairs whose target is the negative of the input (so alignment is checkable)."""
    inputs, targets = root / "phone", root / "dslr"
    inputs.mkdir(parents=True)
    targets.mkdir(parents=True)
    for i in range(count):
        image = coordinate_image(*size, offset=10 * i)
        save_png8(inputs / f"{i}.png", image)
        if i == 1:  # one JPEG target: formats may differ across the pair
            Image.fromarray(255 - image).save(targets / f"{i}.jpg", quality=100)
        else:
            save_png8(targets / f"{i}.png", 255 - image)
    return inputs, targets


def test_display_encoding_is_the_identity_on_images():
    display = ENCODINGS["display"]
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(display.encode(image), image)
    np.testing.assert_array_equal(display.decode(image), image)
    tensor = torch.from_numpy(image)
    assert torch.equal(display.decode(tensor), tensor)
    assert float(display.encode(np.float32([[[2.0, -1.0, 0.5]]])).max()) == 1.0  # clipped


def test_pairs_match_by_stem_and_crop_alike_at_native_scale(tmp_path, caplog):
    inputs, targets = make_pairs(tmp_path)
    save_png8(inputs / "orphan.png", np.zeros((40, 56, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        data = EnhanceFolder(inputs, targets, size=32, seed=3)
    assert len(data) == 3 and data.encoding.name == "display"
    assert any("1 files without a partner" in r.message for r in caplog.records)
    for index in (0, 2):  # PNG targets: exact
        image, target = data[index]
        assert image.shape == target.shape == (3, 32, 32)
        torch.testing.assert_close(target, 1.0 - image, atol=1e-6, rtol=0)
        steps = (image[0, :, 1:] - image[0, :, :-1]) * 255  # R = column: +-1 per pixel
        assert torch.allclose(steps.abs(), torch.ones_like(steps), atol=1e-3)
        assert float(image[2].mean() * 255) == pytest.approx(10 * index, abs=1e-3)
    image, target = data[1]  # JPEG target: close
    assert float((target - (1.0 - image)).abs().mean()) < 0.02
    assert torch.equal(data[2][0], data[2][0])  # same (seed, index, epoch): same item
    crops = {tuple(data[0][0][:2, 0, 0].tolist())}
    for epoch in range(1, 6):
        data.set_epoch(epoch)
        crops.add(tuple(data[0][0][:2, 0, 0].tolist()))
    assert len(crops) > 1  # crops move from epoch to epoch


def test_small_images_are_enlarged_and_big_targets_resized_to_the_input(tmp_path):
    inputs, targets = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    targets.mkdir()
    save_png8(inputs / "a.png", np.full((24, 30, 3), 40, np.uint8))
    save_png16(targets / "a.png", np.full((48, 60, 3), 200 * 257, np.uint16))  # 16-bit, 2x
    image, target = EnhanceFolder(inputs, targets, size=32)[0]
    assert image.shape == target.shape == (3, 32, 32)
    torch.testing.assert_close(image, torch.full_like(image, 40 / 255))
    torch.testing.assert_close(target, torch.full_like(target, 200 / 255))


def test_unreadable_pairs_are_skipped_and_counted(tmp_path, caplog):
    inputs, targets = make_pairs(tmp_path, count=2)
    (inputs / "0.png").write_bytes(b"not a png")
    save_png8(inputs / "9.png", np.zeros((40, 56, 3), np.uint8))
    save_png8(targets / "9.png", np.zeros((30, 90, 3), np.uint8))  # another framing
    data = EnhanceFolder(inputs, targets, size=16)
    with caplog.at_level(logging.WARNING):
        image, _ = data[0]
        data[2]
    assert float(image[2].mean() * 255) == pytest.approx(10, abs=1e-3)  # fell back to pair 1
    messages = [r.message for r in caplog.records]
    assert any("(1 of 3 so far)" in m and "0.png" in m for m in messages)
    assert any("(2 of 3 so far)" in m and "different aspect ratios" in m for m in messages)
    (inputs / "1.png").write_bytes(b"")
    with pytest.raises(ImageError, match="no readable file left"):
        EnhanceFolder(inputs, targets, size=16)[1]


def test_folders_without_matching_stems_are_refused(tmp_path):
    inputs, targets = make_pairs(tmp_path, count=2)
    for path in targets.iterdir():
        path.rename(path.with_name("x" + path.name))
    with pytest.raises(ImageError, match="no input/target pairs with matching file stems"):
        EnhanceFolder(inputs, targets)
    with pytest.raises(ImageError, match="folder not found"):
        EnhanceFolder(inputs, tmp_path / "missing")
