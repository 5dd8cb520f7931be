"""Benchmarks: ONNX models side by side (latency, session creation, peak RSS, fidelity).

- :mod:`.core`: ``run_bench(BenchConfig)`` -> rows; the measuring protocol.
- :mod:`.peers`: the peers (fp32, naive mixed, full int8, ours, PyTorch eager) built
  from one fp32 export for ``itm-onnx bench --peers``.
- :mod:`.fidelity`: held-out synthetic inputs for the fidelity columns.
- :mod:`.chart`: the PNG chart.
"""

from .core import (
    PROVIDER_HINTS,
    BenchConfig,
    ModelSpec,
    Row,
    parse_sizes,
    resolve_ep,
    rows_to_dicts,
    run_bench,
)

__all__ = ["PROVIDER_HINTS", "BenchConfig", "ModelSpec", "Row", "parse_sizes", "resolve_ep",
           "rows_to_dicts", "run_bench"]
