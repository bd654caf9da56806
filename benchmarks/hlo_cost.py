"""What XLA:TPU's compiled program says about its own cost: the per-instruction ``estimated_cycles``
of its cost model and the bytes each instruction moves through HBM, read from the optimized HLO text.

``cost_analysis()["bytes accessed"]`` sums every top-level instruction's operands and result in
their padded tile layouts, including arrays XLA placed in on-chip VMEM (memory space ``S(1)`` in a
layout) and both halves of asynchronous copies; the functions here count memory space 0 (HBM) only
and each ``*-start`` / ``*-done`` pair once. ``estimated_cycles`` sits in each instruction's
``backend_config``; XLA:TPU schedules the entry computation's instructions one after another (the
asynchronous copies overlap them and carry no estimate), so their sum over a clock is the estimated
step time. Instructions without an estimate (``select-and-scatter``, collectives) are listed
apart with their HBM bytes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional

_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64|c64)\[([0-9,]*)\](\{[^}]*\})?")
_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "bf16": 2,
    "f16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
}
_INSTR = re.compile(r"(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
# Instructions that move no data: views, bookkeeping, the second half of asynchronous pairs.
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id"}
_BITCAST_CALLS = {"ConcatBitcast"}  # custom calls XLA:TPU lowers to a view


def padded_bytes(dtype: str, dims: str, layout: Optional[str]) -> int:
    """Bytes of one array in its TPU layout: the minor-to-major order and the first tile ``T(a,b)``
    pad the two most minor dimensions up to multiples of the tile."""
    shape = [int(d) for d in dims.split(",") if d]
    if not shape:
        return _BYTES[dtype]
    order = list(range(len(shape)))[::-1]
    tile = None
    if layout:
        body = layout[1:-1]
        minor, _, rest = body.partition(":")
        if minor.strip():
            order = [int(i) for i in minor.split(",") if i.strip()]
        m = re.search(r"T\((\d+)(?:,(\d+))?\)", rest)
        if m:
            tile = [int(m.group(1))] + ([int(m.group(2))] if m.group(2) else [])
    padded = list(shape)
    if tile:
        for t, dim in zip(reversed(tile), order):  # tile's last entry covers the most minor dim
            padded[dim] = -(-padded[dim] // t) * t
    return math.prod(padded) * _BYTES[dtype]


def memory_space(layout: Optional[str]) -> int:
    """The memory space of a layout: 0 = HBM, 1 = VMEM (``S(1)``), others on-chip scalars / flags."""
    m = re.search(r"S\((\d+)\)", layout or "")
    return int(m.group(1)) if m else 0


@dataclasses.dataclass
class Instruction:
    """One instruction of the entry computation: its result arrays ``[(dtype, dims, layout)]``,
    operand names, XLA:TPU's ``estimated_cycles`` (None: not estimated) and the JAX ``op_name``."""

    name: str
    op: str
    arrays: list
    operands: List[str]
    cycles: Optional[int]
    op_name: str
    target: str = ""

    def result_bytes(self, hbm_only: bool = True) -> int:
        return sum(padded_bytes(*a) for a in self.arrays if not hbm_only or memory_space(a[2]) == 0)


