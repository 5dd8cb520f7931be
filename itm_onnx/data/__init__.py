"""Image input/output, HDR encodings, tone mapping, synthetic scenes and datasets.

The torch datasets live in :mod:`itm_onnx.data.datasets` (import it explicitly);
everything re-exported here needs only numpy, Pillow and OpenEXR.
"""

from .calibration import CALIBRATION_SEED, CALIBRATION_SIZE, CalibrationImage, make_calibration_set
from .encoding import ENCODINGS, MU, Encoding, get_encoding, mulaw_decode, mulaw_encode
from .hdr_io import HDR_SUFFIXES, probe_hdr, read_hdr, write_hdr
from .images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    LoadedImage,
    iter_images,
    load_ldr,
    save_png8,
    save_png16,
)
from .synthetic import SCENE_KINDS, SPLITS, build_scene, render_scene, scene_seed
from .tonemap import OPERATORS, expose, random_tmo, to_8bit

__all__ = [
    "CALIBRATION_SEED",
    "CALIBRATION_SIZE",
    "DEFAULT_MAX_PIXELS",
    "ENCODINGS",
    "HDR_SUFFIXES",
    "MU",
    "OPERATORS",
    "SCENE_KINDS",
    "SPLITS",
    "CalibrationImage",
    "Encoding",
    "ImageError",
    "LoadedImage",
    "build_scene",
    "expose",
    "get_encoding",
    "iter_images",
    "load_ldr",
    "make_calibration_set",
    "mulaw_decode",
    "mulaw_encode",
    "probe_hdr",
    "random_tmo",
    "read_hdr",
    "render_scene",
    "save_png8",
    "save_png16",
    "scene_seed",
    "to_8bit",
    "write_hdr",
]
