"""LDR image loading, validation and atomic writing (itm_onnx.data.images, utils.atomic)."""

from __future__ import annotations

import os
import pickle
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from itm_onnx.data.images import (
    HEIF_HINT,
    ImageError,
    heif_available,
    iter_images,
    load_ldr,
    save_png8,
    save_png16,
)
from itm_onnx.run_batch import image_suffixes
from itm_onnx.utils.atomic import atomic_output

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def _save(tmp_path: Path, name: str, image: Image.Image, **params) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


# --- modes ------------------------------------------------------------------------------


def test_rgb_png_is_returned_exactly(tmp_path):
    loaded = load_ldr(_save(tmp_path, "a.png", Image.fromarray(RGB)))
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (12, 16, 3)
    np.testing.assert_array_equal(loaded.rgb, RGB)
    assert loaded.notes == []
    assert loaded.path == tmp_path / "a.png"


def test_grey_is_replicated(tmp_path):
    grey = RGB[..., 0]
    loaded = load_ldr(_save(tmp_path, "g.png", Image.fromarray(grey)))
    np.testing.assert_array_equal(loaded.rgb, np.repeat(grey[..., None], 3, axis=2))
    assert loaded.notes == ["8-bit grey replicated to RGB"]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_is_scaled_with_rounding(tmp_path, suffix):
    codes = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)  # 32896 / 257 = 128.0
    loaded = load_ldr(_save(tmp_path, "g16" + suffix, Image.fromarray(codes)))
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], [0, 1, 255, 128])
    assert "16-bit grey scaled to 8-bit RGB" in loaded.notes


def test_alpha_is_dropped_without_compositing(tmp_path):
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])  # fully transparent
    loaded = load_ldr(_save(tmp_path, "a.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(loaded.rgb, RGB)
    assert any("alpha dropped" in note for note in loaded.notes)


def test_grey_alpha_is_dropped(tmp_path):
    loaded = load_ldr(_save(tmp_path, "la.png", Image.fromarray(RGB).convert("LA")))
    assert loaded.rgb.shape == (12, 16, 3)
    assert (loaded.rgb[..., 0] == loaded.rgb[..., 2]).all()
    assert any("alpha dropped from LA" in note for note in loaded.notes)


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_is_expanded(tmp_path, transparency):
    paletted = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    params = {} if transparency is None else {"transparency": transparency}
    loaded = load_ldr(_save(tmp_path, "p.png", paletted, **params))
    np.testing.assert_array_equal(loaded.rgb, np.asarray(paletted.convert("RGB")))
    expected = "palette expanded" + (", transparency dropped" if transparency is not None else "")
    assert expected in loaded.notes


def test_one_bit_becomes_black_and_white(tmp_path):
    loaded = load_ldr(_save(tmp_path, "b.png", Image.fromarray(RGB).convert("1")))
    assert set(np.unique(loaded.rgb)) <= {0, 255}
    assert "1-bit image expanded to 8-bit RGB" in loaded.notes


def test_cmyk_is_converted(tmp_path):
    loaded = load_ldr(_save(tmp_path, "c.tif", Image.fromarray(RGB).convert("CMYK")))
    np.testing.assert_allclose(loaded.rgb.astype(int), RGB.astype(int), atol=1)
    assert any("CMYK" in note for note in loaded.notes)


# --- colour profiles ----------------------------------------------------------------------

# Display P3's primaries, Bradford-adapted to the ICC's D50 (as in Apple's profile), with
# a plain gamma 2.2 curve so that the expected values below are easy to compute.
P3_COLORANTS_D50 = ((0.515102, 0.241182, -0.001050), (0.291965, 0.692236, 0.041882),
                    (0.157153, 0.066582, 0.784378))
# Linear Display P3 -> linear sRGB (both D65; standard matrix).
P3_TO_SRGB = np.array([[1.2249401, -0.2249404, 0.0], [-0.0420569, 1.0420571, 0.0],
                       [-0.0196376, -0.0786361, 1.0982735]])


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _icc_xyz(v) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(c) for c in v)


def _icc_v2(name: str, device_class: bytes, space: bytes, tags) -> bytes:
    """An ICC v2 profile (PCS XYZ, D50) from its class, colour space and tags."""
    ascii_name = name.encode() + b"\0"
    desc = (b"desc" + bytes(4) + struct.pack(">I", len(ascii_name)) + ascii_name
            + bytes(8) + bytes(3) + bytes(67))
    tags = [(b"desc", desc), (b"wtpt", _icc_xyz((0.9642, 1.0, 0.8249))), *tags]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000)
              + device_class + space + b"XYZ " + bytes(12) + b"acsp" + bytes(24)
              + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _icc_v2_rgb_profile(name: str, colorants, gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (the kind phones embed)."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    return _icc_v2(name, b"mntr", b"RGB ", [
        (b"rXYZ", _icc_xyz(colorants[0])), (b"gXYZ", _icc_xyz(colorants[1])),
        (b"bXYZ", _icc_xyz(colorants[2])), (b"rTRC", curve), (b"gTRC", curve),
        (b"bTRC", curve)])


