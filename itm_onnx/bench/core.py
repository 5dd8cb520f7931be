"""Side-by-side latency, session creation time, peak memory and fidelity of ONNX models.

Protocol (so that the numbers of different models can be compared on a shared, noisy
machine): all models are loaded in one process; after ``warmup`` runs each, ``runs``
rounds are timed in which every model runs once, in an order rotated every round, so
that drifts in machine load hit all models alike. Reported: min, median and p90 of the
per-run wall time, the median's ratio to the first model's, and the median and
interquartile range of the per-round ratios (how far that ratio moves with the load).
Peak RSS is measured in a fresh child process per model (``_child.py``: session creation
plus two runs), since one process holding every model could not tell them apart. Each
model runs with the ONNX Runtime settings its metadata recommends
(``itm_onnx.session_options``; see ``itm_onnx.runner.build_session_options``), except
``threads``, which the benchmark sets.

Execution providers a build does not have are reported as such, with where to get them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from .. import onnx_meta
from ..errors import ItmOnnxError, UsageError
from ..runner import build_session_options
from ..utils.memory import release_freed_memory
from ..utils.progress import bar

log = logging.getLogger(__name__)

PROVIDER_HINTS = {
    "nnapi": "NNAPI ships in the Android package onnxruntime-android (Maven); run there",
    "xnnpack": "XNNPACK ships in the Android/iOS packages (onnxruntime-android, "
               "onnxruntime-objc) and in custom builds (--use_xnnpack)",
    "coreml": "CoreML is available in the macOS/iOS packages (onnxruntime on macOS, "
              "onnxruntime-objc / onnxruntime-c pods)",
    "cuda": "install onnxruntime-gpu (instead of onnxruntime) on a machine with CUDA",
    "tensorrt": "install onnxruntime-gpu with TensorRT on a machine with an NVIDIA GPU",
    "dml": "DirectML ships in onnxruntime-directml (Windows)",
    "qnn": "QNN ships in onnxruntime-qnn (Windows on Snapdragon, Android)",
    "openvino": "install onnxruntime-openvino",
    "rocm": "ROCm needs a ROCm build of onnxruntime",
}
_CHILD = Path(__file__).with_name("_child.py")


@dataclass
class ModelSpec:
    """One row of the comparison: an ONNX file, or PyTorch eager from a checkpoint."""

    label: str
    path: Path | None = None  # ONNX model
    checkpoint: Path | None = None  # PyTorch eager (with model_name)
    model_name: str = "mqnet"
    # ONNX Runtime settings to use instead of those the model's metadata recommends
    session_options: dict[str, Any] | None = None
    tflite: Path | None = None  # a LiteRT model, run in its interpreter (bench.litert)
    unavailable: str | None = None  # why this row cannot run here (e.g. a missing extra)

    @property
    def is_torch(self) -> bool:
        return self.checkpoint is not None

    @property
    def is_litert(self) -> bool:
        return self.tflite is not None


@dataclass
class BenchConfig:
    """What to run and how; the defaults are the CLI's defaults."""

    models: list[ModelSpec] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # empty: the models' own
    eps: list[str] = field(default_factory=lambda: ["cpu"])
    threads: int = 2
    runs: int = 5
    warmup: int = 1
    memory: bool = True  # peak RSS per model in a child process
    memory_runs: int = 2
    fidelity_images: int = 0  # held-out images for fidelity vs the first model (0: none)
    fidelity_seed: int = 0
    seed: int = 0  # of the random input image used for timing
    # ORT's profiler on each ONNX model (a separate session after the timing, so that
    # the timed runs stay clean): top ops and nodes by time in every row.
    profile: bool = True
    profile_dir: Path | None = None  # keep the traces here (None: a temporary folder)
    profile_runs: int = 2
    # One model in memory at a time (load, warm up, time, measure fidelity, free), instead
    # of all loaded and timed in alternating rounds: peak memory of one session rather than
    # of all, at the price of drift between models no longer cancelling out. The pipeline
    # uses it; a comparison on a shared machine should not.
    sequential: bool = False


@dataclass
class Row:
    label: str
    model: str
    size: str
    ep: str
    status: str = "ok"  # "ok", or why it did not run
    min_ms: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    ratio_to_first: float | None = None
    # Per timed round (alternating mode only: each round runs every model once, back to
    # back), this model's time over the first model's: median and interquartile range.
    # Load that drifts between rounds cancels within a round, so the range says how far
    # the median's ratio can be trusted on a shared machine.
    round_ratio_median: float | None = None
    round_ratio_iqr: list[float] | None = None
    session_s: float | None = None
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)
    session_options: dict[str, Any] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    # CPU time of this process per run (all threads), median: the work a run takes,
    # which other processes on a shared machine inflate far less than the wall time.
    cpu_median_ms: float | None = None
    profile: dict[str, Any] = field(default_factory=dict)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1088x1920,256x256"`` -> [(1088, 1920), (256, 256)]."""
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            height, width = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise UsageError(
                f"--size: expected HxW[,HxW...] such as 1088x1920, got {part!r}") from None
        if height <= 0 or width <= 0:
            raise UsageError(f"--size: sides must be positive, got {part!r}")
        sizes.append((height, width))
    return sizes


