"""Peak-memory probe, run as a script in a child process (one per model).

``python _child.py '<json>'`` creates one session the way the benchmark does, runs it,
and prints ``{"peak_rss_mb": ..., "baseline_rss_mb": ...}`` (peak resident set size;
baseline = after imports, before the session). Run by file path, not as ``-m itm_onnx...``, and with
a bare ``itm_onnx`` package object, so that importing ``itm_onnx.runner`` does not run the
package ``__init__`` (which imports torch, some hundreds of MB that an ONNX Runtime
deployment would not have). The PyTorch eager peer imports torch on purpose.
"""

from __future__ import annotations

import json
import resource
import sys
import types
from pathlib import Path


def _bare_package() -> None:
    package_dir = Path(__file__).resolve().parents[1]
    package = types.ModuleType("itm_onnx")
    package.__path__ = [str(package_dir)]
    sys.modules["itm_onnx"] = package
    bench = types.ModuleType("itm_onnx.bench")  # nor bench/__init__ (onnxruntime, onnx)
    bench.__path__ = [str(package_dir / "bench")]
    sys.modules["itm_onnx.bench"] = bench


def _rss_mb() -> float:
    """Peak RSS of this process so far, MB.

    ``VmHWM`` where /proc exists: ``ru_maxrss`` survives ``exec`` on Linux, so a child
    forked from a parent that holds torch would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _onnx(spec: dict) -> None:
    import numpy as np
    import onnxruntime as ort

    from itm_onnx.runner import build_session_options

    baseline = _rss_mb()
    options, kwargs, _ = build_session_options(spec["session_options"], spec["threads"])
    options.log_severity_level = 3
    session = ort.InferenceSession(spec["model"], options, providers=[spec["provider"]],
                                   **kwargs)
    image = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(spec["runs"]):
        session.run(None, {name: image})
    print(json.dumps({"peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline}))


def _torch(spec: dict) -> None:
    import torch

    from itm_onnx.models import create_model

    baseline = _rss_mb()
    torch.set_num_threads(spec["threads"])
    model = create_model(spec["model_name"], checkpoint=spec["checkpoint"]).eval()
    image = torch.rand(*spec["shape"], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(spec["runs"]):
            model(image)
    print(json.dumps({"peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline}))


def _litert(spec: dict) -> None:
    import numpy as np

    from itm_onnx.bench.litert import LiteRTRunner

    baseline = _rss_mb()
    run = LiteRTRunner(Path(spec["model"]), spec["threads"])
    image = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
    for _ in range(spec["runs"]):
        run(image)
    print(json.dumps({"peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline}))


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    if request["kind"] == "onnx":
        _bare_package()
        _onnx(request)
    elif request["kind"] == "litert":
        _bare_package()
        _litert(request)
    else:
        _torch(request)