# LittleCMS's own sRGB colorants (D50-adapted), so that a CMYK profile built on them
# converts to sRGB without a chromatic-adaptation error.
SRGB_COLORANTS_D50 = np.array([[0.436041, 0.222485, 0.013920], [0.385113, 0.716905, 0.097067],
                               [0.143046, 0.060610, 0.713913]])


def _icc_v2_cmyk_profile(name: str) -> bytes:
    """A CMYK printer profile whose A2B0 lut (2 grid points per ink) says linear light
    R = (2 - C - K) / 2, G = (2 - M - K) / 2, B = (2 - Y - K) / 2. Not how inks mix, but
    affine in all four, so any interpolation LittleCMS uses is exact (a product such as
    (1 - M)(1 - K) is not: it interpolates C linearly and M, Y, K over tetrahedra)."""
    grid = []
    for c in (0, 1):  # first input varies slowest
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    linear = (2 - np.array([c, m, y]) - k) / 2
                    xyz = linear @ SRGB_COLORANTS_D50  # rows: the R, G, B colorants
                    grid += [round(v * 32768) for v in xyz]  # lut16 XYZ: u1Fixed15
    identity = [_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1)]
    ramps = struct.pack(">HH", 0, 65535)
    lut = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(identity)
           + struct.pack(">HH", 2, 2) + ramps * 4
           + struct.pack(f">{len(grid)}H", *grid) + ramps * 3)
    return _icc_v2(name, b"prtr", b"CMYK", [(b"A2B0", lut)])


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear,
                    1.055 * linear ** (1 / 2.4) - 0.055) * 255


def test_display_p3_photo_is_converted_to_srgb(tmp_path):
    """A P3-tagged photo's colours are converted, not taken as sRGB (muted colours)."""
    profile = _icc_v2_rgb_profile("Test P3 gamma 2.2", P3_COLORANTS_D50, 2.2)
    path = _save(tmp_path, "p3.png", Image.fromarray(RGB), icc_profile=profile)
    loaded = load_ldr(path)
    expected = _srgb_encode(((RGB / 255.0) ** 2.2) @ P3_TO_SRGB.T)
    np.testing.assert_allclose(loaded.rgb.astype(float), expected, atol=1.0)
    assert np.abs(loaded.rgb.astype(int) - RGB.astype(int)).max() > 10  # it did something
    assert "converted from its embedded ICC profile 'Test P3 gamma 2.2' to sRGB" in loaded.notes