def resolve_ep(name: str) -> tuple[str | None, str]:
    """(ORT provider name or None, status): status says why it cannot run here."""
    short = name.strip().lower().removesuffix("executionprovider")
    known = {p.lower().removesuffix("executionprovider"): p for p in ort.get_all_providers()}
    full = known.get(short)
    if full is None:
        return None, (f"unknown execution provider {name!r} (known: "
                      f"{', '.join(sorted(known))})")
    if full not in ort.get_available_providers():
        hint = PROVIDER_HINTS.get(short, "it needs another onnxruntime package or build")
        return None, f"not available in this build ({hint})"
    return full, "ok"


def fixed_size(path: Path) -> tuple[int, int] | None:
    """The model's fixed (H, W), or None for dynamic height/width."""
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
        return dims[2].dim_value, dims[3].dim_value
    return None


def recommended_options(path: Path) -> dict[str, Any]:
    return onnx_meta.read_session_options(onnx.load(str(path), load_external_data=False))


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda _: None,
              images: Callable[[int, int], list[np.ndarray]] | None = None) -> list[Row]:
    """Benchmark every model at every size on every EP; rows in (ep, size, model) order.

    ``images(height, width)`` gives held-out NCHW float32 inputs for the fidelity columns
    (see :mod:`.fidelity`); fidelity is measured against the first model.
    """
    if not config.models:
        raise UsageError("no model to benchmark: pass --model (or --peers FP32.onnx)")
    for spec in config.models:
        for path in (spec.path, spec.tflite):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"model {path} does not exist")
    resolved = [(ep, *resolve_ep(ep)) for ep in config.eps]
    unknown = [status for _, provider, status in resolved if status.startswith("unknown")]
    if unknown:
        raise UsageError(f"--ep: {unknown[0]}")
    sizes = config.sizes or _default_sizes(config.models)
    rows: list[Row] = []
    for ep, provider, status in resolved:
        for height, width in sizes:
            if provider is None:  # one row says it for every model
                rows.append(Row("(all models)", "", f"{height}x{width}", ep, status))
                continue
            rows.extend(_bench_group(config, provider, ep, (height, width), progress, images))
    return rows


def _default_sizes(models: list[ModelSpec]) -> list[tuple[int, int]]:
    fixed = {fixed_size(s.path) for s in models if s.path is not None} - {None}
    if len(fixed) == 1:
        return [fixed.pop()]
    if not fixed:
        raise UsageError("the models have dynamic height/width: pass --size HxW")
    raise UsageError(f"the models have different fixed sizes {sorted(fixed)}: pass --size")


def _model_text(spec: ModelSpec) -> str:
    if spec.tflite is not None:
        return str(spec.tflite)
    if spec.checkpoint is not None:
        return f"pytorch eager {spec.checkpoint}"
    return str(spec.path) if spec.path is not None else ""


class _Target:
    """One model ready to run: a session, or the PyTorch model."""

    def __init__(self, spec: ModelSpec, provider: str, threads: int) -> None:
        self.spec = spec
        self.options: dict[str, Any] = {}
        started = time.perf_counter()
        if spec.is_torch:
            self._make_torch(threads)
        elif spec.is_litert:
            from .litert import LiteRTRunner

            self.run = LiteRTRunner(Path(spec.tflite), threads)
        else:
            self._make_onnx(provider, threads)
        self.session_s = time.perf_counter() - started

    def _make_onnx(self, provider: str, threads: int) -> None:
        self.options = options_for(self.spec)
        options, kwargs, notices = build_session_options(self.options, threads)
        for notice in notices:
            log.warning("%s: %s", self.spec.label, notice)
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.spec.path), options, providers=[provider],
                                           **kwargs)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ItmOnnxError(f"{self.spec.path}: ONNX Runtime cannot load it "
                               f"({str(exc).splitlines()[0][:200]})") from None
        name = session.get_inputs()[0].name
        self.run = lambda x: session.run(None, {name: x})[0]

    def _make_torch(self, threads: int) -> None:
        import torch

        from ..models import create_model

        torch.set_num_threads(threads)
        model = create_model(self.spec.model_name, checkpoint=self.spec.checkpoint).eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        self.run = run


