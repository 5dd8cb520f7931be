"""LDR image input and output at the toolkit's boundary.

Everything that reads a user's photo goes through :func:`load_ldr`, which turns the
many things Pillow can open into one thing the network can take (HxWx3 uint8 sRGB) or
into one :class:`ImageError` line that names the file and the problem. Each
conversion it makes is recorded in words in ``LoadedImage.notes`` so that a report
can say what was done to an input instead of doing it silently.

Pillow cannot hold 16-bit RGB, so :func:`save_png16` encodes PNG with libpng through
imagecodecs; 16-bit RGB PNG/TIFF inputs are reduced to 8 bit by Pillow on open, which
:func:`load_ldr` notes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from ..utils.atomic import atomic_output

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
_EXIF_ORIENTATION = 0x0112
# Exceptions Pillow's decoders raise on broken data (SyntaxError: bad PNG chunks and
# headers; struct.error and EOFError: short reads; zlib.error: bad compressed data).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_CONVERSION_NOTES = {
    "L": "8-bit grey replicated to RGB",
    "1": "1-bit image expanded to 8-bit RGB",
    "CMYK": "CMYK converted to RGB (naive formula, no colour profile)",
}


class ImageError(ValueError):
    """An input image (or HDR file, or image folder) that cannot be used.

    ``str()`` is one line, ``"<path>: <problem>"``, fit to print as is. The arguments
    are ``(reason, path)`` with ``path`` optional so that the exception also
    round-trips through pickling and through frameworks that rebuild an exception
    from its message alone (torch's DataLoader workers do).
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(reason, path)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        line = " ".join(str(self.reason).split())
        return f"{self.path}: {line}" if self.path is not None else line


@dataclass(frozen=True)
class LoadedImage:
    """A decoded LDR image: ``rgb`` is HxWx3 uint8; ``notes`` lists each conversion."""

    rgb: np.ndarray
    path: Path
    notes: list[str] = field(default_factory=list)


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as a Path if it is a non-empty regular file, else raise ImageError.

    Checked before any decoder runs, so these common mistakes get plain messages
    rather than whatever a decoder says about them.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError("file not found", p)
    if p.is_dir():
        raise ImageError("is a directory, expected an image file", p)
    if not p.is_file():
        raise ImageError("not a regular file", p)
    if p.stat().st_size == 0:
        raise ImageError("empty file (0 bytes)", p)
    return p


def check_pixel_count(width: int, height: int, max_pixels: int, path: Path) -> None:
    """Refuse zero-size images and images over ``max_pixels`` before decoding them.

    Decoding allocates width x height x channels bytes up front, so a tiny crafted
    file (a decompression bomb) could otherwise exhaust memory.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero size ({width}x{height})", path)
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard; pass a larger max_pixels if intended)",
            path,
        )


def load_ldr(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an 8-bit-style photo into HxWx3 uint8 RGB, or raise one clear ImageError.

    The whole file is decoded here (not lazily), so corrupt and truncated files fail
    now, with their name, and never reach the model padded with grey. Handles EXIF
    orientation, embedded ICC profiles (converted to sRGB), palette, grey, alpha, 1-bit,
    CMYK and 16-bit grey inputs; see ``LoadedImage.notes`` for what was done to a given
    file.
    """
    p = check_input_file(path)
    with _open_image(p) as im:
        check_pixel_count(im.width, im.height, max_pixels, p)
        notes = _bit_depth_notes(im)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        _decode_fully(im, p)
        icc_profile = im.info.get("icc_profile")  # the rotated copy below does not keep it
        im, orientation_notes = _apply_exif_orientation(im, p)
        im, colour_notes = _to_srgb(im, icc_profile)
        rgb, mode_notes = _to_rgb8(im, p)
    return LoadedImage(rgb=rgb, path=p,
                       notes=notes + orientation_notes + colour_notes + mode_notes)


# HEIF still images (the iPhone's default photo format): suffixes, and the ISO BMFF
# 'ftyp' major brands that mark a file as one whatever its name.
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
                          b"msf1"})
HEIF_HINT = "reading it needs the optional pillow-heif: pip install 'itm-onnx[heif]'"


@functools.cache
def heif_available() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow (once); False without the extra.

    Optional because its wheel bundles libheif, libde265 and x265 (LGPL/GPL), which an
    integrator may not want pulled in by an Apache-licensed toolkit.
    """
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _looks_like_heif(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """Open lazily (header only), mapping Pillow's refusals to ImageError."""
    heif = heif_available()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        if not heif and _looks_like_heif(path):
            raise ImageError(f"HEIC/HEIF photo: {HEIF_HINT}", path) from None
        raise ImageError(
            "not an image Pillow can identify (unknown or damaged format)", path
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"refused as a possible decompression bomb: {exc}", path) from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot read image header: {exc}", path) from None
    with im:
        yield im