def test_display_p3_rgba_keeps_the_alpha_note(tmp_path):
    profile = _icc_v2_rgb_profile("Test P3 gamma 2.2", P3_COLORANTS_D50, 2.2)
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 128, np.uint8)])
    loaded = load_ldr(_save(tmp_path, "p3a.png", Image.fromarray(rgba), icc_profile=profile))
    expected = _srgb_encode(((RGB / 255.0) ** 2.2) @ P3_TO_SRGB.T)
    np.testing.assert_allclose(loaded.rgb.astype(float), expected, atol=1.0)
    assert any(note.startswith("alpha dropped") for note in loaded.notes)


def test_srgb_profile_leaves_pixels_exact(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    loaded = load_ldr(_save(tmp_path, "s.png", Image.fromarray(RGB), icc_profile=srgb))
    np.testing.assert_array_equal(loaded.rgb, RGB)
    assert loaded.notes == []


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_photo_goes_through_its_profile(tmp_path, suffix):
    """CMYK files (print workflows) with a profile are converted by it, not by the naive
    formula; JPEG also checks Pillow's handling of Adobe's inverted CMYK."""
    inks = RNG.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    path = _save(tmp_path, "print" + suffix, Image.fromarray(inks, "CMYK"),
                 icc_profile=_icc_v2_cmyk_profile("Test CMYK"), quality=100)
    with Image.open(path) as saved:  # what the file holds, after JPEG's losses
        stored = np.asarray(saved).astype(float) / 255.0
    loaded = load_ldr(path)
    linear = (2.0 - stored[..., :3] - stored[..., 3:]) / 2.0
    # within a code: LittleCMS's default precalculated grid was up to 16 codes off
    np.testing.assert_allclose(loaded.rgb.astype(float), _srgb_encode(linear), atol=1.0)
    with Image.open(path) as saved:
        naive = np.asarray(saved.convert("RGB")).astype(float)
    assert np.abs(naive - _srgb_encode(linear)).max() > 20  # the profile changed something
    assert "converted from its embedded ICC profile 'Test CMYK' to sRGB" in loaded.notes
    assert not any("naive formula" in note for note in loaded.notes)


def test_unreadable_profile_is_noted_and_pixels_kept(tmp_path):
    loaded = load_ldr(_save(tmp_path, "bad.png", Image.fromarray(RGB),
                            icc_profile=b"not an ICC profile"))
    np.testing.assert_array_equal(loaded.rgb, RGB)
    assert loaded.notes == ["embedded ICC profile unreadable: pixels taken as sRGB"]


def test_rgb_profile_on_grey_pixels_is_noted(tmp_path):
    profile = _icc_v2_rgb_profile("Test P3 gamma 2.2", P3_COLORANTS_D50, 2.2)
    grey = RGB[..., 0]
    loaded = load_ldr(_save(tmp_path, "g.png", Image.fromarray(grey), icc_profile=profile))
    np.testing.assert_array_equal(loaded.rgb, np.repeat(grey[..., None], 3, axis=2))
    assert any("does not fit L pixels" in note for note in loaded.notes)


# --- HEIC/HEIF (pillow-heif, in the test extra) ----------------------------------------


def test_heic_photo_is_read_with_its_profile_and_orientation(tmp_path):
    pytest.importorskip("pillow_heif")
    assert heif_available()
    exif = Image.Exif()
    exif[0x0112] = 6
    profile = _icc_v2_rgb_profile("Test P3 gamma 2.2", P3_COLORANTS_D50, 2.2)
    path = _save(tmp_path, "IMG_0001.HEIC", Image.fromarray(RGB), exif=exif.tobytes(),
                 icc_profile=profile)
    loaded = load_ldr(path)
    assert loaded.rgb.shape == (16, 12, 3)  # rotated as the phone shows it
    assert "EXIF orientation 6 applied by the HEIF decoder" in loaded.notes
    assert "converted from its embedded ICC profile 'Test P3 gamma 2.2' to sRGB" in loaded.notes
    assert ".heic" in image_suffixes()


def test_ten_bit_heic_is_noted(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    codes = RGB.astype(np.uint16) * 257
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(16, 12), data=codes.tobytes())
    path = tmp_path / "hdr.heic"
    heif.save(path, quality=-1)
    loaded = load_ldr(path)
    assert loaded.rgb.shape == (12, 16, 3)
    assert "10-bit HEIF reduced to 8 bit by the decoder" in loaded.notes


def test_heic_without_the_extra_says_how_to_get_it(tmp_path):
    """Without pillow-heif a HEIC fails with the install hint, and folders still list it."""
    pytest.importorskip("pillow_heif")
    assert heif_available()
    path = _save(tmp_path, "photo.heic", Image.fromarray(RGB))
    script = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from itm_onnx.data.images import ImageError, load_ldr\n"
        "from itm_onnx.run_batch import image_suffixes\n"
        "assert '.heic' in image_suffixes()\n"
        f"try: load_ldr({str(path)!r})\n"
        "except ImageError as exc: print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == f"{path}: HEIC/HEIF photo: {HEIF_HINT}"


def test_sixteen_bit_rgb_png_is_noted(tmp_path):
    codes = RNG.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    path = tmp_path / "c16.png"
    save_png16(path, codes)
    loaded = load_ldr(path)
    np.testing.assert_array_equal(loaded.rgb, (codes >> 8).astype(np.uint8))
    assert any("16-bit RGB" in note for note in loaded.notes)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    loaded = load_ldr(_save(tmp_path, "r.png", Image.fromarray(RGB), exif=exif))
    np.testing.assert_array_equal(loaded.rgb, np.rot90(RGB, k=-1))
    assert "EXIF orientation 6 applied" in loaded.notes


def test_animation_uses_its_first_frame(tmp_path):
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB)]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = load_ldr(path)
    np.testing.assert_array_equal(loaded.rgb, RGB)
    assert "first of 2 frames used" in loaded.notes


