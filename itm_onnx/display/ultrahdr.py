"""Ultra HDR JPEG (Android's JPEG_R) whose SDR base image is the user's own photo.

An Ultra HDR file is an ordinary JPEG (what every viewer shows) followed by a second
JPEG, the *gain map*, that says per pixel by how many stops to brighten the base on an
HDR screen; XMP (``hdrgm``, Adobe's gain map namespace that Ultra HDR v1 uses) and an
MPF index tell HDR-aware decoders (Android 14+, Chrome, libultrahdr) where it is.

Why written here and not with ``imagecodecs.ultrahdr_encode``: that binding feeds
libultrahdr only the HDR image (its "API-0"), and libultrahdr then makes the SDR base
by tone mapping the HDR itself, so SDR viewers would see libultrahdr's rendition, not
the photo the user had. libultrahdr's API-2/3 take a user SDR image, but imagecodecs
2026.3.6 does not expose them. The container is small and fully specified, so it is
assembled here with Pillow's JPEG encoder; tests decode the result with libultrahdr
(``imagecodecs.ultrahdr_decode``), an independent implementation.

The gain map (Adobe gain map specification 1.0 / ISO 21496-1 maths, gamma 1):

* ``G = log2((HDR + o) / (SDR + o))`` per channel, HDR and SDR linear BT.709 with SDR
  white = 1, ``o = 1/64`` (keeps black pixels finite, the specification's example).
  SDR is the base JPEG *as decoded*, so the gain map also undoes the base's JPEG error.
* stored as ``round(255 (G - Gmin) / (Gmax - Gmin))`` in a 3-channel (RGB, 4:4:4)
  JPEG at full resolution: three channels because the network may shift colour, not
  only brightness (libultrahdr's own best-quality preset also writes 3 channels).
* ``HDRCapacityMin = 0``, ``HDRCapacityMax = log2(peak / 203)``: a screen with that
  much headroom shows the full HDR rendition; one with less gets a log-space blend.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from ..errors import UsageError
from .mapping import SDR_WHITE_NITS, linear_to_srgb8, srgb_to_linear

GAIN_OFFSET = 1.0 / 64.0
BASE_QUALITY = 95
GAIN_MAP_QUALITY = 95
_MIN_GAIN_RANGE = 1e-3  # log2 stops; a flat gain map still needs Gmax > Gmin
_XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\x00"
_MPF_SIGNATURE = b"MPF\x00"
_MP_PRIMARY = 0x030000  # MP entry attribute: baseline MP primary image, JPEG
_MP_ENTRIES_OFFSET = 8 + 2 + 3 * 12 + 4  # TIFF header, IFD count, 3 entries, next-IFD
_MPF_PAYLOAD_SIZE = len(_MPF_SIGNATURE) + _MP_ENTRIES_OFFSET + 2 * 16


def encode_ultrahdr(hdr: np.ndarray, sdr_rgb8: np.ndarray | None = None, *,
                    peak_nits: float, quality: int = BASE_QUALITY,
                    gain_map_quality: int = GAIN_MAP_QUALITY) -> bytes:
    """Ultra HDR JPEG bytes from HDR display light and an 8-bit sRGB base.

    ``hdr``: HxWx3 linear BT.709, 1.0 = SDR white (display nits / 203). ``sdr_rgb8``:
    HxWx3 uint8 sRGB, the base image (the user's photo); None uses the HDR clipped at
    SDR white. ``peak_nits`` sets HDRCapacityMax.
    """
    # Float32: the gain is stored as 8-bit codes, far coarser than float32's 1e-7, and
    # each of the photo-sized temporaries below is half the size of a float64 one.
    hdr = np.asarray(hdr, dtype=np.float32)
    if sdr_rgb8 is None:
        sdr_rgb8 = linear_to_srgb8(hdr)
    if sdr_rgb8.dtype != np.uint8 or sdr_rgb8.shape != hdr.shape or hdr.shape[-1] != 3:
        raise UsageError(f"Ultra HDR base image must be HxWx3 uint8 of the HDR's size "
                         f"{hdr.shape}, got {sdr_rgb8.dtype} {sdr_rgb8.shape}")
    base = _jpeg(sdr_rgb8, quality)
    with Image.open(io.BytesIO(base)) as decoded:
        sdr = srgb_to_linear(np.asarray(decoded.convert("RGB")), np.float32)
    offset = np.float32(GAIN_OFFSET)
    gain = np.log2((hdr + offset) / (sdr + offset))
    # Rounded as the XMP writes them, so that the stored codes use the stored range.
    low = round(float(gain.min()), 6)
    high = round(max(float(gain.max()), low + _MIN_GAIN_RANGE), 6)
    recovery = np.round((gain - low) / (high - low) * 255.0)
    gain_map = _jpeg(np.clip(recovery, 0, 255).astype(np.uint8), gain_map_quality)
    capacity = max(float(np.log2(peak_nits / SDR_WHITE_NITS)), _MIN_GAIN_RANGE)
    gain_xmp = _gain_map_xmp(low, high, capacity)
    gain_map = _insert_segments(gain_map, [_app(0xE1, _XMP_SIGNATURE + gain_xmp)])
    return _assemble(base, gain_map)


def _jpeg(rgb8: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:4:4 (chroma at full resolution: it carries the colour gain)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb8), "RGB").save(
        buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _app(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("JPEG APP segment over 64 KiB")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _insert_segments(jpeg: bytes, segments: list[bytes]) -> bytes:
    """Put APP segments after SOI and the JFIF APP0 (which JFIF wants first)."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + b"".join(segments) + jpeg[at:]


def _assemble(base: bytes, gain_map: bytes) -> bytes:
    """Primary (XMP directory + MPF index) followed by the gain map JPEG."""
    xmp = _app(0xE1, _XMP_SIGNATURE + _primary_xmp(len(gain_map)))
    placeholder = _app(0xE2, bytes(_MPF_PAYLOAD_SIZE))
    primary = _insert_segments(base, [xmp, placeholder])
    # MPF offsets count from the MP header's byte-order mark, inside the APP2 segment.
    mpf_at = primary.index(placeholder) + 4 + len(_MPF_SIGNATURE)
    mpf = _app(0xE2, _mpf(len(primary), len(gain_map), len(primary) - mpf_at))
    return primary.replace(placeholder, mpf, 1) + gain_map


def _mpf(primary_size: int, gain_map_size: int, gain_map_offset: int) -> bytes:
    """CIPA DC-007 MP index IFD (big-endian) with two entries: primary and gain map."""
    ifd = struct.pack(">H", 3)
    ifd += struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")  # MPFVersion
    ifd += struct.pack(">HHII", 0xB001, 4, 1, 2)  # NumberOfImages
    ifd += struct.pack(">HHII", 0xB002, 7, 32, _MP_ENTRIES_OFFSET)  # MPEntry
    ifd += struct.pack(">I", 0)  # no next IFD
    entries = struct.pack(">IIIHH", _MP_PRIMARY, primary_size, 0, 0, 0)
    entries += struct.pack(">IIIHH", 0, gain_map_size, gain_map_offset, 0, 0)
    payload = _MPF_SIGNATURE + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + entries
    assert len(payload) == _MPF_PAYLOAD_SIZE
    return payload


_XMP_HEAD = ('<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="itm-onnx">'
             '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">')
_XMP_TAIL = "</rdf:RDF></x:xmpmeta>"


def _primary_xmp(gain_map_size: int) -> bytes:
    return (
        _XMP_HEAD
        + '<rdf:Description rdf:about="" '
        'xmlns:Container="http://ns.google.com/photos/1.0/container/" '
        'xmlns:Item="http://ns.google.com/photos/1.0/container/item/" '
        'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" hdrgm:Version="1.0">'
        "<Container:Directory><rdf:Seq>"
        '<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="Primary" '
        'Item:Mime="image/jpeg"/></rdf:li>'
        '<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="GainMap" '
        f'Item:Mime="image/jpeg" Item:Length="{gain_map_size}"/></rdf:li>'
        "</rdf:Seq></Container:Directory></rdf:Description>"
        + _XMP_TAIL
    ).encode()


def _gain_map_xmp(low: float, high: float, capacity: float) -> bytes:
    return (
        _XMP_HEAD
        + '<rdf:Description rdf:about="" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
        f'hdrgm:Version="1.0" hdrgm:GainMapMin="{low:.6f}" hdrgm:GainMapMax="{high:.6f}" '
        f'hdrgm:Gamma="1" hdrgm:OffsetSDR="{GAIN_OFFSET}" hdrgm:OffsetHDR="{GAIN_OFFSET}" '
        f'hdrgm:HDRCapacityMin="0" hdrgm:HDRCapacityMax="{capacity:.6f}" '
        'hdrgm:BaseRenditionIsHDR="False"/>'
        + _XMP_TAIL
    ).encode()
