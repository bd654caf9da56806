"""The project's train and eval steps compiled for a TPU slice without a TPU (prints JSON).

libtpu compiles for a TPU topology on any host (``jax.experimental.topologies``): this script
builds the real, sharded, state-donating train step (``train.make_train_step``: Ego-Exo heads and
losses, SGD / AdamW, bfloat16 compute) and the multi-view eval step (``evaluate.make_eval_step``) of
each model on a ``Mesh`` over the slice's chips, lowers them with abstract state and batch, compiles
them, and reports per chip and per step:

- compile time on this host;
- **XLA:TPU's own estimate of the step time**: the sum of the ``estimated_cycles`` its cost model
  writes into every instruction of the entry computation, over the TensorCore clock the chip's bf16
  peak implies (:func:`clock_hz`), split by model region (fast / slow pathway, lateral connections,
  heads, outside the model), and the estimated MFU (model FLOPs / estimated time / peak);
  instructions without an estimate (``select-and-scatter``, collectives) are listed with their HBM
  bytes (``benchmarks/hlo_cost.py``);
- **HBM-only bytes**: operands and results of the entry computation outside on-chip VMEM, each
  asynchronous copy once, next to ``cost_analysis()["bytes accessed"]``, which also counts VMEM
  traffic and both halves of asynchronous copies;
- XLA's FLOPs, model FLOPs counted from the architecture (2 x MACs of every convolution and matmul
  of the forward pass, x3 for forward + both gradients) and model / XLA FLOPs;
- argument, output, aliased (donated) and temporary memory (``memory_analysis``) and the peak they
  add up to, against the chip's HBM;
- secondary: the roofline bound ``max(flops / peak FLOP/s, bytes accessed / HBM bandwidth)``
  (with "bytes accessed" it over-counts memory time: VMEM traffic included);
- with ``--top-ops N``, the N instructions with the largest estimated time, mapped back to model
  layers through their ``op_name`` metadata;
- with ``--max-batch``, the largest per-chip batch (a multiple of the BN group) that compiles within
  the chip's HBM: doubling until libtpu runs out of memory, then bisecting (XLA:TPU rematerialises
  to fit, so memory is not linear in the batch).

    pip install -r benchmarks/requirements-tpu.txt       # libtpu for the pinned jax; not a runtime dependency
    python benchmarks/tpu_compile.py --models slowfast_r50 --sizes reduced --kernels xla --top-ops 20
    python benchmarks/tpu_compile.py --models slowfast_r50 --sizes full --kernels xla --rewrites on,off
    python benchmarks/tpu_compile.py --models slowfast_r50 --sizes full --kernels xla --max-batch
    python benchmarks/tpu_compile.py --dry-run           # tiny networks: checks the whole path

``--rewrites`` compiles with ``model.rewrites`` on (the TPU default: space-to-depth stems with the
input folded on the host, one-pass BatchNorm statistics) and / or off (the plain forms); ``stem``
and ``bn`` turn one of the two on alone, to measure each (a benchmark-only split of the switch). The last
line of output is one JSON object (``rows``: one per model, size, kernels, rewrites and step).
Compiling for TPU is slow on a small host (minutes per row on 2 cores); ``--out FILE`` appends each
row as it finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Dict, Optional

import common
import hlo_cost

# The compiler is all this needs: JAX itself computes on the host CPU (also on a TPU VM, whose chips
# stay free), and libtpu's one-process lock is not needed without a device.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# Per chip: dense bf16 peak (TFLOP/s), HBM bandwidth (GB/s), HBM capacity (GiB), matrix units and
# their side; Google Cloud TPU system-architecture pages.
CHIPS = {
    "v4": {"peak_tflops": 275.0, "hbm_gbps": 1228.0, "hbm_gib": 32.0, "mxus": 8, "mxu_dim": 128},
    "v5e": {"peak_tflops": 197.0, "hbm_gbps": 819.0, "hbm_gib": 16.0, "mxus": 4, "mxu_dim": 128},
    "v5p": {"peak_tflops": 459.0, "hbm_gbps": 2765.0, "hbm_gib": 95.0, "mxus": 8, "mxu_dim": 128},
    "v6e": {"peak_tflops": 918.0, "hbm_gbps": 1640.0, "hbm_gib": 32.0, "mxus": 2, "mxu_dim": 256},
}


def clock_hz(chip: dict) -> float:
    """The TensorCore clock the bf16 peak implies: each matrix unit does ``mxu_dim**2``
    multiply-adds (2 FLOPs each) per cycle, so clock = peak / (mxus x mxu_dim**2 x 2)
    (v5e: 197e12 / (4 x 128**2 x 2) = 1.50 GHz). ``estimated_cycles`` are in these cycles."""
    return chip["peak_tflops"] * 1e12 / (chip["mxus"] * chip["mxu_dim"] ** 2 * 2)


# Per-chip training batch of the recipes: 8 clips per GPU for the ResNets (PySlowFast), 2 for
# MViT-v2-S (128 clips on 64 GPUs); evaluation batch per chip: one 8-view batch.
RECIPE_BATCH = {"slowfast_r50": 8, "slow_r50": 8, "mvit_v2_s": 2}
EVAL_BATCH = 8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", default="v5e:2x2", help="TPU slice, e.g. v5e:2x2, v4:2x2x1")
    p.add_argument("--models", default=",".join(common.MODELS))
    p.add_argument("--sizes", default="reduced", help="comma list of reduced, full (dry: --dry-run)")
    p.add_argument("--kernels", default="xla,cpu", help="model.kernels settings to compile: xla, cpu")
    p.add_argument("--steps", default="train,eval", help="train, eval or train,eval")
    p.add_argument("--batch-per-chip", type=int, default=0, help="override the recipe's per-chip batch")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--rewrites", default="on", help="comma list of model.rewrites settings: on, off, stem, bn")
    p.add_argument("--top-ops", type=int, default=0, help="list the N instructions with the largest estimated time")
    p.add_argument(
        "--max-batch",
        action="store_true",
        help="largest per-chip batch fitting the chip's HBM (train step, first --kernels value)",
    )
    p.add_argument("--remat", default="none", help="model.remat for the train step (none, dots)")
    p.add_argument(
        "--xla-flag",
        action="append",
        default=[],
        help="extra TPU compiler option NAME=VALUE (repeatable), for experiments",
    )
    p.add_argument("--out", default="", help="append each finished row as a JSON line to this file")
    p.add_argument("--dump-hlo", default="", help="write each row's optimized HLO text into this folder")
    p.add_argument("--dry-run", action="store_true", help="tiny networks, both kernel sets: checks the path")
    args = p.parse_args(argv)
    if args.dry_run:
        args.sizes = "dry"
    return args


def chip_of(topology: str) -> dict:
    name = topology.split(":")[0]
    if name not in CHIPS:
        raise SystemExit(f"error: --topology={topology}: unknown chip {name!r}; expected one of {sorted(CHIPS)}")
    return {"name": name, **CHIPS[name]}


def tpu_mesh(topology: str):
    """A 1-D ``data`` mesh over the chips of a TPU slice described by libtpu (no TPU needed)."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from jax.experimental import topologies  # noqa: PLC0415

    from egoexo_jax import sharding  # noqa: PLC0415

    try:
        desc = topologies.get_topology_desc(topology, "tpu")
    except Exception as e:  # noqa: BLE001
        raise SystemExit(
            f"error: cannot describe TPU topology {topology!r} ({e}); is libtpu installed? "
            "pip install -r benchmarks/requirements-tpu.txt"
        ) from None
    return jax.sharding.Mesh(np.asarray(desc.devices), (sharding.DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


# ----------------------------------------------------------------------------------------------
# Model FLOPs from the architecture.


def _sub_jaxprs(eqn):
    import jax  # noqa: PLC0415

    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def forward_flops(jaxpr) -> float:
    """2 x multiply-adds of every convolution and dot in a jaxpr (nested ones included)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out = eqn.outvars[0].aval.shape
            o_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            total += 2.0 * math.prod(out) * math.prod(rhs) / rhs[o_dim]
        elif name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            rhs_free = [d for i, d in enumerate(rhs) if i not in rc and i not in rb]
            total += 2.0 * math.prod(lhs) * math.prod(rhs_free)
        for sub in _sub_jaxprs(eqn):
            total += forward_flops(sub)
    return total


def model_forward_flops_per_clip(cfg, crop: int) -> float:
    """Forward FLOPs of one clip at ``crop`` counted from the architecture (traced with the plain
    XLA ops in float32); a train step costs 3 x this per clip (forward, input and weight gradients)."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from egoexo_jax import models, train  # noqa: PLC0415

    m = train.model_config(cfg)
    m.kernels, m.dtype = "xla", "float32"
    model = models.build(m)
    shapes = train.input_shapes(cfg, 1, crop)
    variables = jax.eval_shape(lambda: train.init_variables(model, cfg, 0))
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
        variables, [jax.ShapeDtypeStruct(s, np.float32) for s in shapes]
    )
    return forward_flops(jaxpr.jaxpr)


# ----------------------------------------------------------------------------------------------
# Compiling one row.


def row_config(model: str, size: str, kernels: str, dtype: str, batch: int, remat: str = "none", rewrites: str = "on"):
    """The recipe's Ego-Exo config at a benchmark size with ``batch`` clips in all. ``rewrites``
    is set explicitly: ``auto`` would resolve against this host's CPU backend."""
    c = common.experiment_config(model, size, heads=True, dtype=dtype, batch=batch)
    c.model.kernels = kernels
    c.model.remat = remat
    c.model.rewrites = "on" if rewrites in PARTIAL_REWRITES else rewrites
    c.model.precision = "default"  # the platform default, what auto picks on TPU
    if size == "full":  # the recipe's test crop (common sets it to the training crop)
        c.data.test_crop_size = common.recipe_config("pretrain", model).data.test_crop_size
    return c


def _abstract_train_args(cfg, model, tx, mesh, batch: int):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from egoexo_jax import sharding, train  # noqa: PLC0415

    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)

    def fresh():
        v = train.init_variables(model, cfg, 0)
        return train.TrainState(
            jnp.zeros((), jnp.int32), v["params"], v.get("batch_stats", {}), tx.init(v["params"]), jax.random.PRNGKey(0)
        )

    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), jax.eval_shape(fresh))
    shapes = train.input_shapes(cfg, batch, cfg.data.train_crop_size)
    leaf = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=data)  # noqa: E731
    out = {f"pathway{i}": leaf(s, np.float32) for i, s in enumerate(shapes)}
    out["label"] = leaf((batch,), np.int32)
    m = cfg.model
    if m.ego_classes:
        out["ego_target"] = leaf((batch, m.ego_classes), np.float32)
    if m.object_classes:
        out["object_target"] = leaf((batch, m.object_classes), np.float32)
    if m.interaction_head:
        outs = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=False),
            {"params": state.params, "batch_stats": state.batch_stats},
            [jax.ShapeDtypeStruct(s, np.float32) for s in shapes],
        )
        out["interaction_target"] = leaf(outs["interaction_logits"].shape, np.float32)
    return state, out