def test_float_image_is_refused_as_hdr(tmp_path):
    path = _save(tmp_path, "f.tif", Image.fromarray(RGB[..., 0].astype(np.float32)))
    with pytest.raises(ImageError, match="HDR"):
        load_ldr(path)


# --- broken inputs ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_with_its_name(tmp_path, suffix):
    whole = _save(tmp_path, "whole" + suffix, Image.fromarray(RGB))
    cut = tmp_path / ("cut" + suffix)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageError) as info:
        load_ldr(cut)
    message = str(info.value)
    assert str(cut) in message and "truncated" in message and "\n" not in message


def test_truncated_file_fails_even_if_pillow_is_told_to_pad(tmp_path, monkeypatch):
    whole = _save(tmp_path, "whole.jpg", Image.fromarray(RGB))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:-200])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="truncated"):
        load_ldr(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_corrupt_png_data_fails(tmp_path):
    data = bytearray(_save(tmp_path, "a.png", Image.fromarray(RGB)).read_bytes())
    data[60:80] = b"\x00" * 20  # inside IDAT: the CRC no longer matches
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="bad.png"):
        load_ldr(bad)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("not an image"), "not an image"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "file not found"),
    ],
)
def test_unusable_paths_say_why(tmp_path, make, expected):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageError, match=expected) as info:
        load_ldr(path)
    assert str(info.value).startswith(str(path))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a huge image but carrying one tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(9_000, 8_000))
    with pytest.raises(ImageError, match="9000x8000 = 72,000,000 pixels, over the limit"):
        load_ldr(bomb)
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(20_000, 20_000))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_ldr(huge, max_pixels=10**12)  # past our limit, Pillow's own guard still refuses


def test_max_pixels_is_enforced(tmp_path):
    path = _save(tmp_path, "a.png", Image.fromarray(RGB))
    with pytest.raises(ImageError, match="12 = 192 pixels"):
        load_ldr(path, max_pixels=100)


def test_image_error_pickles_and_rebuilds_from_message():
    error = ImageError("bad thing\nsecond line", "/x/y.png")
    assert str(error) == "/x/y.png: bad thing second line"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert str(ImageError(str(error))) == str(error)
    assert isinstance(error, ValueError)


