"""Editing an ONNX graph in place: the lookups and small helpers the rewrites share.

``EditGraph`` indexes producers and consumers (``refresh`` after an edit), reads constants,
makes unique names and adds initializers; the functions read node attributes and shapes,
tag new nodes with the part (backbone/head/output) of the node they replace, and drop what
an edit left unused. Used by :mod:`.rewrite`, :mod:`.rewrite_head` and
:mod:`.rewrite_output`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import onnx_meta
from ..utils.graph import constant_value, drop_unused_initializers, index_nodes


class EditGraph:
    """Producer/consumer lookups over a graph that is being edited."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.names: set[str] = {n.name for n in self.graph.node}
        self.refresh()

    def refresh(self) -> None:
        self.producer, self.consumers = index_nodes(self.graph)

    def const(self, name: str) -> np.ndarray | None:
        return constant_value(name, self.inits, self.producer)

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant (any shape), else None."""
        value = self.const(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names or name in self.inits or name in self.producer:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def add_init(self, base: str, array: np.ndarray) -> str:
        name = self.unique(base)
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def is_graph_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)

    def insert_before(self, anchor: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
        """Put ``new``, in order, just before ``anchor`` (topological order kept)."""
        nodes = self.graph.node
        index = list(nodes).index(anchor)
        for offset, node in enumerate(new):
            nodes.insert(index + offset, node)

    def replace(self, old: list[onnx.NodeProto], anchor: onnx.NodeProto,
                new: list[onnx.NodeProto]) -> None:
        """Put ``new`` where ``anchor`` is, remove ``old`` (which may include it), re-index."""
        self.insert_before(anchor, new)
        for node in old:
            self.graph.node.remove(node)
        self.refresh()


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def is_plain_1x1(g: EditGraph, conv: onnx.NodeProto) -> bool:
    """A 1x1 conv with a constant weight and :func:`has_plain_geometry`."""
    weight = g.const(conv.input[1]) if len(conv.input) > 1 else None
    if conv.op_type != "Conv" or weight is None or weight.ndim != 4:
        return False
    return weight.shape[2:] == (1, 1) and has_plain_geometry(conv)


def has_plain_geometry(conv: onnx.NodeProto) -> bool:
    """Group 1, no padding, unit strides and dilations: with a 1x1 kernel, a matmul."""
    pads = attr(conv, "pads", [0, 0, 0, 0])
    return (attr(conv, "group", 1) == 1 and not any(pads)
            and all(s == 1 for s in attr(conv, "strides", [1, 1]))
            and all(d == 1 for d in attr(conv, "dilations", [1, 1])))


def channels(g: EditGraph, tensor: str) -> int | None:
    """Channel count of an activation, from value_info/graph inputs (shape inference)."""
    for vi in list(g.graph.value_info) + list(g.graph.input) + list(g.graph.output):
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            return dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else None
    return None


def tag_like(node: onnx.NodeProto, reference: onnx.NodeProto) -> onnx.NodeProto:
    part = onnx_meta.node_part(reference)
    if part:
        node.metadata_props.add(key=onnx_meta.PART_KEY, value=part)
    return node


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fill value_info in place (channel counts are needed to split concatenated weights)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


def drop_unused(model: onnx.ModelProto) -> None:
    drop_unused_initializers(model)
    produced = {o for n in model.graph.node for o in n.output}
    vis = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(vis)


def dim(g: EditGraph, tensor: str, axis: int) -> int | None:
    for vi in list(g.graph.value_info) + list(g.graph.input) + list(g.graph.output):
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            return dims[axis].dim_value if len(dims) > axis and dims[axis].dim_value else None
    return None


def only_feeds(g: EditGraph, tensor: str, user: onnx.NodeProto) -> bool:
    users = g.consumers.get(tensor, [])
    return len(users) == 1 and users[0] is user and not g.is_graph_output(tensor)
