"""Showing HDR: the model's linear output mapped to display light and written as files
that phones and browsers display as HDR (Ultra HDR JPEG, PQ AVIF, PQ PNG), plus the
before/after HTML page. :func:`linear_to_display` is the one radiometric mapping."""

from .formats import (
    DISPLAY_DESCRIPTIONS,
    DISPLAY_FORMATS,
    EncoderMissing,
    check_encoders,
    encode_avif,
    encode_display,
    encode_png_pq,
    write_display,
)
from .mapping import (
    BT709_TO_BT2020,
    DEFAULT_PEAK_NITS,
    MAX_PEAK_NITS,
    MIN_PEAK_NITS,
    SDR_WHITE_NITS,
    check_peak_nits,
    linear_to_display,
    pq_codes,
    pq_decode,
    pq_encode,
)
from .page import BROWSER_IMAGE_SUFFIXES, PageEntry, render_page, write_page
from .ultrahdr import encode_ultrahdr

__all__ = [
    "BROWSER_IMAGE_SUFFIXES",
    "BT709_TO_BT2020",
    "DEFAULT_PEAK_NITS",
    "DISPLAY_DESCRIPTIONS",
    "DISPLAY_FORMATS",
    "MAX_PEAK_NITS",
    "MIN_PEAK_NITS",
    "SDR_WHITE_NITS",
    "EncoderMissing",
    "PageEntry",
    "check_encoders",
    "check_peak_nits",
    "encode_avif",
    "encode_display",
    "encode_png_pq",
    "encode_ultrahdr",
    "linear_to_display",
    "pq_codes",
    "pq_decode",
    "pq_encode",
    "render_page",
    "write_display",
    "write_page",
]