# --- folders ----------------------------------------------------------------------------


def test_iter_images_skips_bad_files_and_reports_them(tmp_path):
    _save(tmp_path, "b.png", Image.fromarray(RGB))
    _save(tmp_path, "a.jpg", Image.fromarray(RGB))
    (tmp_path / "c.png").write_text("junk")
    (tmp_path / ".hidden.png").write_text("junk")
    skipped: list[tuple[Path, str]] = []
    names = [image.path.name for image in iter_images(tmp_path, skipped=skipped)]
    assert names == ["a.jpg", "b.png"]
    assert skipped == [
        (tmp_path / "c.png", "not an image Pillow can identify (unknown or damaged format)")
    ]


def test_iter_images_accepts_a_file_list(tmp_path):
    paths = [_save(tmp_path, f"{i}.png", Image.fromarray(RGB)) for i in range(2)]
    assert [image.path for image in iter_images(reversed(paths))] == paths[::-1]


def test_iter_images_fails_when_nothing_is_usable(tmp_path):
    (tmp_path / "a.png").write_text("junk")
    with pytest.raises(ImageError, match="no usable image"):
        list(iter_images(tmp_path, skipped=[]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="folder contains no files"):
        list(iter_images(tmp_path / "empty"))
    with pytest.raises(ImageError, match="folder not found"):
        list(iter_images(tmp_path / "missing"))


# --- writing ----------------------------------------------------------------------------


def _decode_png16(data: bytes) -> np.ndarray:
    """Decode a 48-bit RGB PNG with zlib and PNG's five filters written out here: a reader
    independent of libpng, for small images (one Python step per byte)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (16, 2, 0)
    stride, bpp, raw = 1 + width * 6, 6, zlib.decompress(idat)
    previous, rows = bytearray(width * 6), []
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride])
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else b if pb <= pc else c
            else:
                predictor = (0, a, b, (a + b) // 2)[kind]
            line[i] = (line[i] + predictor) & 255
        rows.append(bytes(line))
        previous = line
    return np.frombuffer(b"".join(rows), ">u2").reshape(height, width, 3).astype(np.uint16)


def test_save_png16_round_trips_exact_codes(tmp_path):
    codes = RNG.integers(0, 1024, (9, 11, 3)).astype(np.uint16)
    codes[0, 0] = [0, 1023, 65535]
    path = tmp_path / "out.png"
    save_png16(path, codes)
    # libpng's adaptive filtering uses all five PNG filters on these 9 noisy rows.
    np.testing.assert_array_equal(_decode_png16(path.read_bytes()), codes)
    with Image.open(path) as im:  # a third-party reader accepts it too
        assert im.size == (11, 9)
        np.testing.assert_array_equal(np.asarray(im), (codes >> 8).astype(np.uint8))


def test_save_png8_round_trips(tmp_path):
    path = tmp_path / "out.png"
    save_png8(path, RGB)
    np.testing.assert_array_equal(load_ldr(path).rgb, RGB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.parametrize(
    ("writer", "array"),
    [
        (save_png8, RGB.astype(np.uint16)),
        (save_png16, RGB),
        (save_png8, RGB[..., 0]),
        (save_png16, np.zeros((0, 4, 3), np.uint16)),
    ],
)
def test_writers_reject_wrong_arrays(tmp_path, writer, array):
    with pytest.raises(ValueError):
        writer(tmp_path / "x.png", array)
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_on_success(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with atomic_output(target) as tmp:
        assert (
            tmp.parent == tmp_path
            and tmp.name.endswith(".onnx")
            and tmp.name.startswith(".model.onnx.tmp")
        )
        assert target.read_text() == "old"  # not visible until the block ends
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_atomic_output_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target, suffix=".part") as tmp:
        assert tmp.name.endswith(".part")
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_output_respects_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_atomic_output_needs_an_existing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        with atomic_output(tmp_path / "missing" / "a.txt"):
            pass