def options_for(spec: ModelSpec) -> dict[str, Any]:
    if spec.session_options is not None:
        return spec.session_options
    return recommended_options(spec_path(spec))


def spec_path(spec: ModelSpec) -> Path:
    assert spec.path is not None
    return Path(spec.path)


def _bench_group(config: BenchConfig, provider: str, ep: str, size: tuple[int, int],
                 progress: Callable[[str], None],
                 images: Callable[[int, int], list[np.ndarray]] | None) -> list[Row]:
    height, width = size
    rows = [Row(spec.label, _model_text(spec), f"{height}x{width}", ep) for spec in config.models]
    runnable = [(row, spec) for row, spec in zip(rows, config.models, strict=True)
                if _runnable(row, spec, size, provider)]
    if config.memory:
        # First, while this process holds no session or image: the children's peaks add to
        # whatever it holds (the main job's peak memory is measured over all its processes).
        for row, spec in runnable:
            progress(f"peak memory of {spec.label} (child process)")
            row.peak_rss_mb, row.baseline_rss_mb = _peak_rss(spec, provider, size, config)
    image = np.random.default_rng(config.seed).random((1, 3, height, width), dtype=np.float32)
    inputs = (images(height, width) if images is not None and config.fidelity_images > 0
              and len(runnable) > 1 else [])
    mode = "one at a time" if config.sequential else "alternating"
    progress(f"timing {len(runnable)} model(s) at {height}x{width} on {ep}: {config.warmup} "
             f"warm-up + {config.runs} {mode} runs each")
    if config.sequential:
        reference: list[np.ndarray] | None = None
        for row, spec in runnable:
            target = _load(row, spec, provider, config, progress)
            _time_alternating([(row, target)], image, config)
            reference = _fidelity(row, target, inputs, reference, runnable[0][0].label)
            del target  # free the session before the next one loads
            release_freed_memory()
    else:
        targets = [(row, _load(row, spec, provider, config, progress)) for row, spec in runnable]
        _time_alternating(targets, image, config)
        if inputs:
            progress(f"fidelity on {len(inputs)} held-out image(s)")
            reference = None
            for row, target in targets:
                reference = _fidelity(row, target, inputs, reference, targets[0][0].label)
        del targets
    del inputs
    release_freed_memory()
    if config.profile or config.profile_dir is not None:
        for row, spec in zip(rows, config.models, strict=True):
            if row.status == "ok" and spec.path is not None:
                progress(f"profiling {spec.label} (ONNX Runtime profiler, separate session)")
                row.profile = profile_model(spec, provider, image, config)
    first = next((r.median_ms for r in rows if r.median_ms), None)
    for row in rows:
        if row.median_ms and first:
            row.ratio_to_first = round(row.median_ms / first, 3)
    if not config.sequential:
        _round_ratios(rows)
    return rows


def _round_ratios(rows: list[Row]) -> None:
    """Fill each row's per-round ratio to the first timed row (see :class:`Row`)."""
    reference = next((r for r in rows if r.times_ms), None)
    if reference is None:
        return
    base = np.asarray(reference.times_ms)
    for row in rows:
        if len(row.times_ms) == len(base):
            ratios = np.asarray(row.times_ms) / base
            row.round_ratio_median = round(float(np.median(ratios)), 3)
            row.round_ratio_iqr = [round(float(q), 3) for q in np.percentile(ratios, [25, 75])]


def _runnable(row: Row, spec: ModelSpec, size: tuple[int, int], provider: str) -> bool:
    """Whether ``spec`` runs in this group; if not, ``row.status`` says why."""
    if spec.unavailable:
        row.status = spec.unavailable
        return False
    fixed = fixed_size(spec.path) if spec.path is not None else None
    if fixed is not None and fixed != size:
        row.status = f"skipped: fixed input {fixed[0]}x{fixed[1]}"
        return False
    if (spec.is_torch or spec.is_litert) and provider != "CPUExecutionProvider":
        row.status = ("skipped: PyTorch eager runs on the CPU only here" if spec.is_torch
                      else "skipped: LiteRT runs in its own interpreter (XNNPACK), once")
        return False
    return True


def _load(row: Row, spec: ModelSpec, provider: str, config: BenchConfig,
          progress: Callable[[str], None]) -> _Target:
    progress(f"loading {spec.label}")
    target = _Target(spec, provider, config.threads)
    row.session_s, row.session_options = round(target.session_s, 3), target.options
    return target


