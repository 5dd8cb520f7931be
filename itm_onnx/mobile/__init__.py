"""Mobile readiness: what NNAPI and CoreML would run, and the `.ort` format.

``check_mobile(MobileCheckConfig(model=...))`` answers three questions about an ONNX
artifact, with ONNX Runtime's own tools wherever they exist:

1. **Partitioning by operator type** (:mod:`.coverage`). ONNX Runtime's usability checker
   (``python -m onnxruntime.tools.check_onnx_model_mobile_usability``) is called through its
   Python API (``onnxruntime.tools.mobile_helpers.usability_checker``) on the same
   basic-optimized, shape-inferred model it analyses itself; its ``PartitioningInfo``
   results become :class:`EpCoverage` records (partitions, nodes covered, unsupported ops
   with counts, nodes with dynamic shapes, verdict) for NNAPI, CoreML NeuralNetwork and
   CoreML MLProgram.
2. **Partitioning by the NNAPI EP's own rules** (:mod:`.nnapi_rules`): the checker only
   looks at operator types; the EP also rejects quantized groups, weights, Clip bounds,
   dynamic scales and ranks it cannot run. Those rules, mirrored from the EP's sources,
   feed the checker's own partition estimator (an estimate: the EP is Android-only).
3. **ORT format** (:mod:`.ort_format`). ``onnxruntime.tools.convert_onnx_models_to_ort``
   writes the `.ort` file(s) (``Fixed`` and ``Runtime`` optimization styles, ARM target by
   default); each is then loaded in an ``InferenceSession`` and compared with the `.onnx` on
   probe inputs.

:mod:`.check` runs the three on one model. :mod:`.prepare` holds the graph passes that make
MQNet NNAPI-friendly where the model code cannot: :func:`fill_resize_roi` (exact, free on
CPU; applied by ``itm-onnx export``) and :func:`prepare_for_nnapi` (``itm-onnx
mobile-prepare``: for a quantized model, exact rewrites plus running the attention gates'
Sigmoid in float, which NNAPI needs and the CPU path does not).
"""

from .check import MobileCheckConfig, MobileReport, check_mobile
from .coverage import (
    CHECKER_EPS,
    EpCoverage,
    analysed_model,
    checker_coverage,
    coverage_from_partitioning,
    dynamic_inputs,
    load_model,
)
from .nnapi_rules import (
    NNAPI_QDQ_GROUP_OPS,
    NNAPI_RULES_EP,
    NnapiEpRules,
    nnapi_rules_coverage,
    qdq_units,
)
from .ort_format import ORT_STYLES, OrtArtifact, convert_to_ort, probe_inputs, verify_ort
from .prepare import (
    NNAPI_PASSES,
    ROI_NAME,
    PrepareReport,
    compare_on_cpu,
    fill_resize_roi,
    float_gates,
    fold_weight_dequantize,
    global_pool_as_average_pool,
    prepare_for_nnapi,
)

__all__ = [
    "CHECKER_EPS", "NNAPI_PASSES", "NNAPI_QDQ_GROUP_OPS", "NNAPI_RULES_EP", "ORT_STYLES",
    "ROI_NAME", "EpCoverage", "MobileCheckConfig", "MobileReport", "NnapiEpRules",
    "OrtArtifact", "PrepareReport", "analysed_model", "check_mobile", "checker_coverage",
    "compare_on_cpu", "convert_to_ort", "coverage_from_partitioning", "dynamic_inputs",
    "fill_resize_roi", "float_gates", "fold_weight_dequantize", "global_pool_as_average_pool",
    "load_model", "nnapi_rules_coverage", "prepare_for_nnapi", "probe_inputs", "qdq_units",
    "verify_ort",
]