def entry_instructions(hlo_text: str) -> List[Instruction]:
    """The instructions of the optimized module's ENTRY computation, in program order."""
    start = hlo_text.index("\nENTRY")
    body = hlo_text[start : hlo_text.index("\n}", start)]
    out = []
    for line in body.splitlines()[1:]:
        m = _INSTR.match(line.strip())
        if not m:
            continue
        name, result, op, rest = m.groups()
        cycles = re.search(r'"estimated_cycles":"(\d+)"', rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        target = re.search(r'custom_call_target="([^"]*)"', rest)
        out.append(
            Instruction(
                name=name,
                op=op,
                arrays=_SHAPE.findall(result),
                operands=re.findall(r"%([\w.\-]+)", rest.split("), ")[0]),
                cycles=int(cycles.group(1)) if cycles else None,
                op_name=op_name.group(1) if op_name else "",
                target=target.group(1) if target else "",
            )
        )
    return out


def hbm_bytes(instructions: List[Instruction]) -> Dict[str, int]:
    """HBM bytes read + written per instruction (operands and result outside VMEM).

    An asynchronous ``*-start`` counts its copy once: the destination array (tuple element 1)
    read from the source's memory space and written to its own; the matching ``*-done`` moves
    nothing. Fusions are charged their whole operands (an upper bound where they read a slice)."""
    by_name = {i.name: i for i in instructions}
    out = {}
    for ins in instructions:
        if ins.op in _NO_TRAFFIC or ins.op.endswith("-done") or ins.target in _BITCAST_CALLS:
            out[ins.name] = 0
            continue
        if ins.op.endswith("-start") and len(ins.arrays) >= 2:
            src = by_name.get(ins.operands[0]) if ins.operands else None
            src_space = memory_space(src.arrays[0][2]) if src and src.arrays else 0
            dst = _start_destination(ins)
            size = padded_bytes(*dst)
            out[ins.name] = size * ((src_space == 0) + (memory_space(dst[2]) == 0))
            continue
        read = sum(by_name[o].result_bytes() if o in by_name else 0 for o in ins.operands)
        out[ins.name] = read + ins.result_bytes()
    return out


def _start_destination(ins: Instruction):
    """The destination array of an asynchronous ``copy-start`` / ``slice-start``: result tuple
    ``(source, destination, context)``, the source possibly a nested tuple of one array."""
    return ins.arrays[-2] if len(ins.arrays) >= 3 else ins.arrays[-1]


def model_layer(op_name: str) -> Dict[str, str]:
    """The model layer and pass of an instruction from its JAX ``op_name`` metadata, e.g.
    ``jit(train_step)/transpose(jvp(ResNetVideo))/s1/pathway1_stem/conv/conv_general_dilated`` ->
    ``{"layer": "s1/pathway1_stem/conv", "pass": "backward"}``; instructions outside the model
    (loss, optimizer) get layer ``"-"``."""
    parts = op_name.split("/")
    for i, part in enumerate(parts[1:], start=1):
        m = re.fullmatch(r"((?:\w+\()*)([A-Z]\w*)\)*", part)
        if m and parts[i + 1 :]:
            layer = "/".join(parts[i + 1 : -1]) or "(top)"
            return {"layer": layer, "pass": "backward" if "transpose(" in m.group(1) else "forward"}
    return {"layer": "-", "pass": "backward" if "transpose(" in op_name else "forward"}


def region(layer: str) -> str:
    """Where a layer sits in a SlowFast / Slow / MViT: ``fast``, ``slow`` (or a Slow's only
    pathway), ``lateral``, ``heads``, ``top`` (the model's own top-level ops: the input casts),
    ``model`` (MViT blocks etc.), ``outside`` (loss, optimizer)."""
    if layer == "-":
        return "outside"
    if layer == "(top)":
        return "top"
    if "_fuse" in layer:
        return "lateral"
    if "pathway1" in layer:
        return "fast"
    if "pathway0" in layer:
        return "slow"
    if layer.split("/")[0] in ("head", "handobjhead") or layer.startswith("head"):
        return "heads"
    return "model"


def estimate(hlo_text: str, clock_hz: float, hbm_bytes_per_s: float, top: int = 0) -> dict:
    """Estimated step time and HBM-only bytes of a compiled TPU program.

    Returns ``estimated_s`` (sum of ``estimated_cycles`` / ``clock_hz``), ``hbm_only_bytes``,
    ``estimated_by_region`` (seconds per :func:`region`), ``unestimated`` (instructions with HBM
    traffic but no estimate: count, bytes and the time those bytes take at ``hbm_bytes_per_s``)
    and, with ``top``, the ``top`` instructions by estimated time with their model layer."""
    instructions = entry_instructions(hlo_text)
    traffic = hbm_bytes(instructions)
    cycles = sum(i.cycles or 0 for i in instructions)
    regions: Dict[str, float] = {}
    unestimated: Dict[str, dict] = {}
    rows = []
    for ins in instructions:
        where = model_layer(ins.op_name)
        if ins.cycles:
            key = region(where["layer"])
            regions[key] = regions.get(key, 0.0) + ins.cycles / clock_hz
            rows.append((ins, where))
        elif traffic[ins.name] and not ins.op.endswith("-start"):
            u = unestimated.setdefault(ins.op, {"count": 0, "hbm_bytes": 0})
            u["count"] += 1
            u["hbm_bytes"] += traffic[ins.name]
    for u in unestimated.values():
        u["hbm_s"] = u["hbm_bytes"] / hbm_bytes_per_s
    total_s = cycles / clock_hz
    rows.sort(key=lambda r: -r[0].cycles)
    out = {
        # while / call / conditional bodies are other computations: their cycles are not in the sum
        "control_flow": sum(i.op in ("while", "call", "conditional") for i in instructions),
        "estimated_cycles": cycles,
        "estimated_s": total_s,
        "hbm_only_bytes": sum(traffic.values()),
        "estimated_by_region": dict(sorted(regions.items(), key=lambda kv: -kv[1])),
        "unestimated": unestimated,
    }
    if top:
        out["top_estimated"] = [
            {
                "name": ins.name,
                "op": ins.op,
                "layer": where["layer"],
                "pass": where["pass"],
                "estimated_s": ins.cycles / clock_hz,
                "share": ins.cycles / cycles,
                "hbm_bytes": traffic[ins.name],
                "result": ", ".join(f"{d}[{s}]" for d, s, _ in ins.arrays[:2]),
                "op_name": ins.op_name.split("/")[-1],
            }
            for ins, where in rows[:top]
        ]
    return out
