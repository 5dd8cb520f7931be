"""``check_mobile``: the coverage per EP (ORT's checker and the NNAPI EP rules) and the
`.ort` round trip of one model."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import onnx_meta
from .coverage import EpCoverage, analysed_model, checker_coverage, dynamic_inputs, load_model
from .nnapi_rules import nnapi_rules_coverage
from .ort_format import ORT_STYLES, OrtArtifact, convert_to_ort, verify_ort


@dataclass
class MobileCheckConfig:
    """What to check; the defaults are the CLI's defaults."""

    model: Path = Path("mqnet.onnx")
    # Keep the converted .ort files (and ORT's required-operators config) here; None:
    # convert into a temporary folder, check, and discard.
    ort_out: Path | None = None
    convert_ort: bool = True
    # ORT's checker analyses the model after ORT's basic optimizations, as they also run
    # before partitioning on the device; False analyses the graph as stored.
    optimize: bool = True
    ort_styles: tuple[str, ...] = ORT_STYLES
    # "arm" lets the .ort keep int8 QDQ patterns for ARM kernels (mobile); "amd64" or None.
    target_platform: str | None = "arm"
    # Max |.onnx - .ort| on the output for "matches"; None: 1e-4 for a float model (the
    # export's parity bound: the arm target fuses differently, ~1e-6 measured) and one
    # 10-bit code (1/1023) for a quantized one, whose int8 fusions may requantize apart.
    ort_tolerance: float | None = None
    seed: int = 0



@dataclass
class MobileReport:
    model: str
    optimized: bool
    nodes: int
    dynamic_inputs: list[str]
    coverage: list[EpCoverage]
    ort: list[OrtArtifact] = field(default_factory=list)
    ort_configs: list[str] = field(default_factory=list)  # operators for a minimal ORT build

    def ep(self, name: str) -> EpCoverage:
        return next(c for c in self.coverage if c.ep == name)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for entry, coverage in zip(data["coverage"], self.coverage, strict=True):
            entry["whole_model"] = coverage.whole_model
        return data


def check_mobile(config: MobileCheckConfig) -> MobileReport:
    """Coverage per EP (ORT's checker and the NNAPI EP rules), plus the .ort round trip."""
    source = load_model(config.model)
    parts = {n.name: p for n in source.graph.node if (p := onnx_meta.node_part(n))}
    model = analysed_model(config.model, config.optimize)
    coverage = checker_coverage(model, parts)
    coverage.insert(1, nnapi_rules_coverage(model, parts))
    report = MobileReport(model=str(config.model), optimized=config.optimize,
                          nodes=len(model.graph.node), dynamic_inputs=dynamic_inputs(model),
                          coverage=coverage)
    if config.convert_ort:
        tolerance = config.ort_tolerance
        if tolerance is None:
            quantized = any(n.op_type in onnx_meta.QDQ_OPS for n in source.graph.node)
            tolerance = 1.0 / 1023 if quantized else 1e-4
        report.ort, report.ort_configs = _ort_round_trip(config, tolerance)
    return report


def _ort_round_trip(config: MobileCheckConfig, tolerance: float
                    ) -> tuple[list[OrtArtifact], list[str]]:
    if config.ort_out is not None:
        converted, configs = convert_to_ort(config.model, config.ort_out, config.ort_styles,
                                            config.target_platform)
        return (verify_ort(config.model, converted, tolerance, config.seed),
                [str(c) for c in configs])
    with tempfile.TemporaryDirectory(prefix="itm-onnx-ort-") as tmp:
        converted, _ = convert_to_ort(config.model, Path(tmp), config.ort_styles,
                                      config.target_platform)
        results = verify_ort(config.model, converted, tolerance, config.seed)
    for result in results:  # the files are gone; say so instead of naming a dead path
        result.path = f"(temporary) {Path(result.path).name}"
    return results, []
