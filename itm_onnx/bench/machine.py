"""What a benchmark ran on: the processor, its int8 dot-product instructions, the load.

A latency ratio between an int8 and a float model says little without the CPU: ONNX
Runtime's int8 kernels gain much on x86 with VNNI (AVX-VNNI, AVX512-VNNI) or AMX and
on ARM with the dot-product (and i8mm) extensions, and little on AVX2 alone. The
processor facts come from :mod:`itm_onnx.utils.cpu` (``/proc/cpuinfo`` as the kernel
reports it, ``platform`` elsewhere).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from ..utils.cpu import cpu_facts, cpuinfo_facts

# cpuinfo_facts lived here before utils.cpu; its name stays importable from here.
__all__ = ["cpu_facts", "cpuinfo_facts", "describe", "load_average", "machine_facts"]


def machine_facts() -> dict[str, Any]:
    """The processor, its int8 instructions, cores, ONNX Runtime version, load average."""
    import onnxruntime as ort

    facts = cpu_facts()
    facts.update(machine=platform.machine(), logical_cpus=os.cpu_count(),
                 onnxruntime=ort.__version__, load_average=load_average())
    return facts


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (other work on a shared machine), or None."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def describe(facts: dict[str, Any]) -> str:
    """One line for the table's footer."""
    int8 = ", ".join(facts.get("int8_dot_product") or []) or "none found"
    load = facts.get("load_average")
    cpu_id = f", {facts['cpu_id']}" if facts.get("cpu_id") else ""
    return (f"CPU: {facts.get('model') or '?'} ({facts.get('logical_cpus')} logical CPUs"
            f"{cpu_id}); "
            f"int8 dot-product instructions: {int8}"
            + (f"; load average {load[0]:.2f} at the start" if load else ""))
