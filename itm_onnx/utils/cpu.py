"""The processor this runs on and its int8 dot-product instructions, from /proc/cpuinfo.

One reader for every record that names the CPU: the benchmark's machine facts
(:mod:`itm_onnx.bench.machine`) and the hardware line of every training checkpoint.
No third-party imports, so training start-up does not pay for ONNX Runtime's.
"""

from __future__ import annotations

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
        "cpu_id": _x86_cpu_id(fields),
        "int8_dot_product": found,
        "vnni_or_amx": any(n in found for n in ("AVX-VNNI", "AVX512-VNNI", "AMX-INT8")),
        "arm_dotprod": "dotprod" in found,
    }


def _x86_cpu_id(fields: dict[str, str]) -> str | None:
    """"family F model M stepping S" (decimal, as cpuinfo gives them), or None off x86.

    Hypervisors often show a bare "AMD EPYC" or "Intel Xeon Processor" as the model
    name; the family and model numbers still tell the core apart (AMD family 25 model 17
    is Zen 4, family 26 is Zen 5), and the int8 speed differs between them.
    """
    if "cpu family" not in fields or "model" not in fields:
        return None
    cpu_id = f"family {fields['cpu family']} model {fields['model']}"
    return cpu_id + (f" stepping {fields['stepping']}" if "stepping" in fields else "")


def cpu_facts() -> dict[str, Any]:
    """:func:`cpuinfo_facts` of this machine; the model from ``platform`` where there is no
    /proc/cpuinfo (and nothing known of its instructions)."""
    try:
        return cpuinfo_facts(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {"model": platform.processor() or None, "cpu_id": None, "int8_dot_product": [],
                "vnni_or_amx": None, "arm_dotprod": None}
