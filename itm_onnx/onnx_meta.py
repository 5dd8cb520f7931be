"""The one place that knows which ONNX nodes are backbone and which are head.

Convention (format version 1), written by ``itm-onnx export`` and read by every later
stage:

- every node carries ``metadata_props`` key ``itm_onnx.part`` with value ``backbone``
  (deployed int8: weights and activations) or ``head`` (int8 weights, float
  activations; the output transform counts as head because it stays float);
- model-level ``metadata_props`` keys start with ``itm_onnx.`` (see ``MODEL_KEYS``);
  ``itm_onnx.config`` holds the model config as JSON.

Tags come from the PyTorch module path of each node (``backbone.*``, ``head.*``,
``output.*``), which the dynamo exporter records in node metadata. Graph passes that
drop node metadata (onnxsim) keep node names, so tags are re-applied by name, and a
node a pass created gets the part of the node that feeds it.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from typing import Any

import onnx

PART_KEY = "itm_onnx.part"
BACKBONE, HEAD = "backbone", "head"
PREFIX = "itm_onnx."
META_FORMAT_VERSION = "1"

# Module-path roots of the PyTorch model and the deployment part they belong to.
MODULE_ROOT_PARTS = {"backbone": BACKBONE, "head": HEAD, "output": HEAD}


def _get_prop(props: Iterable[onnx.StringStringEntryProto], key: str) -> str | None:
    for prop in props:
        if prop.key == key:
            return prop.value
    return None


def _set_prop(container: Any, key: str, value: str) -> None:
    for prop in container.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    container.metadata_props.add(key=key, value=value)


def part_from_exporter_metadata(node: onnx.NodeProto) -> str | None:
    """The part of a freshly exported node, from the module path the exporter recorded."""
    scopes = _get_prop(node.metadata_props, "pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            names = ast.literal_eval(scopes)  # a Python list repr, e.g. "['', 'head', ...]"
        except (ValueError, SyntaxError):
            names = []
        for name in names:
            root = name.split(".")[0]
            if root in MODULE_ROOT_PARTS:
                return MODULE_ROOT_PARTS[root]
    return None


def node_part(node: onnx.NodeProto) -> str | None:
    """``"backbone"``, ``"head"`` or None (untagged) for a node of an exported model."""
    return _get_prop(node.metadata_props, PART_KEY)


def tags_by_name(model: onnx.ModelProto) -> dict[str, str]:
    """Map node name -> part, from ``itm_onnx.part`` tags or else the exporter's metadata."""
    tags = {}
    for node in model.graph.node:
        part = node_part(node) or part_from_exporter_metadata(node)
        if part:
            tags[node.name] = part
    return tags


def apply_tags(model: onnx.ModelProto, tags: dict[str, str]) -> None:
    """Tag every node; nodes unknown to ``tags`` inherit from their producers (or consumers).

    Raises ValueError if a node's part cannot be decided, so that no untagged node ever
    reaches the quantizer.
    """
    producer_part: dict[str, str] = {}
    pending: list[onnx.NodeProto] = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        part = tags.get(node.name)
        if part is None:
            inherited = {producer_part[i] for i in node.input if i in producer_part}
            part = HEAD if HEAD in inherited else (inherited.pop() if inherited else None)
        if part is None:
            pending.append(node)
            continue
        _set_prop(node, PART_KEY, part)
        for out in node.output:
            producer_part[out] = part
    for node in pending:  # e.g. a constant that only feeds one part
        consumers = {node_part(n) for n in model.graph.node
                     if set(n.input) & set(node.output) and node_part(n)}
        if len(consumers) != 1:
            raise ValueError(f"cannot decide whether node {node.name!r} is backbone or head")
        _set_prop(node, PART_KEY, consumers.pop())


def nodes_in_part(model: onnx.ModelProto, part: str) -> list[str]:
    return [n.name for n in model.graph.node if node_part(n) == part]


def require_tags(model: onnx.ModelProto, source: str = "model") -> None:
    """Fail with a clear message when the model was not exported by itm-onnx."""
    untagged = [n.name for n in model.graph.node if node_part(n) is None]
    if untagged:
        raise ValueError(
            f"{source}: {len(untagged)} of {len(model.graph.node)} nodes have no "
            f"backbone/head tag ({PART_KEY}); export it with `itm-onnx export` "
            "or name the head nodes with --head-nodes"
        )


def write_model_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Set ``itm_onnx.<key>`` model properties; non-strings are stored as JSON."""
    _set_prop(model, PREFIX + "format_version", META_FORMAT_VERSION)
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        _set_prop(model, PREFIX + key, text)


def read_model_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``itm_onnx.*`` model properties, prefix stripped (empty if not exported by us)."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(PREFIX)}
