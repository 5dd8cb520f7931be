"""Small ONNX graph helpers shared by the passes (quantize rewrites, mobile passes)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node or graph output reads any more (after a pass)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def index_nodes(graph: onnx.GraphProto
                ) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """(tensor name -> node that produces it, tensor name -> nodes that read it)."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def constant_value(name: str, inits: dict[str, onnx.TensorProto],
                   producer: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer or a Constant node's output, else None."""
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producer.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute:
        return numpy_helper.to_array(node.attribute[0].t)
    return None