def _decode_fully(im: Image.Image, path: Path) -> None:
    """Force the decode so damage surfaces here; truncation is always an error.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is a process-wide switch that other code may
    have turned on; it is held off for this call because padding a truncated photo
    would feed the model made-up pixels.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise ImageError(f"corrupt or truncated image data ({detail})", path) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _bit_depth_notes(im: Image.Image) -> list[str]:
    """Say so when colour data deeper than 8 bits is reduced on decoding: Pillow keeps
    only the high byte of 16-bit RGB, pillow-heif converts 10- and 12-bit HEIF."""
    raw_modes = [_raw_mode(tile.args) for tile in im.tile]
    if im.mode in ("RGB", "RGBA") and any(";16" in m for m in raw_modes):
        return ["16-bit RGB reduced to 8 bit by keeping the high byte"]
    depth = im.info.get("bit_depth")  # pillow-heif decodes 10- and 12-bit HEIF to 8 bit
    if im.mode in ("RGB", "RGBA") and isinstance(depth, int) and depth > 8:
        return [f"{depth}-bit HEIF reduced to 8 bit by the decoder"]
    return []


def _raw_mode(args: object) -> str:
    """The decoder's raw mode from a tile's args (a string for PNG, a tuple for raw/TIFF)."""
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return ""


def _apply_exif_orientation(im: Image.Image, path: Path) -> tuple[Image.Image, list[str]]:
    """Rotate/flip to the EXIF orientation, as viewers show the photo."""
    # pillow-heif applies a HEIF's rotation itself and resets the EXIF tag to 1.
    decoded = im.info.get("original_orientation")
    if decoded not in (None, 1):
        return im, [f"EXIF orientation {decoded} applied by the HEIF decoder"]
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return im, ["EXIF block unreadable, orientation left as stored"]
    if orientation in (None, 1):
        return im, []
    try:
        rotated = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot apply EXIF orientation {orientation}: {exc}", path) from None
    return rotated, [f"EXIF orientation {orientation} applied"]


# Modes whose pixels an embedded profile of each ICC colour space can describe, and the
# mode LittleCMS writes them to (RGBA keeps its alpha for _to_rgb8 to drop and note).
_PROFILE_MODES = {("RGB", "RGB"): "RGB", ("RGB", "RGBA"): "RGBA", ("CMYK", "CMYK"): "RGB",
                  ("GRAY", "L"): "RGB"}


def _to_srgb(im: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, list[str]]:
    """Convert pixels from their embedded ICC profile to sRGB, the network's colour space.

    Phone photos often carry Display P3 (or Adobe RGB) profiles: taken as sRGB, their
    colours would come out muted in every output. Pillow's LittleCMS binding converts
    them with the relative colorimetric intent; colours outside sRGB clip to its gamut,
    which is all that an 8-bit sRGB input can hold. Profiles named sRGB are left alone
    so that sRGB photos stay bit-exact; a profile that cannot be read or applied is
    noted and the pixels are taken as sRGB, as a viewer without colour management would.
    """
    if not icc_profile:
        return im, []
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        name = " ".join((profile.profile.profile_description or "").split()) or "unnamed"
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im, ["embedded ICC profile unreadable: pixels taken as sRGB"]
    if "srgb" in name.lower():
        return im, []
    out_mode = _PROFILE_MODES.get((space, im.mode))
    if out_mode is None:
        return im, [f"embedded ICC profile {name!r} ({space}) does not fit {im.mode} pixels: "
                    "taken as sRGB"]
    # LittleCMS resamples a LUT-based profile's transform (CMYK ones are) into a grid of
    # sRGB-encoded outputs, whose interpolation is up to 16 codes off in the shadows
    # (tests' CMYK profile); evaluating the profile itself is exact, 3.3 s against 0.6 s
    # for 12 MP. Matrix/TRC profiles (P3, Adobe RGB, grey) are within a code either way.
    exact = ImageCms.Flags.NONE if profile.profile.is_matrix_shaper else \
        ImageCms.Flags.NOOPTIMIZE
    try:
        converted = ImageCms.profileToProfile(
            im, profile, ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode=out_mode,
            flags=exact)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        return im, [f"embedded ICC profile {name!r} could not be applied ({exc}): "
                    "taken as sRGB"]
    return converted, [f"converted from its embedded ICC profile {name!r} to sRGB"]


def _to_rgb8(im: Image.Image, path: Path) -> tuple[np.ndarray, list[str]]:
    """Convert any supported mode to HxWx3 uint8, describing each decision."""
    notes: list[str] = []
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_grey_to_rgb8(np.asarray(im), mode, path), notes + [
            "16-bit grey scaled to 8-bit RGB"
        ]
    if mode == "F":
        raise ImageError("floating-point image: this is HDR data, read it with read_hdr", path)
    if mode == "P":
        has_alpha = "transparency" in im.info or im.palette.mode == "RGBA"
        notes.append("palette expanded" + (", transparency dropped" if has_alpha else ""))
        # Going through RGBA is how Pillow wants palette transparency expanded.
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in _ALPHA_MODES:
        notes.append(f"alpha dropped from {mode} (colour kept as stored, not composited)")
        im = im.convert("RGBA")
    elif mode != "RGB":
        notes.append(
            _CONVERSION_NOTES.get(mode, f"{mode} converted to RGB by Pillow (no colour management)")
        )
        im = im.convert("RGB")
    return np.ascontiguousarray(np.array(im, dtype=np.uint8)[..., :3]), notes


def _sixteen_bit_grey_to_rgb8(grey: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Scale 0..65535 grey to 0..255 with rounding (x / 257 maps 65535 to 255 exactly)."""
    if grey.min() < 0 or grey.max() > 65535:
        raise ImageError(f"{mode} image with values outside 0..65535 is not a 16-bit photo", path)
    grey8 = np.round(grey.astype(np.float32) / 257.0).astype(np.uint8)
    return np.repeat(grey8[..., None], 3, axis=2)


