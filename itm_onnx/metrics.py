"""Image-quality figures for HDR predictions, and the classical baselines they are compared to.

All functions take HxWx3 float arrays of *linear* radiance (any scale) unless they say
otherwise, and return plain floats, so that the same code scores a PyTorch model, an
ONNX artifact or a baseline. The figures are the common plain ones of single-image HDR
papers (HDR-VDP, the paper's metric, is MATLAB and not available here):

* ``psnr_linear``: PSNR of the linear HDR after a least-squares scale of the prediction
  onto the target (an ITM network recovers radiance only up to an unknown exposure),
  both relative to the target's maximum (peak 1).
* ``psnr_mulaw``: PSNR after mu-law tone mapping (mu = 5000) of each image normalised by
  its own maximum; this weighs shadows and highlights more like a viewer does.
* ``ssim_mulaw``: SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5, the usual
  K1 = 0.01, K2 = 0.03, data range 1) of the same mu-law images, averaged over RGB.
* ``chroma_error``: mean CIELAB chroma difference, sqrt(da*^2 + db*^2) (D65), between the
  same mu-law images read as sRGB display values: the colour shift a viewer sees, with
  lightness left out (lightness errors are what the PSNRs already measure).
"""

from __future__ import annotations

import math

import numpy as np

MU = 5000.0
_EPS = 1e-12
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)  # Rec. 709


def psnr(prediction: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    """10 log10(peak^2 / MSE); ``inf`` for identical images."""
    mse = float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak**2 / mse)


def normalise_max(hdr: np.ndarray) -> np.ndarray:
    """Divide by the image maximum (a black image stays black)."""
    hdr = np.asarray(hdr, np.float64)
    return hdr / max(float(hdr.max()), _EPS)


def mulaw(hdr: np.ndarray, mu: float = MU) -> np.ndarray:
    """mu-law tone mapping of max-normalised linear HDR: log(1 + mu x) / log(1 + mu)."""
    return np.log1p(mu * np.clip(normalise_max(hdr), 0.0, None)) / math.log1p(mu)


def scale_align(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``s * prediction`` with the scalar ``s`` that minimises ||s p - t||^2."""
    p = np.asarray(prediction, np.float64)
    t = np.asarray(target, np.float64)
    denominator = float(np.sum(p * p))
    return p * (float(np.sum(p * t)) / denominator if denominator > 0 else 0.0)


def psnr_linear(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR of the scale-aligned linear prediction against the max-normalised target."""
    t = normalise_max(target)
    return psnr(scale_align(prediction, t), t)


def psnr_mulaw(prediction: np.ndarray, target: np.ndarray, mu: float = MU) -> float:
    """PSNR of the mu-law tone-mapped images, each normalised by its own maximum."""
    return psnr(mulaw(prediction, mu), mulaw(target, mu))


def gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an HxW(xC) array along its first two axes."""
    size = len(taps)
    height, width = image.shape[:2]
    rows = sum(taps[i] * image[i:height - size + 1 + i] for i in range(size))
    return sum(taps[i] * rows[:, i:width - size + 1 + i] for i in range(size))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, size: int = 11,
         sigma: float = 1.5) -> float:
    """Mean SSIM over all channels, Gaussian window, no padding (Wang et al. 2004)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if min(a.shape[:2]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {a.shape[:2]}")
    taps = gaussian_kernel(size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a**2
    var_b = _filter_valid(b * b, taps) - mu_b**2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(numerator / denominator))


def ssim_mulaw(prediction: np.ndarray, target: np.ndarray, mu: float = MU) -> float:
    """SSIM of the mu-law tone-mapped images (see :func:`psnr_mulaw`)."""
    return ssim(mulaw(prediction, mu), mulaw(target, mu))


_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805],  # IEC 61966-2-1, D65 white
                         [0.2126, 0.7152, 0.0722],
                         [0.0193, 0.1192, 0.9505]])
_D65_WHITE = _SRGB_TO_XYZ.sum(axis=1)


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of an HxWx3 sRGB-encoded image in [0, 1]."""
    encoded = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def chroma_error(prediction: np.ndarray, target: np.ndarray, mu: float = MU) -> float:
    """Mean CIELAB chroma difference of the mu-law tone-mapped images (see module doc)."""
    ab_pred = srgb_to_lab(mulaw(prediction, mu))[..., 1:]
    ab_target = srgb_to_lab(mulaw(target, mu))[..., 1:]
    return float(np.mean(np.sqrt(((ab_pred - ab_target) ** 2).sum(axis=-1))))


def hdr_figures(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All per-image figures for one linear HDR prediction."""
    return {
        "psnr_linear": psnr_linear(prediction, target),
        "psnr_mulaw": psnr_mulaw(prediction, target),
        "ssim_mulaw": ssim_mulaw(prediction, target),
        "chroma_error": chroma_error(prediction, target),
    }


# --- baselines ------------------------------------------------------------------------

