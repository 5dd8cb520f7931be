"""HDR files that screens show as HDR: Ultra HDR JPEG, 10-bit PQ AVIF, 16-bit PQ PNG.

Each encoder takes the model's linear output (``Runner.to_linear(y)``: linear BT.709,
1.0 = the photo's clip level) and goes through :func:`~.mapping.linear_to_display`
(the one radiometric mapping), then:

* ``uhdr``: Ultra HDR JPEG, base = the user's 8-bit photo (:mod:`.ultrahdr`).
* ``avif``: AVIF, 10 bits, CICP 9/16/0 full range (BT.2020 primaries, SMPTE ST 2084
  PQ, identity matrix = RGB stored as is, 4:4:4), lossless by default: the PQ codes
  decode back exactly. Lossy ``quality`` < 100 stores YCbCr (BT.2020 non-constant
  luminance, matrix 9) instead, because AV1 compresses luma/chroma far better than RGB.
* ``png-pq``: 16-bit RGB PNG with a ``cICP`` chunk (9, 16, 0, 1) right after IHDR
  (PNG third edition), through the toolkit's own 16-bit PNG writer.

Encoders come from ``imagecodecs`` (AVIF: libavif/libaom); Ultra HDR and PNG need only
Pillow and zlib. :func:`check_encoders` names a missing one before any work starts.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.images import _encode_png16, _png_chunk
from ..errors import ItmOnnxError, UsageError
from ..utils.atomic import atomic_output
from .mapping import DEFAULT_PEAK_NITS, SDR_WHITE_NITS, linear_to_display, pq_codes
from .ultrahdr import encode_ultrahdr

# name -> file suffix. Suffixes differ from png16's NAME.png and from a NAME.jpg input.
DISPLAY_FORMATS = {"uhdr": ".uhdr.jpg", "avif": ".avif", "png-pq": ".pq.png"}
DISPLAY_DESCRIPTIONS = {
    "uhdr": "Ultra HDR JPEG (gain map; plain JPEG where not supported)",
    "avif": "AVIF, 10-bit PQ BT.2020",
    "png-pq": "PNG, 16-bit PQ BT.2020 (cICP)",
}
# CICP (ITU-T H.273): BT.2020 primaries, SMPTE ST 2084, identity matrix, full range.
CICP_PRIMARIES, CICP_TRANSFER, CICP_MATRIX_RGB, CICP_FULL_RANGE = 9, 16, 0, 1
CICP_MATRIX_BT2020_NCL = 9
AVIF_LOSSLESS = 100
# libavif's speed, 0 (slowest) to 10. Lossless at 1088x1920 measured: speed 6 (libavif's
# default) 11.0 s of CPU and 1.72 MB, speed 8 1.35 s and 1.88 MB, speed 10 0.74 s, 1.96 MB.
AVIF_SPEED = 8

# format -> (imagecodecs attribute that says the codec is built in, function needed)
_IMAGECODECS_NEEDS = {"avif": ("AVIF", "avif_encode")}


class EncoderMissing(ItmOnnxError):
    """The installed imagecodecs lacks the encoder a format needs."""


def check_encoders(formats: Sequence[str]) -> None:
    """Raise EncoderMissing (one line, naming it) if a format's encoder is absent."""
    for name in formats:
        need = _IMAGECODECS_NEEDS.get(name)
        if need is None:
            continue
        codec, function = need
        try:
            import imagecodecs
        except ImportError as exc:
            raise EncoderMissing(f"format {name!r} needs the imagecodecs package, which does "
                                 f"not import here ({exc}); pip install 'imagecodecs>=2026.3.6'"
                                 ) from None
        version = getattr(imagecodecs, "__version__", "?")
        holder = getattr(imagecodecs, codec, None)
        if not callable(getattr(imagecodecs, function, None)) or \
                not getattr(holder, "available", False):
            raise EncoderMissing(
                f"format {name!r} needs imagecodecs.{function}, which the installed "
                f"imagecodecs {version} lacks ({codec} codec not built in); install a "
                "build with it or choose another format"
            )


