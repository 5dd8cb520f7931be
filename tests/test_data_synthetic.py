"""Synthetic scenes, tone mapping, datasets and the shipped calibration set."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from itm_onnx.data.calibration import make_calibration_set
from itm_onnx.data.datasets import HdrFolder, PairedFolder, SyntheticPairs
from itm_onnx.data.hdr_io import write_hdr
from itm_onnx.data.images import ImageError, load_ldr, save_png8
from itm_onnx.data.synthetic import SCENE_KINDS, SPLITS, build_scene, render_scene, scene_seed
from itm_onnx.data.tonemap import OPERATORS, expose, random_tmo, to_8bit

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"
SEEDS = range(40)


@pytest.fixture(scope="module")
def scenes() -> dict[int, np.ndarray]:
    """Forty small renders, shared by the tests that only look at them."""
    return {seed: render_scene(seed, 64, 64) for seed in SEEDS}


# --- synthetic scenes ---------------------------------------------------------------------


def test_render_is_deterministic_and_seeds_differ(scenes):
    again = render_scene(5, 64, 64)
    np.testing.assert_array_equal(again, scenes[5])
    assert not np.allclose(scenes[5], scenes[6])


def test_renders_are_valid_radiance(scenes):
    for image in scenes.values():
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0.0


def test_non_square_sizes_render():
    assert render_scene(1, 48, 80).shape == (48, 80, 3)


def test_all_scene_kinds_occur():
    assert {build_scene(seed).kind for seed in SEEDS} == set(SCENE_KINDS)


def test_visible_light_sources_give_high_dynamic_range():
    lit = [seed for seed in SEEDS if build_scene(seed).bright_source_in_view]
    ratios = {}
    for seed in lit:  # at 128 px: at 64 px a 0.5-degree sun disc is smaller than a pixel
        image = render_scene(seed, 128, 128)
        ratios[seed] = float(image.max() / np.median(image))
    assert len(ratios) >= 10
    assert min(ratios.values()) > 100, ratios


def test_exposure_varies_from_dark_to_bright(scenes):
    medians = np.array([np.median(image) for image in scenes.values()])
    assert medians.max() / medians.min() > 30


def test_render_is_fast_enough():
    build_scene(0)
    start = time.perf_counter()
    for seed in range(8):
        render_scene(seed, 256, 256)
    # About 15-25 ms a scene on one core; the bound only catches gross regressions.
    assert (time.perf_counter() - start) / 8 < 0.25


def test_splits_never_share_scenes():
    seeds = {split: {scene_seed(0, split, i) for i in range(2000)} for split in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a != b:
                assert not seeds[a] & seeds[b]
    with pytest.raises(ValueError, match="unknown split"):
        scene_seed(0, "holdout", 0)


# --- tone mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operators_give_display_values(scenes, name):
    for seed in (0, 3, 7):
        ldr = OPERATORS[name](scenes[seed], np.random.default_rng(seed))
        assert ldr.dtype == np.float32 and ldr.shape == (64, 64, 3)
        assert np.isfinite(ldr).all() and ldr.min() >= 0.0 and ldr.max() <= 1.0
        assert ldr.std() > 0.01  # not a blank image
    black = OPERATORS[name](np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
    assert np.isfinite(black).all() and black.max() <= 1.0


def test_operators_are_reproducible_and_random_tmo_uses_all(scenes):
    a, name_a = random_tmo(scenes[1], np.random.default_rng(11))
    b, name_b = random_tmo(scenes[1], np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    assert name_a == name_b
    names = {random_tmo(scenes[1], np.random.default_rng(i))[1] for i in range(40)}
    assert names == set(OPERATORS)


def test_percentile_exposure_clips_highlights(scenes):
    ldr = OPERATORS["percentile"](scenes[0], np.random.default_rng(0))
    assert (ldr >= 1.0).mean() > 0.0  # the high percentile is below the maximum


def test_to_8bit_quantises_and_degrades_on_request():
    ldr = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    clean = to_8bit(ldr, np.random.default_rng(0))
    np.testing.assert_array_equal(clean, np.round(ldr * 255).astype(np.uint8))
    noisy = to_8bit(ldr, np.random.default_rng(0), noise=True)
    assert noisy.dtype == np.uint8 and (noisy != clean).mean() > 0.2
    assert abs(noisy.astype(float).mean() - clean.astype(float).mean()) < 3.0
    jpeg = to_8bit(ldr, np.random.default_rng(0), jpeg_quality=(50, 60))
    assert jpeg.shape == clean.shape and (jpeg != clean).any()
    np.testing.assert_array_equal(
        jpeg, to_8bit(ldr, np.random.default_rng(0), jpeg_quality=(50, 60))
    )


def test_expose_shifts_brightness():
    grey = np.full((4, 4, 3), 0.5, np.float32)
    assert expose(grey, 1.0).mean() > 0.6 and expose(grey, -1.0).mean() < 0.4
    assert expose(grey, 5.0).max() == 1.0


# --- datasets -------------------------------------------------------------------------------


def test_synthetic_pairs_are_deterministic_tensors():
    data = SyntheticPairs(4, size=32, seed=1, split="val", jpeg=(80, 90))
    ldr, target = data[2]
    assert ldr.shape == target.shape == (3, 32, 32)
    assert ldr.dtype == target.dtype == torch.float32
    assert (
        0.0 <= float(ldr.min())
        and float(ldr.max()) <= 1.0
        and float(target.max()) == pytest.approx(1.0)
    )
    again_ldr, again_target = SyntheticPairs(4, size=32, seed=1, split="val", jpeg=(80, 90))[2]
    assert torch.equal(ldr, again_ldr) and torch.equal(target, again_target)
    other_split = SyntheticPairs(4, size=32, seed=1, split="train")[2][1]
    assert not torch.equal(target, other_split)
    with pytest.raises(IndexError):
        data[4]


def _hdr_folder(root: Path, count: int = 3) -> Path:
    root.mkdir()
    for i in range(count):
        write_hdr(root / f"img{i}{'.exr' if i % 2 else '.hdr'}", render_scene(100 + i, 40, 56))
    return root


def test_hdr_folder_skips_unreadable_files_with_one_warning(tmp_path, caplog):
    root = _hdr_folder(tmp_path / "hdr")
    (root / "broken.hdr").write_text("nonsense")
    (root / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        data = HdrFolder(root, size=32, seed=3)
    assert len(data) == 3
    assert [r.message for r in caplog.records if "skipped" in r.message] == [
        f"{root}: skipped 1 of 4 HDR files that cannot be read (first: {root / 'broken.hdr'}: "
        "not a Radiance RGBE (.hdr) or OpenEXR (.exr) file)"
    ]
    ldr, target = data[1]
    assert ldr.shape == target.shape == (3, 32, 32)
    assert torch.equal(data[1][0], ldr)  # same (seed, index, epoch): same item
    data.set_epoch(1)
    assert not torch.equal(data[1][0], ldr)


def test_hdr_folder_replaces_a_file_that_fails_to_decode(tmp_path, caplog):
    root = _hdr_folder(tmp_path / "hdr", count=2)
    damaged = root / "img0.hdr"
    damaged.write_bytes(damaged.read_bytes()[:-500])  # header fine, pixels cut short
    data = HdrFolder(root, size=16)
    with caplog.at_level(logging.WARNING):
        ldr, _ = data[0]
    assert ldr.shape == (3, 16, 16)
    assert any("img0.hdr" in r.message and "truncated" in r.message for r in caplog.records)


def test_hdr_folder_errors_are_clear(tmp_path):
    with pytest.raises(ImageError, match="folder not found"):
        HdrFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no .hdr or .exr files"):
        HdrFolder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.exr").write_text("nonsense")
    with pytest.raises(ImageError, match="none of the 1 HDR files can be read"):
        HdrFolder(tmp_path / "bad")


def test_paired_folder_matches_stems_and_crops_alike(tmp_path, caplog):
    ldr_dir, hdr_dir = tmp_path / "ldr", _hdr_folder(tmp_path / "hdr")
    ldr_dir.mkdir()
    for i in range(3):
        save_png8(ldr_dir / f"img{i}.png", np.full((40, 56, 3), 60 * i, np.uint8))
    save_png8(ldr_dir / "orphan.png", np.zeros((40, 56, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        data = PairedFolder(ldr_dir, hdr_dir, size=24, seed=5)
    assert len(data) == 3
    assert any("1 files without a partner" in r.message for r in caplog.records)
    ldr, target = data[2]
    assert ldr.shape == target.shape == (3, 24, 24)
    torch.testing.assert_close(ldr, torch.full_like(ldr, 120 / 255))
    with pytest.raises(ImageError, match="no LDR/HDR pairs"):
        PairedFolder(ldr_dir, tmp_path / "ldr", size=24)


def test_paired_folder_skips_pairs_of_different_sizes(tmp_path):
    ldr_dir, hdr_dir = tmp_path / "ldr", _hdr_folder(tmp_path / "hdr", count=2)
    ldr_dir.mkdir()
    save_png8(ldr_dir / "img0.png", np.zeros((20, 20, 3), np.uint8))  # HDR is 56x40
    save_png8(ldr_dir / "img1.png", np.full((40, 56, 3), 9, np.uint8))
    ldr, _ = PairedFolder(ldr_dir, hdr_dir, size=8)[0]
    torch.testing.assert_close(ldr, torch.full_like(ldr, 9 / 255))  # fell back to img1


# --- calibration ----------------------------------------------------------------------------


def test_shipped_calibration_set_is_complete_and_readable():
    files = sorted(CALIBRATION.glob("calib_*.png"))
    assert len(files) >= 64
    assert [f.name for f in files[:2]] == ["calib_000.png", "calib_001.png"]
    for path in files:
        assert load_ldr(path).rgb.shape == (384, 384, 3)
    assert sum(p.stat().st_size for p in CALIBRATION.iterdir()) < 14_000_000
    readme = (CALIBRATION / "README.md").read_text()
    assert "make_real_calibration_set" in readme and "CC0-1.0" in readme
    rows = (CALIBRATION / "manifest.tsv").read_text().splitlines()[1:]
    assert len(rows) == len(files) and all(r.split("\t")[2] != "unknown" for r in rows)


def test_synthetic_calibration_is_reproducible(tmp_path):
    first = make_calibration_set(tmp_path / "a", count=3)
    make_calibration_set(tmp_path / "b", count=3)
    for record in first:
        assert record.path.read_bytes() == (tmp_path / "b" / record.path.name).read_bytes()
    assert (tmp_path / "a" / "manifest.tsv").read_bytes() == (
        tmp_path / "b" / "manifest.tsv"
    ).read_bytes()


def test_real_calibration_is_reproducible(tmp_path):
    from itm_onnx.data.real import make_real_calibration_set

    hdr = tmp_path / "hdr"
    hdr.mkdir()
    rng = np.random.default_rng(0)
    write_hdr(hdr / "pano.hdr", rng.lognormal(0, 1, (32, 64, 3)).astype(np.float32))
    write_hdr(hdr / "photo.exr", rng.lognormal(0, 1, (40, 50, 3)).astype(np.float32))
    first = make_real_calibration_set(hdr, tmp_path / "a", count=3, size=32)
    make_real_calibration_set(hdr, tmp_path / "b", count=3, size=32)
    for shot in first:
        assert shot.path.read_bytes() == (tmp_path / "b" / shot.path.name).read_bytes()
    assert [s.view for s in first] == ["perspective view", "crop", "perspective view"]