def identity_itm(ldr: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """The LDR image itself as the HDR estimate: display values linearised by ``gamma``."""
    return np.clip(np.asarray(ldr, np.float64), 0.0, 1.0) ** gamma


def akyuz_itm(ldr: np.ndarray, max_output: float = 5000.0, a_gamma: float = 1.0,
              gamma_removal: float = 2.2) -> np.ndarray:
    """Akyuz et al. 2007 expansion, as ``AkyuzEO`` in Banterle's HDR Toolbox.

    Linearise by ``gamma_removal`` (2.2), take the luminance L, stretch it between its
    minimum and maximum, ``L_exp = max_output * ((L - L_min) / (L_max - L_min))**a_gamma``,
    and rescale each pixel's RGB by ``L_exp / L``. Parameters are those of the toolbox's
    demo (``AkyuzEO(img, 5000, 1.0, 2.2)``; a_gamma = 1 is what Akyuz et al. found best
    for well-exposed content). ``max_output`` does not change any figure here (every
    metric normalises by the maximum), it is kept for fidelity with the original.
    """
    linear = identity_itm(ldr, gamma_removal)
    lum = linear @ _LUMA
    low, high = float(lum.min()), float(lum.max())
    stretched = (lum - low) / max(high - low, _EPS)
    expanded = max_output * stretched**a_gamma
    ratio = np.divide(expanded, lum, out=np.zeros_like(lum), where=lum > _EPS)
    return linear * ratio[..., None]


BASELINES = {"identity": identity_itm, "akyuz": akyuz_itm}


# --- real light: figures that do not reward a lucky global scale --------------------
#
# Predictions and truth are radiance relative to the input's clip level (1.0 = where
# the 8-bit input saturated). The prediction's one free factor (exposure) is first
# fitted on the well-exposed pixels only (:func:`align_on_well_exposed`), so that what
# is scored is the shape of the recovered light, above all in the clipped regions.

CLIP_NITS = 200.0  # the clip level in cd/m2 when radiance is turned into luminance
PU21_RANGE = (0.005, 10000.0)  # cd/m2, PU21's domain
# PU21 (Mantiuk and Azimi 2021), "banding + glare" parameters.
_PU21 = (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166,
         0.9099517204, 596.3148142)
CLIPPED_CODE = 254  # an input channel at or above this 8-bit code is clipped
WELL_EXPOSED_CODES = (13, 242)  # every channel inside: neither noise floor nor shoulder


def pu21(luminance: np.ndarray) -> np.ndarray:
    """PU21 encoding of absolute luminance (cd/m2), clamped to [0.005, 10000]."""
    p0, p1, p2, p3, p4, p5, p6 = _PU21
    y = np.clip(np.asarray(luminance, np.float64), *PU21_RANGE)
    return p6 * (((p0 + p1 * y**p3) / (1.0 + p2 * y**p3)) ** p4 - p5)


PU21_PEAK = float(pu21(np.array(PU21_RANGE[1])))


def well_exposed(ldr_codes: np.ndarray) -> np.ndarray:
    """HxW mask of pixels whose every 8-bit channel is inside WELL_EXPOSED_CODES."""
    low, high = WELL_EXPOSED_CODES
    return ((ldr_codes >= low) & (ldr_codes <= high)).all(axis=-1)


def clipped(ldr_codes: np.ndarray) -> np.ndarray:
    """HxW mask of pixels with at least one clipped channel."""
    return (ldr_codes >= CLIPPED_CODE).any(axis=-1)


def align_on_well_exposed(prediction: np.ndarray, target: np.ndarray,
                          ldr_codes: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale the prediction by the median luminance ratio over well-exposed pixels.

    The median of log ratios, not least squares: one badly predicted region cannot
    move the exposure of the whole image. Falls back to all pixels with light when
    fewer than 1 % are well exposed.
    """
    p_lum = np.asarray(prediction, np.float64) @ _LUMA
    t_lum = np.asarray(target, np.float64) @ _LUMA
    mask = well_exposed(ldr_codes) & (p_lum > 0) & (t_lum > 0)
    if mask.mean() < 0.01:
        mask = (p_lum > 0) & (t_lum > 0)
    if not mask.any():
        return np.asarray(prediction, np.float64), 1.0
    scale = float(np.exp(np.median(np.log(t_lum[mask]) - np.log(p_lum[mask]))))
    return np.asarray(prediction, np.float64) * scale, scale


def pu21_psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR of PU21-encoded RGB (each channel as luminance; clip level = CLIP_NITS)."""
    return psnr(pu21(prediction * CLIP_NITS), pu21(target * CLIP_NITS), peak=PU21_PEAK)


def clipped_stops_rms(prediction: np.ndarray, target: np.ndarray,
                      ldr_codes: np.ndarray) -> float:
    """RMS of log2(predicted / true luminance) over the input's clipped pixels (NaN if none).

    Luminances are clamped to PU21's range first, so a sun 10^5 x brighter than the
    scene counts as what a display could show, not as 13 stops of error.
    """
    mask = clipped(ldr_codes)
    if not mask.any():
        return float("nan")
    low, high = (v / CLIP_NITS for v in PU21_RANGE)
    p = np.clip(np.asarray(prediction, np.float64)[mask] @ _LUMA, low, high)
    t = np.clip(np.asarray(target, np.float64)[mask] @ _LUMA, low, high)
    return float(np.sqrt(np.mean(np.log2(p / t) ** 2)))


def clip_floor_share(prediction: np.ndarray, ldr_codes: np.ndarray) -> float:
    """Share of clipped input channels whose (unaligned) prediction is >= the clip level.

    NaN when nothing clipped. Predictions are radiance relative to the clip level.
    """
    mask = ldr_codes >= CLIPPED_CODE
    if not mask.any():
        return float("nan")
    return float((np.asarray(prediction)[mask] >= 1.0 - 1e-6).mean())


def real_light_figures(prediction: np.ndarray, target: np.ndarray,
                       ldr_codes: np.ndarray) -> dict[str, float]:
    """Every real-light figure of one prediction (relative to the clip level)."""
    aligned, scale = align_on_well_exposed(prediction, target, ldr_codes)
    return {
        "pu21_psnr": pu21_psnr(aligned, target),
        "clipped_stops_rms": clipped_stops_rms(aligned, target, ldr_codes),
        "clip_floor_share": clip_floor_share(prediction, ldr_codes),
        "psnr_mulaw": psnr_mulaw(aligned, target),
        "exposure_scale": scale,
    }