def _abstract_eval_args(cfg, state, mesh, batch: int):
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from egoexo_jax import sharding, train  # noqa: PLC0415

    data = sharding.data_sharded(mesh)
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    shapes = train.input_shapes(cfg, batch, cfg.data.test_crop_size)
    views = {f"pathway{i}": jax.ShapeDtypeStruct(s, np.float32, sharding=data) for i, s in enumerate(shapes)}
    views.update(
        video_index=jax.ShapeDtypeStruct((batch,), np.int32, sharding=data),
        view_index=jax.ShapeDtypeStruct((batch,), np.int32, sharding=data),
        mask=jax.ShapeDtypeStruct((batch,), np.float32, sharding=data),
    )
    return variables, views


PARTIAL_REWRITES = ("stem", "bn")


@contextlib.contextmanager
def only_rewrite(which: str):
    """With ``which`` = ``stem`` or ``bn``, ``ops.select`` keeps only that one of the two rewrites
    while compiling (the model and the host-fold decision both ask it); otherwise unchanged."""
    from egoexo_jax import ops  # noqa: PLC0415

    if which not in PARTIAL_REWRITES:
        yield
        return
    select = ops.select

    def partial(*a, **k):
        chosen = select(*a, **k)
        if which == "stem":
            return dataclasses.replace(chosen, group_batch_norm=ops.XLA.group_batch_norm)
        return dataclasses.replace(chosen, space_to_depth=False)

    ops.select = partial
    try:
        yield
    finally:
        ops.select = select


