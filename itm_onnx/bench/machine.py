"""What a benchmark ran on: the processor, its int8 dot-product instructions, the load.

A latency ratio between an int8 and a float model says little without the CPU: ONNX
Runtime's int8 kernels gain much on x86 with VNNI (AVX-VNNI, AVX512-VNNI) or AMX and
on ARM with the dot-product (and i8mm) extensions, and little on AVX2 alone. The facts
come from ``/proc/cpuinfo`` (Linux), read as the kernel reports them, with
``platform`` as the fallback elsewhere.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# cpuinfo flag -> name in reports, most capable last. x86 "flags", ARM "Features".
X86_INT8 = {"avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512_vnni": "AVX512-VNNI",
            "amx_int8": "AMX-INT8"}
ARM_INT8 = {"asimddp": "dotprod", "i8mm": "i8mm", "sve": "SVE", "sve2": "SVE2"}


def cpuinfo_facts(text: str) -> dict[str, Any]:
    """Processor model and int8 dot-product instructions from /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor stands for all
            fields[key.strip()] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    table = X86_INT8 if "flags" in fields else ARM_INT8
    model = fields.get("model name") or fields.get("Hardware") or fields.get("Processor")
    if model is None and "CPU part" in fields:
        model = (f"ARM implementer {fields.get('CPU implementer', '?')} part "
                 f"{fields['CPU part']}")
    found = [name for flag, name in table.items() if flag in flags]
    return {
        "model": model,
        "int8_dot_product": found,
        "vnni_or_amx": any(n in found for n in ("AVX-VNNI", "AVX512-VNNI", "AMX-INT8")),
        "arm_dotprod": "dotprod" in found,
    }


def machine_facts() -> dict[str, Any]:
    """The processor, its int8 instructions, cores, ONNX Runtime version, load average."""
    import onnxruntime as ort

    try:
        facts = cpuinfo_facts(Path("/proc/cpuinfo").read_text())
    except OSError:
        facts = {"model": platform.processor() or None, "int8_dot_product": [],
                 "vnni_or_amx": None, "arm_dotprod": None}
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
    return (f"CPU: {facts.get('model') or '?'} ({facts.get('logical_cpus')} logical CPUs); "
            f"int8 dot-product instructions: {int8}"
            + (f"; load average {load[0]:.2f} at the start" if load else ""))
