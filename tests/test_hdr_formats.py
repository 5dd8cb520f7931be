"""HDR display files: the radiometric mapping, and every writer checked by decoding its
file back with an independent decoder (libultrahdr, libavif/dav1d and libpng through
imagecodecs; a chunk reader and an ISOBMFF box reader written here for the tags)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from itm_onnx import Runner
from itm_onnx.display import (
    BT709_TO_BT2020,
    SDR_WHITE_NITS,
    EncoderMissing,
    check_encoders,
    encode_display,
    encode_ultrahdr,
    linear_to_display,
    pq_codes,
    pq_decode,
    pq_encode,
)
from itm_onnx.display.mapping import bt709_to_bt2020, linear_to_srgb8, shoulder, srgb_to_linear
from itm_onnx.errors import UsageError

from .test_cli import assert_one_line_error
from .test_runner import META, affine_model, run_cli

# Measured on scene() below (and on a 1088x1920 photo through the shipped model, see the
# README): Ultra HDR reconstruction by libultrahdr within these, in stops (log2 ratio).
UHDR_MEDIAN_STOPS, UHDR_P99_STOPS = 0.02, 0.08


def scene(height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(linear model-style output with highlights up to 12x the clip, its 8-bit photo)."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    base = np.stack([0.15 + 0.7 * xx, 0.1 + 0.6 * yy, 0.5 - 0.3 * xx], axis=-1) ** 2.2
    blob = np.exp(-(((xx - 0.65) ** 2) + (yy - 0.4) ** 2) / 0.02)[..., None]
    linear = base + blob * np.array([11.0, 9.0, 6.0])  # warm highlight, far above the clip
    return linear.astype(np.float32), linear_to_srgb8(linear)


def stops(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.log2((a + 1 / 64) / (b + 1 / 64)))


# --- the mapping ------------------------------------------------------------------------


def test_clip_level_is_sdr_white_and_below_it_nothing_changes():
    linear = np.array([[[1.0, 1.0, 1.0], [0.5, 0.25, 0.1], [0.0, 0.0, 0.0]]])
    nits = linear_to_display(linear, 1000)
    np.testing.assert_allclose(nits, linear * SDR_WHITE_NITS, rtol=1e-6)


@pytest.mark.parametrize("peak", [203.0, 400.0, 1000.0, 4000.0, 10000.0])
def test_highlights_roll_off_smoothly_below_the_peak_keeping_hue(peak):
    m = np.linspace(0.0, 60.0, 6001)
    grey = linear_to_display(np.repeat(m[None, :, None], 3, axis=2), peak)[0, :, 0]
    assert np.all(np.diff(grey) >= 0) and grey.max() <= peak
    if peak > SDR_WHITE_NITS:  # never clipped flat (float64: float32 saturates at ~20 stops)
        curve = shoulder(m[m <= 12.0] * SDR_WHITE_NITS, peak)
        assert np.all(np.diff(curve) > 0) and curve.max() < peak
        h = 1e-4  # slope 1 on both sides of the knee: no kink
        above = (shoulder(SDR_WHITE_NITS + h, peak) - SDR_WHITE_NITS) / h
        below = (SDR_WHITE_NITS - shoulder(SDR_WHITE_NITS - h, peak)) / h
        assert above == pytest.approx(1.0, abs=1e-5) and below == pytest.approx(1.0)
    colour = linear_to_display(np.array([[[8.0, 4.0, 2.0]]]), peak)[0, 0]
    np.testing.assert_allclose(colour / colour[0], [1.0, 0.5, 0.25], rtol=1e-6)


def test_bad_values_and_peaks():
    nits = linear_to_display(np.array([[[np.nan, -1.0, np.inf]]]), 1000)
    np.testing.assert_array_equal(nits, 0.0)
    for peak in (100, 202.9, 10001):
        with pytest.raises(UsageError, match="203-10000"):
            linear_to_display(np.ones((1, 1, 3)), peak)


def test_bt709_to_bt2020_is_bt2087_and_pq_is_st2084():
    # ITU-R BT.2087-0, equation (3), to its printed 4 decimals.
    np.testing.assert_allclose(BT709_TO_BT2020, [[0.6274, 0.3293, 0.0433],
                                                 [0.0691, 0.9195, 0.0114],
                                                 [0.0164, 0.0880, 0.8956]], atol=6e-5)
    np.testing.assert_allclose(bt709_to_bt2020(np.ones((1, 1, 3))), 1.0, rtol=1e-12)
    assert pq_encode(np.array(10000.0)) == pytest.approx(1.0)
    assert pq_encode(np.array(203.0)) == pytest.approx(0.5807, abs=1e-4)  # BT.2408: 58 %
    assert pq_encode(np.array(100.0)) == pytest.approx(0.5081, abs=1e-4)
    nits = np.geomspace(0.01, 10000, 50)
    np.testing.assert_allclose(pq_decode(pq_encode(nits)), nits, rtol=1e-9)


# --- readers that are not the writers ---------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def isobmff_box(data: bytes, kind: bytes) -> bytes:
    """Payload of the first box of this type anywhere in the file (AVIF's are nested)."""
    at = data.index(kind)
    (size,) = struct.unpack(">I", data[at - 4:at])
    return data[at + 4:at - 4 + size]


def avif_tags(data: bytes) -> dict:
    colr = isobmff_box(data, b"colr")
    assert colr[:4] == b"nclx"
    primaries, transfer, matrix, flags = struct.unpack(">HHHB", colr[4:11])
    pixi = isobmff_box(data, b"pixi")
    bits = list(pixi[5:5 + pixi[4]])  # after version/flags and the channel count
    return {"cicp": (primaries, transfer, matrix), "full_range": bool(flags & 0x80),
            "bits": bits}


# --- the writers ------------------------------------------------------------------------


def test_png_pq_has_cicp_after_ihdr_16_bits_and_the_intended_codes():
    linear, _ = scene()
    data = encode_display("png-pq", linear, peak_nits=1000)
    chunks = png_chunks(data)
    assert [kind for kind, _ in chunks[:2]] == [b"IHDR", b"cICP"]
    assert chunks[-1][0] == b"IEND"
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour) == (64, 48, 16, 2)
    assert tuple(chunks[1][1]) == (9, 16, 0, 1)
    decoded = imagecodecs.png_decode(data)  # libpng
    assert decoded.dtype == np.uint16 and decoded.shape == (48, 64, 3)
    intended = pq_encode(bt709_to_bt2020(linear_to_display(linear, 1000)))
    assert np.abs(decoded / 65535.0 * 1023 - intended * 1023).max() <= 1.0
    assert np.abs(decoded / 65535.0 - intended).max() <= 0.5 / 65535 + 1e-9
    assert decoded.max() > 0.7 * 65535  # the highlight really is above SDR white (0.58)


