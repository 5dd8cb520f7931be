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
# MQNet's working-scale pooling (``pool``) stays float like the output transform.
MODULE_ROOT_PARTS = {"backbone": BACKBONE, "head": HEAD, "output": HEAD, "pool": HEAD}


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


def set_part(node: onnx.NodeProto, part: str) -> None:
    """Move a node to ``part`` (a quantize pass deciding a node's precision)."""
    _set_prop(node, PART_KEY, part)


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


# --- Stages after export: nodes that passes insert, untagged models, runtime settings ---

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Model property (under PREFIX) holding the ONNX Runtime settings an artifact needs.
SESSION_OPTIONS_KEY = "session_options"  # JSON of ORT settings the artifact needs (runner, bench)


def tag_inserted_nodes(model: onnx.ModelProto) -> int:
    """Tag nodes that a later pass (quantizer, rewrite) added; return how many were tagged.

    Existing tags are kept. A DequantizeLinear belongs to the nodes that consume it (it
    is the input side of their quantized group; weights of head convs are head), a
    QuantizeLinear to the node that produced its input (the output side of a group),
    anything else to its producers (head wins) like :func:`apply_tags`. Nodes with
    nothing tagged on that side fall back to the other side; a node shared by both parts
    counts as backbone (it exists for the int8 path). Iterates to a fixed point and
    raises ValueError if a node stays undecided.
    """
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    untagged = [n for n in model.graph.node if node_part(n) is None]
    count = len(untagged)
    while untagged:
        left = []
        for node in untagged:
            before = {node_part(producers[i]) for i in node.input if i in producers} - {None}
            after = {node_part(c) for o in node.output for c in consumers.get(o, [])} - {None}
            first, second = (after, before) if node.op_type == "DequantizeLinear" else (
                before, after)
            parts = first or second
            if not parts:
                left.append(node)
                continue
            if node.op_type in QDQ_OPS:
                part = BACKBONE if BACKBONE in parts else HEAD
            else:
                part = HEAD if HEAD in parts else BACKBONE
            _set_prop(node, PART_KEY, part)
        if len(left) == len(untagged):
            raise ValueError(f"cannot decide whether node {left[0].name!r} is backbone or head")
        untagged = left
    return count


def tags_from_head_nodes(model: onnx.ModelProto, head_nodes: Iterable[str]) -> dict[str, str]:
    """Tags for a model without them, from the names of the nodes where the head starts.

    The named nodes and everything downstream of them are head; so is any node that is
    not upstream of a named node and feeds only head nodes (e.g. the ``1 - I`` of an
    output transform, which reads the graph input directly); the rest is backbone.
    Raises ValueError for names that are not nodes of the model.
    """
    nodes = list(model.graph.node)
    by_name = {n.name: n for n in nodes}
    names = [n.strip() for n in head_nodes if n.strip()]
    missing = [n for n in names if n not in by_name]
    if missing or not names:
        raise ValueError(f"--head-nodes: no node named {', '.join(missing) or '(empty list)'} "
                         "in the model")
    producers = {out: n for n in nodes for out in n.output}
    upstream: set[str] = set()
    stack = [producers[i] for n in names for i in by_name[n].input if i in producers]
    while stack:
        node = stack.pop()
        if node.name not in upstream:
            upstream.add(node.name)
            stack.extend(producers[i] for i in node.input if i in producers)
    head = set(names)
    for node in nodes:  # topological order: descendants of head nodes
        if any(producers.get(i) is not None and producers[i].name in head for i in node.input):
            head.add(node.name)
    changed = True
    while changed:  # side branches that only feed the head
        changed = False
        for node in nodes:
            if node.name in head or node.name in upstream:
                continue
            users = [c for c in nodes if set(c.input) & set(node.output)]
            if users and all(u.name in head for u in users):
                head.add(node.name)
                changed = True
    return {n.name: HEAD if n.name in head else BACKBONE for n in nodes}


def is_quantized(model: onnx.ModelProto) -> bool:
    """True if the graph already holds quantization nodes (e.g. a QAT or QDQ export)."""
    quantized_ops = QDQ_OPS | {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul",
                               "DynamicQuantizeLinear"}
    return any(n.op_type in quantized_ops for n in model.graph.node)


def read_session_options(model: onnx.ModelProto) -> dict[str, Any]:
    """The ONNX Runtime settings stored with an artifact (empty dict if none)."""
    text = read_model_metadata(model).get(SESSION_OPTIONS_KEY)
    return json.loads(text) if text else {}


def restore_tags(model: onnx.ModelProto, tags: dict[str, str]) -> int:
    """Re-tag nodes a pass rebuilt without their metadata; returns how many were restored.

    ONNX Runtime's optimizer (inside ``quant_pre_process``) and its quantizer (when it
    converts the opset) write graphs without node metadata but keep node names: tags
    come back by name, and nodes they created are tagged by :func:`tag_inserted_nodes`.
    """
    restored = 0
    for node in model.graph.node:
        if node_part(node) is None and node.name in tags:
            _set_prop(node, PART_KEY, tags[node.name])
            restored += 1
    tag_inserted_nodes(model)
    return restored