def iter_images(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[LoadedImage]:
    """Yield every usable image of a folder (sorted, non-recursive, hidden files left out)
    or of an explicit list of files, skipping the unusable ones.

    Each skipped file is appended to ``skipped`` as ``(path, reason)`` when a list is
    given, and logged as a warning otherwise, so one bad file does not end a batch.
    Raises ImageError when the folder is missing or empty, and, at the end of the
    iteration, when no file at all was usable. Images are decoded lazily, one at a time.
    """
    usable = 0
    for path in _list_candidates(source):
        try:
            image = load_ldr(path, max_pixels=max_pixels)
        except ImageError as exc:
            if skipped is None:
                log.warning("skipped %s", exc)
            else:
                skipped.append((path, exc.reason))
            continue
        usable += 1
        yield image
    if usable == 0:
        raise ImageError("no usable image (every file was skipped)", _describe_source(source))


def _list_candidates(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    """The files ``iter_images`` will try, in a stable order."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise ImageError("folder not found", folder)
        if not folder.is_dir():
            return [folder]
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ImageError("folder contains no files", folder)
        return files
    files = [Path(p) for p in source]
    if not files:
        raise ImageError("empty list of image files")
    return files


def _describe_source(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> str:
    """Name the input in an error: the folder itself, or "the given files" for a list."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "the given files"


def save_png8(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write HxWx3 uint8 RGB as PNG, atomically (a reader never sees half a file)."""
    _check_rgb(rgb, np.uint8)
    with atomic_output(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=9)


def save_png16(path: str | os.PathLike[str], codes: np.ndarray) -> None:
    """Write HxWx3 uint16 code values as a 48-bit RGB PNG, atomically.

    Used for the network's 10-bit output (codes 0..1023 stored as-is, not rescaled,
    so a reader gets the exact integers back). Pillow cannot write 16-bit RGB, so the
    file is encoded here: one IHDR, one IDAT with PNG filter type 1 ("Sub",
    vectorised, which compresses smooth images well), and IEND.
    """
    _check_rgb(codes, np.uint16)
    with atomic_output(path) as tmp:
        tmp.write_bytes(_encode_png16(np.ascontiguousarray(codes)))


def _check_rgb(array: np.ndarray, dtype: type[np.generic]) -> None:
    """Reject arrays that are not HxWx3 of the expected dtype, naming what was given."""
    if (
        not isinstance(array, np.ndarray)
        or array.ndim != 3
        or array.shape[2] != 3
        or array.dtype != dtype
    ):
        shape = getattr(array, "shape", None)
        given = f"{getattr(array, 'dtype', type(array).__name__)} array of shape {shape}"
        raise ValueError(f"expected an HxWx3 {np.dtype(dtype).name} array, got a {given}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"cannot write an empty image of shape {array.shape}")


def _encode_png16(codes: np.ndarray) -> bytes:
    """Encode HxWx3 uint16 as PNG bytes (bit depth 16, colour type 2) with libpng.

    Level 4 of libpng's adaptive filters: 12 MP of 10-bit codes in 1.6 s and 19.0 MB,
    where the hand-written Sub-filter + zlib level 6 encoder this replaced took 6.3 s and
    20.2 MB (AMD EPYC Zen 4); the bytes are the same on every run.
    """
    return bytes(imagecodecs.png_encode(codes, level=4))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
