"""Deployment targets of ``itm-onnx quantize``: the CPU artifact, or one ready for NNAPI.

``--target nnapi`` is the NNAPI recipe in one step: ``quantize --mixed --rewrites none``
(the CPU rewrites make ops NNAPI has no quantized form of, e.g. the float head's
InstanceNorm fold), then the exact passes of ``mobile-prepare``
(:func:`itm_onnx.mobile.prepare_for_nnapi`), then ONNX Runtime's usability checker,
which must find one NNAPI partition covering every node. Nothing is written unless it
does; the report (``NAME.quant.json``) describes the final artifact and adds the passes
applied, the coverage (checker and the NNAPI EP's finer rules) and how far the CPU
output moved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import onnx

from ..errors import ItmOnnxError, UsageError
from . import report as qreport

TARGETS = ("cpu", "nnapi")
NNAPI_SCHEMES = ("mixed",)


def quantize_for_nnapi(config, progress) -> Any:
    """``quantize_model`` for ``config.target == "nnapi"`` (see the module doc)."""
    from .. import mobile
    from .api import _write_outputs, quantize_model

    if config.scheme not in NNAPI_SCHEMES:
        raise UsageError(f"--target nnapi supports --{' / --'.join(NNAPI_SCHEMES)}, "
                         f"not {config.scheme}")
    output, source = Path(config.output), Path(config.model)
    if not output.parent.is_dir():
        raise UsageError(f"output folder {output.parent} does not exist")
    if source.is_file() and _is_dynamic(source):
        raise UsageError("--target nnapi needs a fixed-shape export (NNAPI partitions "
                         "stop at dynamic shapes): export with --height/--width")
    with tempfile.TemporaryDirectory(prefix="itm-onnx-nnapi-") as tmp:
        staged = Path(tmp) / "mixed.onnx"
        step = dataclasses.replace(config, target="cpu", rewrites=(), output=staged,
                                   report=False)
        result = quantize_model(step, progress)
        progress("preparing for NNAPI (mobile-prepare passes) and checking partitions")
        prepared = Path(tmp) / "nnapi.onnx"
        prep = mobile.prepare_for_nnapi(staged, prepared)
        checker = mobile.checker_coverage(mobile.analysed_model(prepared))[0]
        if not checker.whole_model:
            raise ItmOnnxError(
                f"--target nnapi: ORT's usability checker finds {checker.partitions} NNAPI "
                f"partition(s) covering {checker.nodes_covered}/{checker.nodes_total} nodes, "
                f"not one covering all (left out: {', '.join(checker.unsupported_nodes[:5])})")
        data = prepared.read_bytes()
        model = onnx.load_from_string(data)
        precisions = qreport.node_precisions(model)
        result = dataclasses.replace(
            result, artifact=str(output), report_file=None,
            sha256=hashlib.sha256(data).hexdigest(),
            counts=qreport.precision_counts(model, precisions),
            runtime=qreport.runtime_kernels(data, result.session_options),
            nodes=[p.to_dict() for p in precisions],
            target={"name": "nnapi", "steps": ["quantize --rewrites none", "mobile-prepare"],
                    "mobile_passes": prep.applied,
                    "nnapi_checker": _coverage(checker),
                    "nnapi_ep_rules": _coverage(prep.after) if prep.after else None,
                    "cpu_output_vs_quantized": prep.fidelity},
            notes=[*result.notes, "fidelity and tensor errors are of the quantized model "
                   "before the NNAPI passes; target.cpu_output_vs_quantized says how far "
                   "the passes moved the CPU output"])
        _write_outputs(config, data, result)
    return result


def _coverage(coverage) -> dict[str, Any]:
    return {"partitions": coverage.partitions, "nodes_covered": coverage.nodes_covered,
            "nodes_total": coverage.nodes_total, "whole_model": coverage.whole_model,
            "source": coverage.source}


def _is_dynamic(path: Path) -> bool:
    try:
        tensor = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type
    except Exception:  # unreadable: quantize_model says so in its own words
        return False
    return any(not d.HasField("dim_value") for d in tensor.shape.dim[2:])