def encode_display(name: str, linear: np.ndarray, sdr_rgb8: np.ndarray | None = None, *,
                   peak_nits: float = DEFAULT_PEAK_NITS, avif_quality: int = AVIF_LOSSLESS
                   ) -> bytes:
    """Encode the model's linear output as one of :data:`DISPLAY_FORMATS`; bytes out.

    ``sdr_rgb8`` (the input photo, HxWx3 uint8) is the Ultra HDR base image; the PQ
    formats ignore it.
    """
    if name not in DISPLAY_FORMATS:
        raise UsageError(f"unknown HDR display format {name!r}; choose from "
                         f"{', '.join(DISPLAY_FORMATS)}")
    check_encoders([name])
    if name == "uhdr":
        hdr = linear_to_display(linear, peak_nits) / SDR_WHITE_NITS
        return encode_ultrahdr(hdr, sdr_rgb8, peak_nits=peak_nits)
    if name == "avif":
        return encode_avif(pq_codes(linear, peak_nits, bits=10), avif_quality)
    return encode_png_pq(pq_codes(linear, peak_nits, bits=16))


def write_display(path: str | os.PathLike[str], name: str, linear: np.ndarray,
                  sdr_rgb8: np.ndarray | None = None, *, peak_nits: float = DEFAULT_PEAK_NITS,
                  avif_quality: int = AVIF_LOSSLESS) -> Path:
    """:func:`encode_display` to a file, atomically (never a half-written file)."""
    data = encode_display(name, linear, sdr_rgb8, peak_nits=peak_nits,
                          avif_quality=avif_quality)
    target = Path(path)
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
    return target


def encode_avif(codes10: np.ndarray, quality: int = AVIF_LOSSLESS) -> bytes:
    """HxWx3 uint16 PQ codes (0..1023, BT.2020 RGB) -> AVIF bytes tagged 9/16/x/full."""
    import imagecodecs

    if not 0 <= quality <= 100:
        raise UsageError(f"AVIF quality must be 0-100, got {quality}")
    lossless = quality >= AVIF_LOSSLESS
    try:
        return bytes(imagecodecs.avif_encode(
            np.ascontiguousarray(codes10, dtype=np.uint16), level=quality, speed=AVIF_SPEED,
            bitspersample=10, pixelformat=imagecodecs.AVIF.PIXEL_FORMAT.YUV444,
            primaries=CICP_PRIMARIES, transfer=CICP_TRANSFER,
            matrix=CICP_MATRIX_RGB if lossless else CICP_MATRIX_BT2020_NCL,
            numthreads=1,  # the bytes depend on the thread count: one, for reproducibility
        ))
    except (RuntimeError, ValueError) as exc:  # imagecodecs.AvifError is a RuntimeError
        raise ItmOnnxError(f"AVIF encoder failed: {' '.join(str(exc).split())}") from None


def cicp_chunk(primaries: int = CICP_PRIMARIES, transfer: int = CICP_TRANSFER,
               matrix: int = CICP_MATRIX_RGB, full_range: int = CICP_FULL_RANGE) -> bytes:
    """A PNG ``cICP`` chunk (PNG third edition; PNG allows only matrix 0, RGB)."""
    return _png_chunk(b"cICP", struct.pack(">BBBB", primaries, transfer, matrix, full_range))


def encode_png_pq(codes16: np.ndarray) -> bytes:
    """HxWx3 uint16 PQ codes (0..65535) -> 16-bit RGB PNG bytes with cICP after IHDR."""
    png = _encode_png16(np.ascontiguousarray(codes16, dtype=np.uint16))
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 data bytes, CRC
    assert png[12:16] == b"IHDR"
    return png[:ihdr_end] + cicp_chunk() + png[ihdr_end:]