def compile_step(cfg, mesh, which: str, per_chip: int, compiler_options: dict):
    """Compiles the train or eval step of ``cfg`` on ``mesh``; returns ``(compiled, seconds)``."""
    import jax  # noqa: PLC0415

    from egoexo_jax import evaluate, models, optim, train  # noqa: PLC0415

    chips = mesh.devices.size
    model = models.build(train.model_config(cfg))
    params = jax.eval_shape(lambda: train.init_variables(model, cfg, 0))["params"]
    tx = optim.make_optimizer(cfg, 100, params)
    state, batch = _abstract_train_args(cfg, model, tx, mesh, per_chip * chips)
    t0 = time.perf_counter()
    if which == "train":
        step = train.make_config_train_step(cfg, mesh, model=model, tx=tx, schedule=optim.make_schedule(cfg, 100))
        lowered = step.lower(state, batch, {})
    else:
        step = evaluate.make_eval_step(mesh, model=model, arch=cfg.model.arch)
        lowered = step.lower(*_abstract_eval_args(cfg, state, mesh, per_chip * chips))
    compiled = lowered.compile(compiler_options or None)
    return compiled, time.perf_counter() - t0


def measure(compiled, chip: dict, clips_per_chip: int, top: int = 0) -> dict:
    """Per-chip estimated time, HBM-only bytes, cost, memory and roofline numbers of one compiled
    step (``top``: also the ``top`` instructions by estimated time)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    flops, hbm = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    compute_s = flops / (chip["peak_tflops"] * 1e12)
    memory_s = hbm / (chip["hbm_gbps"] * 1e9)
    bound = max(compute_s, memory_s)
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    est = hlo_cost.estimate(compiled.as_text(), clock_hz(chip), chip["hbm_gbps"] * 1e9, top=top)
    return {
        "estimated_s": est["estimated_s"],
        "estimated_clips_per_s": clips_per_chip / est["estimated_s"] if est["estimated_s"] else 0.0,
        "estimated_by_region": est["estimated_by_region"],
        "control_flow": est["control_flow"],
        "unestimated": est["unestimated"],
        "hbm_only_bytes": est["hbm_only_bytes"],
        **({"top_estimated": est["top_estimated"]} if top else {}),
        "xla_flops": flops,
        "hbm_bytes": hbm,
        "argument_bytes": mem.argument_size_in_bytes,
        "output_bytes": mem.output_size_in_bytes,
        "alias_bytes": mem.alias_size_in_bytes,
        "temp_bytes": mem.temp_size_in_bytes,
        "peak_bytes": peak,
        "fits_hbm": peak <= chip["hbm_gib"] * 2**30,
        "compute_s": compute_s,
        "memory_s": memory_s,
        "bound_s": bound,
        "compute_share": compute_s / bound if bound else 0.0,
        "bound_clips_per_s": clips_per_chip / bound if bound else 0.0,
    }


def _fits(cfg, mesh, chip: dict, per_chip: int, compiler_options: dict) -> Optional[float]:
    """Peak bytes per chip of the train step at ``per_chip`` clips, or None when libtpu refuses to
    compile it for lack of HBM (``RESOURCE_EXHAUSTED``)."""
    try:
        compiled, _ = compile_step(cfg, mesh, "train", per_chip, compiler_options)
    except Exception as e:  # noqa: BLE001  (jax.errors.JaxRuntimeError; other errors re-raised)
        if "RESOURCE_EXHAUSTED" in str(e):
            return None
        raise
    return measure(compiled, chip, per_chip)["peak_bytes"]


def max_batch(cfg_of, mesh, chip: dict, per_chip: int, group: int, compiler_options: dict) -> dict:
    """Largest per-chip train batch (a multiple of ``group``) that compiles within the chip's HBM.

    XLA:TPU rematerialises to stay inside HBM, so peak memory is not linear in the batch: the batch
    doubles from ``per_chip`` until a compile runs out of memory, then the last interval is bisected.
    ``checked`` maps each compiled batch to its peak bytes (None: out of memory)."""
    limit = chip["hbm_gib"] * 2**30
    checked: Dict[int, Optional[float]] = {}

    def fits(b: int) -> bool:
        checked[b] = _fits(cfg_of(b), mesh, chip, b, compiler_options)
        print(
            f"  {b} clips/chip: " + ("out of HBM" if checked[b] is None else f"peak {checked[b] / 2**30:.2f} GiB"),
            flush=True,
        )
        return checked[b] is not None and checked[b] <= limit

    lo, b = 0, max(group, per_chip // group * group)
    while fits(b):
        lo, b = b, 2 * b
    hi = b
    while hi - lo > group:
        mid = (lo + hi) // 2 // group * group
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return {"max_batch_per_chip": lo, "checked": checked}


def run(args) -> dict:
    import jax  # noqa: PLC0415

    chip = chip_of(args.topology)
    mesh = tpu_mesh(args.topology)
    chips = mesh.devices.size
    options = dict(f.split("=", 1) for f in args.xla_flag)
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    rewrites = [r.strip() for r in args.rewrites.split(",") if r.strip()]
    for r in rewrites:
        if r not in ("on", "off", *PARTIAL_REWRITES):
            raise SystemExit(f"error: --rewrites={args.rewrites}: expected a comma list of on, off, stem, bn")
    which_steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    result = {
        "benchmark": "tpu_compile",
        "topology": args.topology,
        "chips": chips,
        "chip": chip,
        "dtype": args.dtype,
        "compiler_options": options,
        "machine": common.machine(),
        "rows": [],
    }
    print(
        f"compiling for {args.topology}: {chips} x {jax.devices()[0].platform} host -> "
        f"{mesh.devices.flat[0].device_kind}",
        flush=True,
    )
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model not in common.MODELS:
            raise SystemExit(f"error: unknown model {model!r}; expected one of {common.MODELS}")
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            per_chip = args.batch_per_chip or RECIPE_BATCH[model]
            for k, rw, which in [(k, rw, w) for k in kernels for rw in rewrites for w in which_steps]:
                b = per_chip if which == "train" else EVAL_BATCH
                cfg = row_config(model, size, k, args.dtype, b * chips, args.remat, rw)
                crop = cfg.data.train_crop_size if which == "train" else cfg.data.test_crop_size
                with only_rewrite(rw):
                    compiled, seconds = compile_step(cfg, mesh, which, b, options)
                row = {
                    "model": model,
                    "size": size,
                    "kernels": k,
                    "rewrites": rw,
                    "remat": cfg.model.remat,
                    "step": which,
                    "batch_per_chip": b,
                    "frames": cfg.data.num_frames,
                    "crop": crop,
                    "compile_s": round(seconds, 1),
                    **measure(compiled, chip, b, args.top_ops),
                }
                passes = 3 if which == "train" else 1
                row["model_flops"] = passes * b * model_forward_flops_per_clip(cfg, crop)
                row["model_over_xla_flops"] = row["model_flops"] / row["xla_flops"] if row["xla_flops"] else 0.0
                row["estimated_mfu"] = row["model_flops"] / row["estimated_s"] / (chip["peak_tflops"] * 1e12)
                if args.dump_hlo:
                    os.makedirs(args.dump_hlo, exist_ok=True)
                    name = f"{model}_{size}_{k}_{rw}_{cfg.model.remat}_{which}.hlo.txt"
                    with open(os.path.join(args.dump_hlo, name), "w", encoding="utf-8") as f:
                        f.write(compiled.as_text())
                _report(row, chip)
                result["rows"].append(row)
                if args.out:
                    with open(args.out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
            if args.max_batch:
                group = int(row_config(model, size, kernels[0], args.dtype, per_chip).model.bn_group_size or 1)
                mb = max_batch(
                    lambda b, model=model, size=size: row_config(
                        model, size, kernels[0], args.dtype, b * chips, args.remat, rewrites[0]
                    ),
                    mesh,
                    chip,
                    per_chip,
                    max(group, 1) if model != "mvit_v2_s" else 1,
                    options,
                )
                mb.update(model=model, size=size, kernels=kernels[0])
                print(f"  largest per-chip batch in {chip['hbm_gib']:g} GiB: {mb['max_batch_per_chip']}", flush=True)
                result.setdefault("max_batch", []).append(mb)
    return result


def _report(row: dict, chip: dict) -> None:
    gib = 2**30
    regions = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in row["estimated_by_region"].items())
    print(
        f"[{row['model']} {row['size']} kernels={row['kernels']} rewrites={row['rewrites']} {row['step']}] "
        f"{row['batch_per_chip']} clips/chip, compile {row['compile_s']:.0f} s: "
        f"estimated {row['estimated_s'] * 1e3:.2f} ms "
        f"({regions} ms) = {row['estimated_clips_per_s']:.0f} clips/s/chip, MFU {row['estimated_mfu']:.3f}; "
        f"HBM-only {row['hbm_only_bytes'] / 1e9:.2f} GB (bytes accessed {row['hbm_bytes'] / 1e9:.2f} GB); "
        f"{row['xla_flops'] / 1e12:.3f} TFLOP; args {row['argument_bytes'] / gib:.2f} GiB + temp "
        f"{row['temp_bytes'] / gib:.2f} GiB (peak {row['peak_bytes'] / gib:.2f} of {chip['hbm_gib']:g} GiB); "
        f"roofline {row['bound_s'] * 1e3:.1f} ms",
        flush=True,
    )
    if row["control_flow"]:
        print(f"    warning: {row['control_flow']} while / call / conditional: their bodies are not in the estimate")
    for op, u in row["unestimated"].items():
        if u["hbm_bytes"] > 1e6:
            print(f"    not estimated: {u['count']} x {op}, {u['hbm_bytes'] / 1e6:.0f} MB HBM", flush=True)
    for r in row.get("top_estimated", []):
        print(
            f"    {r['estimated_s'] * 1e3:7.3f} ms {100 * r['share']:5.1f}%  {r['pass']:<8} {r['layer']:<36} "
            f"{r['op_name']:<24} {r['result']}",
            flush=True,
        )


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = run(args)
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
