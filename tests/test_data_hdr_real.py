"""What real HDR captures contain: tiled and multi-view EXR, alpha, half floats, RLE
Radiance files with EXPOSURE= lines. The files are built here with the OpenEXR binding
(tests never read the project's shared data)."""

from __future__ import annotations

import numpy as np
import OpenEXR

from itm_onnx.data.hdr_io import probe_hdr, read_hdr, write_hdr

RNG = np.random.default_rng(11)
RGB = (10.0 ** RNG.uniform(-2, 3, (24, 40, 3))).astype(np.float32)
# The binding reads each plane's raw buffer: planes must be contiguous copies.
PLANES = {c: np.ascontiguousarray(RGB[..., i]) for i, c in enumerate("RGB")}


def _write(path, header: dict, channels: dict) -> None:
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(path))


def test_tiled_exr_reads_the_full_image(tmp_path):
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 16, 16, OpenEXR.ONE_LEVEL
    path = tmp_path / "tiled.exr"
    _write(path, {"type": OpenEXR.tiledimage, "tiles": tiles,
                  "compression": OpenEXR.ZIP_COMPRESSION}, {"RGB": RGB})
    assert probe_hdr(path) == (24, 40)
    np.testing.assert_array_equal(read_hdr(path), RGB)


def test_multi_view_exr_reads_the_default_view(tmp_path):
    path = tmp_path / "stereo.exr"
    channels = dict(PLANES)
    channels |= {f"left.{c}": np.zeros_like(RGB[..., 0]) for c in "RGB"}
    _write(path, {"type": OpenEXR.scanlineimage, "multiView": ["center", "left"]}, channels)
    np.testing.assert_array_equal(read_hdr(path), RGB)


def test_premultiplied_alpha_keeps_light_where_alpha_is_zero(tmp_path):
    alpha = np.ones(RGB.shape[:2], np.float32)
    alpha[:, :8] = 0.0  # a glow with no coverage, as in real captures of flames
    path = tmp_path / "alpha.exr"
    _write(path, {"type": OpenEXR.scanlineimage},
           PLANES | {"A": alpha})
    rgb = read_hdr(path)
    np.testing.assert_array_equal(rgb, RGB)
    assert rgb[:, :8].min() > 0


def test_half_float_exr_reads_as_float32(tmp_path):
    half = np.minimum(RGB, 60000).astype(np.float16)
    path = tmp_path / "half.exr"
    _write(path, {"type": OpenEXR.scanlineimage, "compression": OpenEXR.PIZ_COMPRESSION},
           {"RGB": half})
    rgb = read_hdr(path)
    assert rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb, half.astype(np.float32))


def test_half_float_overflow_becomes_the_largest_finite_value(tmp_path, caplog):
    half = RGB.astype(np.float16)
    half[0, 0, 0] = np.inf  # a sun disc above 65504 stored as half
    path = tmp_path / "sun.exr"
    _write(path, {"type": OpenEXR.scanlineimage}, {"RGB": half})
    rgb = read_hdr(path)
    assert np.isfinite(rgb).all() and rgb[0, 0, 0] == rgb.max()
    assert "1 +Inf" in caplog.text


def test_rle_radiance_with_exposure_lines_is_divided_out(tmp_path):
    flat = tmp_path / "flat.hdr"
    write_hdr(flat, RGB)
    data = flat.read_bytes()
    exposed = data.replace(b"FORMAT=32-bit_rle_rgbe\n",
                           b"FORMAT=32-bit_rle_rgbe\nEXPOSURE=2.0\nEXPOSURE=  0.25\n", 1)
    assert exposed != data
    path = tmp_path / "exposed.hdr"
    path.write_bytes(exposed)
    np.testing.assert_allclose(read_hdr(path), read_hdr(flat) / 0.5, rtol=1e-6)
