"""Small ONNX graph helpers shared by the passes (quantize rewrites, mobile passes)."""

from __future__ import annotations

import onnx


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node or graph output reads any more (after a pass)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
