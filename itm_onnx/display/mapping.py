"""The one mapping from the model's linear output to display light, and the PQ curve.

Everything that turns ``Runner.to_linear(y)`` into pixels a screen shows goes through
:func:`linear_to_display`, so that the radiometry lives in one place and follows the
model's output encoding (whatever ``to_linear`` returns is read as *1.0 = the input
photo's clip level*; no encoding is special-cased here).

The mapping, in absolute display light (cd/m2, BT.709 primaries):

1. **Anchor.** Linear 1.0 (the brightest value the 8-bit photo could hold) is put at
   SDR reference white, 203 cd/m2 (ITU-R BT.2408): ``x = 203 * linear``. So on an HDR
   screen everything the photo itself showed sits where an SDR rendition would, and
   only what the network recovered above the clip goes brighter.
2. **Shoulder.** The brightest channel ``m = max(R, G, B)`` of each pixel is mapped by
   ``f(m) = m`` for ``m <= k`` and ``f(m) = k + (P - k) (1 - exp(-(m - k) / (P - k)))``
   above, with knee ``k = 203`` and peak ``P = peak_nits``. ``f`` is continuous with
   slope 1 at the knee (no visible kink), strictly increasing, and tends to ``P``
   without reaching it, so no highlight clips flat; e.g. at ``P = 1000`` a highlight
   at 2x the clip level (406 cd/m2) shows at 382 cd/m2, one at 8x (1624) at 866.
   The pixel's three channels are scaled by ``f(m) / m`` together, which keeps hue
   and saturation and keeps every channel <= ``P``.
3. **Primaries.** PQ files are BT.2020: :data:`BT709_TO_BT2020` (derived below from the
   primaries and D65; equal to ITU-R BT.2087's matrix) converts linear light. All its
   coefficients are positive and its rows sum to 1, so channels stay in ``[0, P]``.
4. **Transfer.** SMPTE ST 2084 (PQ): :func:`pq_encode` of ``nits / 10000``.

Ultra HDR stores the same display light relative to SDR white (``nits / 203``, the
unit libultrahdr's float16 images use) in BT.709.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

SDR_WHITE_NITS = 203.0  # ITU-R BT.2408 reference white; the photo's clip level goes here
PQ_MAX_NITS = 10000.0  # SMPTE ST 2084 absolute peak
MIN_PEAK_NITS, MAX_PEAK_NITS = SDR_WHITE_NITS, PQ_MAX_NITS
DEFAULT_PEAK_NITS = 1000.0

# SMPTE ST 2084 constants, exactly as the standard writes them.
PQ_M1 = 2610.0 / 16384.0
PQ_M2 = 2523.0 / 4096.0 * 128.0
PQ_C1 = 3424.0 / 4096.0
PQ_C2 = 2413.0 / 4096.0 * 32.0
PQ_C3 = 2392.0 / 4096.0 * 32.0

_D65 = (0.3127, 0.3290)
_BT709 = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
_BT2020 = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...],
                white: tuple[float, float]) -> np.ndarray:
    """RGB -> CIE XYZ matrix of a colour space from its xy primaries and white point."""
    xyz = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1.0 - wx - wy) / wy]))
    return xyz * scale


# Linear BT.709 RGB -> linear BT.2020 RGB (ITU-R BT.2087 section 2, same white point).
BT709_TO_BT2020 = np.linalg.solve(_rgb_to_xyz(_BT2020, _D65), _rgb_to_xyz(_BT709, _D65))


def check_peak_nits(peak_nits: float) -> float:
    """Return ``peak_nits`` as a float, or raise UsageError outside 203-10000."""
    peak = float(peak_nits)
    if not MIN_PEAK_NITS <= peak <= MAX_PEAK_NITS:
        raise UsageError(f"peak nits must be in {MIN_PEAK_NITS:g}-{MAX_PEAK_NITS:g} "
                         f"(SDR reference white to the PQ maximum), got {peak_nits:g}")
    return peak


def shoulder(nits: np.ndarray, peak_nits: float, knee: float = SDR_WHITE_NITS) -> np.ndarray:
    """``f`` of the module docstring: identity up to ``knee``, then asymptotic to peak."""
    nits = np.asarray(nits, dtype=np.float64)
    headroom = peak_nits - knee
    if headroom <= 0:  # peak at SDR white: nothing above it can be shown
        return np.minimum(nits, peak_nits)
    above = knee + headroom * -np.expm1(-(nits - knee) / headroom)
    return np.where(nits <= knee, nits, above)


def linear_to_display(linear: np.ndarray, peak_nits: float = DEFAULT_PEAK_NITS) -> np.ndarray:
    """Model output (linear BT.709, 1.0 = clip level) -> display light, cd/m2, BT.709.

    HxWx3 float in, HxWx3 float32 out in ``[0, peak_nits)``. NaN and negative values
    (which no decoder should produce, but a broken model might) become 0.
    """
    peak = check_peak_nits(peak_nits)
    linear = np.asarray(linear, dtype=np.float32)
    if linear.ndim != 3 or linear.shape[-1] != 3:
        raise UsageError(f"expected HxWx3 linear RGB, got shape {linear.shape}")
    # One where for nan_to_num(maximum(x, 0)): the same values in half the time.
    nits = np.where(np.isfinite(linear) & (linear > 0.0), linear, np.float32(0.0))
    nits *= np.float32(SDR_WHITE_NITS)
    # The shoulder is the identity up to SDR white, so only brighter pixels change. They
    # are scaled in float64 (as float32, f(m) / m * x can land a rounding step above the
    # peak, or below a darker neighbour); the rest stays float32, which halves the memory
    # traffic of the whole-photo float64 path this replaced.
    bright = nits.max(axis=-1) > SDR_WHITE_NITS
    highlights = nits[bright].astype(np.float64)
    brightest = highlights.max(axis=-1, keepdims=True)
    nits[bright] = highlights * (shoulder(brightest, peak) / brightest)
    return nits


def bt709_to_bt2020(rgb: np.ndarray) -> np.ndarray:
    """Linear BT.709 -> linear BT.2020 (HxWx3)."""
    return np.asarray(rgb, dtype=np.float64) @ BT709_TO_BT2020.T


def pq_encode(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: absolute cd/m2 -> non-linear signal in [0, 1]."""
    y = np.clip(np.asarray(nits, dtype=np.float64) / PQ_MAX_NITS, 0.0, 1.0)
    power = y ** PQ_M1
    return ((PQ_C1 + PQ_C2 * power) / (1.0 + PQ_C3 * power)) ** PQ_M2


