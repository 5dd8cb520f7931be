"""HDR file input/output (itm_onnx.data.hdr_io) and HDR target encodings (encoding)."""

from __future__ import annotations

import numpy as np
import OpenEXR
import pytest
import torch

from itm_onnx.data.encoding import ENCODINGS, get_encoding, mulaw_decode, mulaw_encode
from itm_onnx.data.hdr_io import probe_hdr, read_hdr, write_hdr
from itm_onnx.data.images import ImageError

RNG = np.random.default_rng(3)
# Radiance spanning 10^-3 .. 10^5, as HDR scenes do, with some exact zeros.
HDR = (10.0 ** RNG.uniform(-3, 5, (10, 13, 3))).astype(np.float32)
HDR[0, :3] = 0.0


def _relative_error(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Error relative to each pixel's brightest channel: RGBE shares one exponent."""
    return np.abs(decoded - original) / np.maximum(original.max(axis=2, keepdims=True), 1e-30)


def _write_exr(path, channels: dict[str, np.ndarray]) -> None:
    with OpenEXR.File(
        {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels
    ) as f:
        f.write(str(path))


# --- round trips ------------------------------------------------------------------------


def test_radiance_hdr_round_trip_within_one_percent(tmp_path):
    path = tmp_path / "a.hdr"
    write_hdr(path, HDR)
    decoded = read_hdr(path)
    assert decoded.dtype == np.float32 and decoded.shape == HDR.shape
    assert _relative_error(decoded, HDR).max() < 0.01
    np.testing.assert_array_equal(decoded[0, :3], 0.0)
    assert probe_hdr(path) == (10, 13)


def test_exr_round_trip_is_exact(tmp_path):
    path = tmp_path / "a.exr"
    write_hdr(path, HDR)
    np.testing.assert_array_equal(read_hdr(path), HDR)
    assert probe_hdr(path) == (10, 13)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.exr"]  # no temporary left


def test_threaded_exr_write_gives_the_same_bytes_and_no_lasting_threads(tmp_path):
    """EXR writes compress on all CPUs, but the file is what a single thread writes and
    OpenEXR's pool is empty again afterwards (a later fork must not inherit its threads)."""
    image = np.random.default_rng(1).random((300, 40, 3), dtype=np.float32) * 20
    write_hdr(tmp_path / "threaded.exr", image)
    assert OpenEXR.global_thread_count() == 0
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": image}) as exr:
        exr.write(str(tmp_path / "single.exr"))
    assert (tmp_path / "threaded.exr").read_bytes() == (tmp_path / "single.exr").read_bytes()


def _rle_channel(values: bytes) -> bytes:
    """New-style Radiance run-length encoding of one channel of one scanline."""
    out, i = bytearray(), 0
    while i < len(values):
        run = 1
        while i + run < len(values) and run < 127 and values[i + run] == values[i]:
            run += 1
        if run >= 3:
            out += bytes((128 + run, values[i]))
            i += run
            continue
        j = i
        while (
            j < len(values)
            and j - i < 128
            and not (j + 2 < len(values) and values[j] == values[j + 1] == values[j + 2])
        ):
            j += 1
        out += bytes((j - i,)) + values[i:j]
        i = j
    return bytes(out)


def test_run_length_encoded_hdr_decodes_like_the_flat_file(tmp_path):
    image = np.repeat(HDR, 2, axis=1)  # width 26 >= 8 so RLE applies; repeats make runs
    image[:, :10] = 2.5
    flat = tmp_path / "flat.hdr"
    write_hdr(flat, image)
    data = flat.read_bytes()
    header_end = data.index(b"+X 26\n") + len(b"+X 26\n")
    pixels = np.frombuffer(data[header_end:], np.uint8).reshape(10, 26, 4)
    body = b"".join(
        bytes((2, 2, 0, 26)) + b"".join(_rle_channel(row[:, c].tobytes()) for c in range(4))
        for row in pixels
    )
    rle = tmp_path / "rle.hdr"
    rle.write_bytes(data[:header_end] + body)
    assert len(body) < pixels.size
    np.testing.assert_array_equal(read_hdr(rle), read_hdr(flat))
    truncated = tmp_path / "truncated.hdr"
    truncated.write_bytes(data[:header_end] + body[: len(body) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_hdr(truncated)


def test_bottom_up_hdr_is_flipped(tmp_path):
    path = tmp_path / "a.hdr"
    write_hdr(path, HDR)
    path.write_bytes(path.read_bytes().replace(b"-Y 10 +X 13", b"+Y 10 +X 13"))
    top_down = tmp_path / "b.hdr"
    write_hdr(top_down, HDR)
    np.testing.assert_array_equal(read_hdr(path), read_hdr(top_down)[::-1])


def test_format_comes_from_content_not_suffix(tmp_path):
    path = tmp_path / "a.exr"
    write_hdr(path, HDR)
    renamed = path.rename(tmp_path / "really_exr.hdr")
    np.testing.assert_array_equal(read_hdr(renamed), HDR)


def test_luminance_only_exr_is_replicated(tmp_path):
    path = tmp_path / "y.exr"
    _write_exr(path, {"Y": HDR[..., 0].copy()})
    decoded = read_hdr(path)
    np.testing.assert_array_equal(decoded, np.repeat(HDR[..., :1], 3, axis=2))


# --- rejections -------------------------------------------------------------------------


def test_nan_and_inf_are_repaired_with_counts(tmp_path, caplog):
    bad = HDR.copy()
    bad[1, 1, 0] = np.nan
    bad[2, 2, :] = np.nan
    bad[3, 3, 1] = np.inf
    path = tmp_path / "bad.exr"
    _write_exr(path, {"RGB": bad})
    with caplog.at_level("WARNING"):
        rgb = read_hdr(path)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(path) in message and "4 NaN" in message and "1 +Inf" in message
    finite = HDR.copy()
    finite[1, 1, 0] = finite[2, 2, :] = 0.0
    finite[3, 3, 1] = HDR.max()
    np.testing.assert_array_equal(rgb, finite)
    with pytest.raises(ImageError, match="NaN"):  # writing stays strict
        write_hdr(tmp_path / "out.hdr", bad)
    assert not (tmp_path / "out.hdr").exists()


def test_small_negative_values_are_clipped_with_one_line(tmp_path, caplog):
    noisy = HDR.copy()
    noisy[0, 5] = -0.0016  # what real captures hold after colour transforms
    path = tmp_path / "neg.exr"
    _write_exr(path, {"RGB": noisy})
    with caplog.at_level("WARNING"):
        rgb = read_hdr(path)
    assert len(caplog.records) == 1 and "3 negative" in caplog.records[0].getMessage()
    assert rgb.min() == 0.0 and rgb[0, 5].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(rgb[1:], HDR[1:])


def test_wrong_channels_are_rejected(tmp_path):
    path = tmp_path / "depth.exr"
    _write_exr(path, {"Z": HDR[..., 0].copy()})
    with pytest.raises(ImageError, match="channels Z: expected R, G, B"):
        read_hdr(path)
    with pytest.raises(ImageError, match="HxWx3"):
        write_hdr(tmp_path / "x.exr", HDR[..., :2])


@pytest.mark.parametrize("suffix", [".exr", ".hdr"])
def test_corrupt_files_are_rejected(tmp_path, suffix):
    path = tmp_path / ("a" + suffix)
    write_hdr(path, HDR)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageError, match="truncated"):
        read_hdr(path)


def test_non_hdr_files_are_rejected(tmp_path):
    path = tmp_path / "a.hdr"
    path.write_text("hello")
    with pytest.raises(ImageError, match="not a Radiance"):
        read_hdr(path)
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 2 +X 2\n" + bytes(16))
    with pytest.raises(ImageError, match="xyze"):
        read_hdr(path)
    with pytest.raises(ImageError, match="file not found"):
        read_hdr(tmp_path / "missing.exr")


def test_hdr_size_limit_is_checked_from_the_header(tmp_path):
    path = tmp_path / "a.hdr"
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n")
    with pytest.raises(ImageError, match="over the limit"):
        read_hdr(path)


def test_unknown_suffix_is_refused_on_write(tmp_path):
    with pytest.raises(ImageError, match="use .hdr or .exr"):
        write_hdr(tmp_path / "a.png", HDR)


# --- encodings --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encodings_map_into_unit_range(name):
    encoding = get_encoding(name)
    y = encoding.encode(HDR)
    assert y.dtype == np.float32 and y.shape == HDR.shape
    assert y.min() >= 0.0 and y.max() == pytest.approx(1.0)
    assert len(encoding.description) > 40 and encoding.name == name


def test_mulaw_decodes_exactly_to_relative_radiance():
    relative = HDR / HDR.max()
    np.testing.assert_allclose(mulaw_decode(mulaw_encode(HDR)), relative, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        mulaw_encode(relative), mulaw_encode(HDR * 37.0), rtol=1e-6
    )  # scale-free


def test_minmax_is_linear_per_image():
    y = ENCODINGS["minmax"].encode(HDR)
    expected = (HDR - HDR.min()) / (HDR.max() - HDR.min())
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ENCODINGS["minmax"].decode(y), y)
    np.testing.assert_array_equal(ENCODINGS["minmax"].encode(np.ones((2, 2, 3), np.float32)), 0.0)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_torch_and_numpy_agree_per_image(name):
    encoding = get_encoding(name)
    batch = np.stack([HDR, HDR * 0.01 + 3.0])
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2)  # B x 3 x H x W
    encoded = encoding.encode(tensor)
    assert isinstance(encoded, torch.Tensor) and encoded.dtype == torch.float32
    for i in range(2):  # each image is normalised on its own, not by the batch
        np.testing.assert_allclose(
            encoded[i].permute(1, 2, 0).numpy(), encoding.encode(batch[i]), atol=1e-6
        )
    decoded = encoding.decode(encoded)
    assert isinstance(decoded, torch.Tensor)


def test_torch_encoding_keeps_gradients():
    x = torch.from_numpy(HDR).permute(2, 0, 1).clone().requires_grad_(True)
    mulaw_encode(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unknown_encoding_lists_the_choices():
    with pytest.raises(KeyError, match="minmax"):
        get_encoding("pq")