def _time_alternating(targets: list, image: np.ndarray, config: BenchConfig) -> None:
    for _, target in targets:
        for _ in range(config.warmup):
            target.run(image)
    times: list[list[float]] = [[] for _ in targets]
    cpu: list[list[float]] = [[] for _ in targets]
    with bar("timed runs", config.runs * len(targets), unit="run") as progress_bar:
        for round_index in range(config.runs):
            order = list(range(len(targets)))
            shift = round_index % max(1, len(order))
            for k in order[shift:] + order[:shift]:
                cpu_started, started = time.process_time(), time.perf_counter()
                targets[k][1].run(image)
                times[k].append((time.perf_counter() - started) * 1000.0)
                cpu[k].append((time.process_time() - cpu_started) * 1000.0)
                progress_bar.update(1)
    for (row, _), samples, cpu_samples in zip(targets, times, cpu, strict=True):
        if samples:
            row.cpu_median_ms = round(float(np.median(cpu_samples)), 3)
            row.times_ms = [round(t, 3) for t in samples]
            row.min_ms = round(float(np.min(samples)), 3)
            row.median_ms = round(float(np.median(samples)), 3)
            row.p90_ms = round(float(np.percentile(samples, 90)), 3)


def profile_model(spec: ModelSpec, provider: str, image: np.ndarray,
                  config: BenchConfig) -> dict[str, Any]:
    """Where the time goes: ONNX Runtime's own profiler (``enable_profiling``), run in a
    separate session after the timing (profiling slows every node down a little), summed
    per op type and per node, in ms per run."""
    keep = config.profile_dir is not None
    with tempfile.TemporaryDirectory(prefix="itm-onnx-profile-") as tmp:
        folder = Path(config.profile_dir) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        options, kwargs, _ = build_session_options(options_for(spec), config.threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / _slug(spec.label))
        options.log_severity_level = 3
        session = ort.InferenceSession(str(spec.path), options, providers=[provider], **kwargs)
        name = session.get_inputs()[0].name
        session.run(None, {name: image})  # warm-up, also profiled: dropped below
        for _ in range(config.profile_runs):
            session.run(None, {name: image})
        summary = summarize_profile(Path(session.end_profiling()))
    if not keep:
        summary["trace"] = None  # summarized, then deleted with the temporary folder
    return summary


def summarize_profile(trace: Path, top: int = 12) -> dict[str, Any]:
    events = json.loads(trace.read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed = runs[1:] or runs
    start = min(e["ts"] for e in timed) if timed else 0
    by_op: dict[str, float] = {}
    by_node: dict[str, float] = {}
    for event in events:
        if (event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time")
                or event["ts"] < start):
            continue
        ms = event["dur"] / 1000.0 / max(1, len(timed))
        op = event.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + ms
        node = f"{event['name'].removesuffix('_kernel_time')} ({op})"
        by_node[node] = by_node.get(node, 0.0) + ms
    def ranked(d: dict[str, float]) -> list[list]:  # a list, so that JSON keeps the order
        return [[k, round(v, 2)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
    return {"trace": str(trace), "runs": len(timed),
            "run_ms": round(sum(e["dur"] for e in timed) / 1000.0 / max(1, len(timed)), 1),
            "by_op_type_ms": ranked(by_op), "top_nodes_ms": ranked(by_node)}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").lower() or "model"


def _fidelity(row: Row, target: _Target, inputs: list[np.ndarray],
              reference: list[np.ndarray] | None, reference_label: str) -> list[np.ndarray]:
    """10-bit code error against the first model on the held-out inputs.

    The first call (``reference`` None) only computes the first model's codes and returns
    them; later calls fill ``row.fidelity``.
    """
    from ..quantize.api import code_error_summary, codes10

    if reference is None:
        return [codes10(target.run(x)) for x in inputs]
    diffs = [np.abs(codes10(target.run(x)) - ref).ravel()
             for x, ref in zip(inputs, reference, strict=True)]
    if diffs:
        row.fidelity = {**code_error_summary(np.concatenate(diffs)), "images": len(inputs),
                        "reference": reference_label}
    return reference


def _peak_rss(spec: ModelSpec, provider: str, size: tuple[int, int],
              config: BenchConfig) -> tuple[float | None, float | None]:
    request: dict[str, Any] = {"threads": config.threads, "shape": [1, 3, *size],
                               "runs": config.memory_runs}
    if spec.is_torch:
        request.update(kind="torch", checkpoint=str(spec.checkpoint), model_name=spec.model_name)
    elif spec.is_litert:
        request.update(kind="litert", model=str(spec.tflite))
    else:
        request.update(kind="onnx", model=str(spec.path), provider=provider,
                       session_options=options_for(spec))
    done = subprocess.run([sys.executable, str(_CHILD), json.dumps(request)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.warning("%s: memory probe failed: %s", spec.label,
                    (done.stderr.strip().splitlines() or ["?"])[-1])
        return None, None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return round(result["peak_rss_mb"], 1), round(result["baseline_rss_mb"], 1)


def rows_to_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