def pq_decode(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: non-linear signal in [0, 1] -> absolute cd/m2."""
    e = np.clip(np.asarray(signal, dtype=np.float64), 0.0, 1.0) ** (1.0 / PQ_M2)
    return PQ_MAX_NITS * (np.maximum(e - PQ_C1, 0.0) / (PQ_C2 - PQ_C3 * e)) ** (1.0 / PQ_M1)


def pq_codes(linear: np.ndarray, peak_nits: float = DEFAULT_PEAK_NITS,
             bits: int = 10) -> np.ndarray:
    """Model output -> BT.2020 PQ full-range integer codes (HxWx3 uint16) at ``bits``."""
    signal = pq_encode(bt709_to_bt2020(linear_to_display(linear, peak_nits)))
    return np.round(signal * ((1 << bits) - 1)).astype(np.uint16)


def _srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


# All 256 8-bit codes decoded once: indexing gives the formula's float64 values, bit for
# bit, in 0.1 s for a 12 MP photo against 0.5 s (2.2 s on a first call; Zen 4).
_SRGB8_TO_LINEAR = _srgb_decode(np.arange(256, dtype=np.float64) / 255.0)


def srgb_to_linear(rgb8: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """8-bit sRGB codes -> linear light (IEC 61966-2-1, piecewise), 1.0 = white.

    ``dtype`` float32 gives photo-sized callers half the memory; the values are the
    float64 formula's, rounded.
    """
    rgb8 = np.asarray(rgb8)
    if rgb8.dtype == np.uint8:
        return _SRGB8_TO_LINEAR.astype(dtype, copy=False)[rgb8]
    return _srgb_decode(np.asarray(rgb8, dtype=np.float64) / 255.0).astype(dtype, copy=False)


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear light (1.0 = white, clipped to [0, 1]) -> 8-bit sRGB codes."""
    v = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    encoded = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1.0 / 2.4) - 0.055)
    return np.round(encoded * 255.0).astype(np.uint8)
