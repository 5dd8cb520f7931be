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