def test_avif_is_10_bit_bt2020_pq_full_range_and_lossless():
    linear, _ = scene()
    data = encode_display("avif", linear, peak_nits=1000)
    assert data[4:12] == b"ftypavif"
    assert avif_tags(data) == {"cicp": (9, 16, 0), "full_range": True, "bits": [10, 10, 10]}
    decoded = imagecodecs.avif_decode(data)  # libavif + dav1d/aom
    assert decoded.dtype == np.uint16 and decoded.shape == (48, 64, 3)
    intended = pq_encode(bt709_to_bt2020(linear_to_display(linear, 1000))) * 1023
    assert np.abs(decoded - intended).max() <= 1.0
    np.testing.assert_array_equal(decoded, pq_codes(linear, 1000, bits=10))


def test_ultrahdr_base_is_the_photo_and_the_hdr_reconstructs():
    linear, photo = scene()
    data = encode_display("uhdr", linear, photo, peak_nits=1000)
    assert imagecodecs.ultrahdr_check(data)
    with Image.open(io.BytesIO(data)) as plain:  # what a viewer without HDR shows
        base = np.asarray(plain.convert("RGB")).astype(int)
    assert np.abs(base - photo).mean() < 1.0 and np.abs(base - photo).max() <= 12  # JPEG q95
    hdr = imagecodecs.ultrahdr_decode(data).astype(np.float64)[..., :3]  # libultrahdr
    intended = linear_to_display(linear, 1000) / SDR_WHITE_NITS
    error = stops(hdr, intended)
    assert np.median(error) < UHDR_MEDIAN_STOPS and np.percentile(error, 99) < UHDR_P99_STOPS
    assert hdr.max() > 3.0  # highlights well above SDR white survived
    # the file says where its gain map is: the MPF second entry points at a JPEG SOI
    mpf = data.index(b"MPF\x00") + 4
    size, offset = struct.unpack(">II", data[mpf + 50 + 16 + 4:mpf + 50 + 16 + 12])
    assert data[mpf + offset:mpf + offset + 2] == b"\xff\xd8"
    assert mpf + offset + size == len(data)
    assert b'hdrgm:HDRCapacityMax="2.3' in data  # log2(1000 / 203) = 2.30


def test_ultrahdr_without_a_photo_uses_the_hdr_clipped_at_sdr_white():
    linear, _ = scene(32, 32)
    hdr = linear_to_display(linear, 1000) / SDR_WHITE_NITS
    data = encode_ultrahdr(hdr, None, peak_nits=1000)
    with Image.open(io.BytesIO(data)) as plain:
        base = np.asarray(plain.convert("RGB")).astype(int)
    assert np.abs(base - linear_to_srgb8(hdr)).mean() < 1.5
    decoded = imagecodecs.ultrahdr_decode(data).astype(np.float64)[..., :3]
    assert np.median(stops(decoded, hdr)) < UHDR_MEDIAN_STOPS


