"""ONNX Runtime's usability checker as data: the model it analyses and one
:class:`EpCoverage` per execution provider it knows (NNAPI, CoreML NeuralNetwork and
MLProgram)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ..errors import ItmOnnxError, UsageError

# The EPs ORT's checker knows, with the function that estimates their partitions.
CHECKER_EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
NNAPI_RULES_EP = "NNAPI (EP rules)"


@dataclass
class EpCoverage:
    """How one execution provider would take the model (one analysis)."""

    ep: str
    source: str  # "onnxruntime usability checker" or "NNAPI EP rules"
    partitions: int
    partition_sizes: list[int]
    nodes_covered: int
    nodes_total: int
    unsupported_ops: dict[str, int]  # op type -> nodes not supported because of the op
    dynamic_shape_nodes: list[str]  # "OpType:name" of nodes left out for a dynamic input
    other_unsupported: dict[str, int] = field(default_factory=dict)  # reason -> nodes
    unsupported_nodes: list[str] = field(default_factory=list)  # "OpType:name (part)"
    verdict: str = "NO"  # ORT's suitability: YES, MAYBE or NO
    caveats: list[str] = field(default_factory=list)  # what the checker did not verify

    @property
    def whole_model(self) -> bool:
        """One partition holding every node: no device/CPU switches at all."""
        return self.partitions == 1 and self.nodes_covered == self.nodes_total



# --------------------------------------------------------------------------------------
# Loading and optimizing as ORT's checker does
# --------------------------------------------------------------------------------------


def load_model(path: Path) -> onnx.ModelProto:
    """Load an ONNX file or fail with one line (missing file -> usage error)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends carry multi-line text
        raise ItmOnnxError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ItmOnnxError(f"{path} is not an ONNX model (no graph nodes)")
    return model


@contextlib.contextmanager
def quiet_ort_tools() -> Iterator[None]:
    """ORT's tools print progress to stdout and log to the root logger; keep ours clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def analysed_model(path: Path, optimize: bool = True) -> onnx.ModelProto:
    """The model ORT's checker analyses: basic-optimized by ORT, then shape-inferred."""
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="itm-onnx-mobile-") as tmp:
        target = Path(path)
        if optimize:
            target = Path(tmp) / Path(path).name
            try:
                with quiet_ort_tools():
                    optimize_model(Path(path), target, use_external_initializers=True)
            except Exception as exc:
                raise ItmOnnxError(
                    f"ONNX Runtime cannot load {path}: {first_line(exc)}") from None
        try:
            return ModelProtoWithShapeInfo(target).model_with_shape_info
        except Exception as exc:
            raise ItmOnnxError(f"shape inference failed on {path}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# 1. ORT's usability checker -> EpCoverage
# --------------------------------------------------------------------------------------


def _checker_partitioning(model: onnx.ModelProto, ep: str, fixed_sizes: bool = True):
    """ORT's ``PartitioningInfo`` for ``ep`` (one of CHECKER_EPS)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    if ep == "NNAPI":
        return uc.check_nnapi_partitions(model, fixed_sizes)
    config = {"CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
              "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}[ep]
    return uc.check_coreml_partitions(model, fixed_sizes, config)


def coverage_from_partitioning(info: Any, model: onnx.ModelProto, ep: str, source: str,
                               reasons: dict[str, str] | None = None,
                               parts: dict[str, str] | None = None) -> EpCoverage:
    """Turn ORT's ``PartitioningInfo`` (checker output) into an :class:`EpCoverage`.

    The checker reports unsupported op types as a set and nodes left out for dynamic
    shapes as a count; the per-op counts and the node lists come from comparing its
    supported groups with the graph it analysed. ``reasons`` (node name -> why) refines
    the ops that are supported by type but fail an EP rule.
    """
    covered = {id(n) for group in info.supported_groups for n in group}
    unsupported_ops: Counter[str] = Counter()
    other: Counter[str] = Counter()
    dynamic, listed = [], []
    for node in model.graph.node:
        if id(node) in covered:
            continue
        label = f"{node.op_type}:{node.name}"
        listed.append(label + (f" ({parts[node.name]})" if parts and node.name in parts else ""))
        reason = (reasons or {}).get(node.name)
        if not info.supported_ops_checker.is_op_supported(node) and reason is None:
            unsupported_ops[_op_key(node)] += 1
        elif reason is not None:
            other[reason] += 1
        else:
            dynamic.append(label)
    return EpCoverage(
        ep=ep,
        source=source,
        partitions=info.num_partitions,
        partition_sizes=[len(g) for g in info.supported_groups],
        nodes_covered=info.num_supported_nodes,
        nodes_total=info.num_nodes,
        unsupported_ops=dict(sorted(unsupported_ops.items())),
        dynamic_shape_nodes=dynamic,
        other_unsupported=dict(other.most_common()),
        unsupported_nodes=listed,
        verdict=info.suitability().name,
        caveats=list(info.supported_ops_checker.get_caveats()),
    )


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def checker_coverage(model: onnx.ModelProto, parts: dict[str, str] | None = None
                     ) -> list[EpCoverage]:
    """ORT's usability checker on an analysed model, one record per EP it knows."""
    source = "onnxruntime usability checker"
    return [coverage_from_partitioning(_checker_partitioning(model, ep), model, ep, source,
                                       parts=parts)
            for ep in CHECKER_EPS]


def dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    return [i.name for i in model.graph.input if not is_fixed_size_tensor(i)]