def test_a_lower_peak_gives_dimmer_highlights_and_same_shadows():
    linear, photo = scene()
    low = imagecodecs.avif_decode(encode_display("avif", linear, peak_nits=400))
    high = imagecodecs.avif_decode(encode_display("avif", linear, peak_nits=4000))
    assert low.max() < high.max()
    dark = linear.max(axis=-1) < 0.9
    assert np.abs(low[dark].astype(int) - high[dark]).max() <= 1
    assert srgb_to_linear(photo).max() <= 1.0


def test_outputs_are_byte_identical_for_the_same_input():
    linear, photo = scene()
    for name in ("uhdr", "avif", "png-pq"):
        assert encode_display(name, linear, photo) == encode_display(name, linear, photo), name


def test_missing_encoder_is_named(monkeypatch):
    monkeypatch.setattr(imagecodecs.AVIF, "available", False)
    with pytest.raises(EncoderMissing, match=r"imagecodecs\.avif_encode.*imagecodecs 20"):
        check_encoders(["png16", "uhdr", "avif"])
    check_encoders(["uhdr", "png-pq"])  # Pillow and zlib only: unaffected


# --- Runner API and CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return affine_model(tmp_path_factory.mktemp("display") / "dynamic.onnx", metadata=META)


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    _, photo = scene(40, 56)
    Image.fromarray(photo).save(folder / "a.png")
    Image.fromarray(photo[::-1]).save(folder / "b.jpg", quality=95)
    return folder


def test_runner_api_array_in_bytes_or_file_out(model, tmp_path):
    runner = Runner(model)
    _, photo = scene(40, 56)
    y = runner.predict(photo)
    data = runner.encode(y, "avif", peak_nits=600)
    assert avif_tags(data)["cicp"] == (9, 16, 0)
    path = runner.write(tmp_path / "x.uhdr.jpg", y, "uhdr", photo)
    assert imagecodecs.ultrahdr_check(path.read_bytes())
    with pytest.raises(UsageError, match="choose from"):
        runner.encode(y, "heic")


def test_cli_writes_every_display_format(runner, model, photos, tmp_path):
    out = tmp_path / "out"
    result = run_cli(runner, "-m", model, photos, "--format", "uhdr,avif,png-pq",
                     "--peak-nits", "1600", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["formats"] == ["uhdr", "avif", "png-pq"] and report["html"] is None
    assert sorted(p.name for p in out.iterdir()) == [
        "a.avif", "a.pq.png", "a.uhdr.jpg", "b.avif", "b.pq.png", "b.uhdr.jpg"]
    assert imagecodecs.ultrahdr_decode((out / "a.uhdr.jpg").read_bytes()).shape == (40, 56, 4)
    assert imagecodecs.avif_decode((out / "b.avif").read_bytes()).shape == (40, 56, 3)
    assert b'HDRCapacityMax="2.97' in (out / "a.uhdr.jpg").read_bytes()  # log2(1600/203)


def test_unknown_format_lists_the_formats(runner, model, photos, tmp_path):
    result = run_cli(runner, "-m", model, photos, "--format", "uhdr,jxl", "-o", tmp_path / "o")
    assert_one_line_error(result, 2, "png16, exr, hdr, uhdr, avif, png-pq")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("peak", ["100", "20000", "abc"])
def test_peak_nits_out_of_range_is_a_usage_error(runner, model, photos, tmp_path, peak):
    result = run_cli(runner, "-m", model, photos, "--format", "avif", "--peak-nits", peak,
                     "-o", tmp_path / "o")
    assert result.exit_code == 2 and "--peak-nits" in result.output
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder_fails_before_any_work(runner, model, photos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli(runner, "-m", model, photos, "--format", "avif", "-o", blocker / "out")
    assert_one_line_error(result, 2, f"cannot write to output folder {blocker / 'out'}")
    result = run_cli(runner, "-m", model, photos, "--format", "avif", "-o", tmp_path / "o",
                     "--html", blocker / "index.html")
    assert_one_line_error(result, 2, "folder of the --html page")


def test_missing_encoder_fails_with_one_line_and_no_files(runner, model, photos, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(imagecodecs.AVIF, "available", False)
    out = tmp_path / "out"
    result = run_cli(runner, "-m", model, photos, "--format", "uhdr,avif", "-o", out)
    assert_one_line_error(result, 1, "needs imagecodecs.avif_encode")
    assert not out.exists() or not any(out.iterdir())


def test_an_encoder_failure_leaves_none_of_that_inputs_files(runner, model, photos, tmp_path,
                                                             monkeypatch):
    def broken(*_args, **_kwargs):
        raise imagecodecs.AvifError("avifEncoderWrite", "simulated")

    monkeypatch.setattr(imagecodecs, "avif_encode", broken)
    out = tmp_path / "out"
    result = run_cli(runner, "-m", model, photos, "--format", "png-pq,avif", "-o", out)
    assert result.exit_code == 1 and "AVIF encoder failed" in result.output
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # a.pq.png was written first, then removed
