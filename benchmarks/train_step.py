"""Train-step throughput, JAX vs a PyTorch reference, side by side in one process (prints JSON).

For each model (SlowFast R50, Slow R50, MViT-v2-S), size (``reduced``: the full architecture on
short small clips that a 2-core CPU can step; ``full``: the recipe's 32x224² / 8x224² / 16x224²
clips) and Ego-Exo setting (heads + distillation losses on / off), it builds

- JAX: the recipe config (``configs/pretrain.py``) at that size, ``egoexo_jax.models.build``,
  ``train.create_train_state`` and the real jitted, state-donating ``train.make_train_step``
  with ``optim.make_optimizer`` (SGD Nesterov for the ResNets, AdamW + clipping for MViT), fed
  a batch with the offline teacher targets (ego / object logits, interaction maps);
- torch: ``benchmarks/torch_reference.py``'s twin of the same architecture, optimiser, losses,
  batch and shapes, ``torch.set_num_threads(<cores>)``;

then measures the JAX compile time (trace + lower + XLA compile) and first step, warms both up, and
times ``--steps`` steps per side (``block_until_ready`` / ``.item()``) in blocks of ``--block``
consecutive steps, the sides taking turns, so both see the same machine load (alternating every
single step, ``--block 1``, slows both sides: BENCHMARKS.md). ``--kernels`` runs the JAX side with
each ``model.kernels`` setting (``auto`` picks the XLA:CPU routes on CPU, plain XLA on GPU).
Reports clips/s (median step time), ``speedup`` = JAX clips/s / torch clips/s, peak memory (host
RSS rise while building + compiling + warming up each side; on GPU the devices' peak allocations),
counted FLOPs of the JAX step (XLA ``cost_analysis``) and the model FLOPs utilisation against
``--peak-tflops``.

The last line of output is one JSON object; ``<model>_speedup`` is the first size given in
``--sizes`` with the Ego-Exo heads on; every run is also under ``runs`` and
``<model>_<size>_<heads|noheads>_speedup``.

    python benchmarks/train_step.py --device cpu --sizes reduced --steps 8
    python benchmarks/train_step.py --models slowfast_r50 --sizes full --steps 2 --heads on
    python benchmarks/train_step.py --dry-run            # tiny sizes, 2 steps, the whole path
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from egoexo_jax import hostenv

import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--models", default=",".join(common.MODELS))
    p.add_argument("--sizes", default="reduced", help="comma list of reduced, full (dry: --dry-run)")
    p.add_argument("--heads", default="on,off", help="Ego-Exo heads + losses: on, off or on,off")
    p.add_argument(
        "--kernels",
        default="auto",
        help="model.kernels settings, comma list of auto, xla, cpu (egoexo_jax.ops); the torch "
        "reference runs with the first and its clips/s is reused for the others",
    )
    p.add_argument("--steps", type=int, default=6, help="timed steps per side")
    p.add_argument(
        "--block",
        type=int,
        default=3,
        help="consecutive timed steps of one side before the other side's turn (1: alternate "
        "every step, which slows both sides, JAX more: BENCHMARKS.md)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side after the first")
    p.add_argument("--batch", type=int, default=0, help="override the per-size default batch")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="device peak (dense, the --dtype) for MFU; default 989 on gpu (H100/H200 SXM bf16), none on cpu",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument(
        "--compile-only", action="store_true", help="JAX init + compile time and memory only (no steps, no torch)"
    )
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, 2 steps: checks the path")
    args = p.parse_args(argv)
    if args.block < 1:
        p.error("--block must be >= 1")
    if args.dry_run:
        args.sizes, args.steps, args.warmup = "dry", min(args.steps, 2), 0
    if not args.peak_tflops and args.device == "gpu":
        args.peak_tflops = 989.0
    return args


def setup_platform(device: str) -> None:
    """Environment that must be set before jax is imported."""
    if device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def synthetic_batch(model, cfg, batch: int, rng):
    """Numpy batch in the pipeline's layout: pathways, labels, offline teacher targets."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from egoexo_jax import train  # noqa: PLC0415

    shapes = train.input_shapes(cfg, batch, cfg.data.train_crop_size)
    out = {f"pathway{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    classes = cfg.model.num_classes[0] if isinstance(cfg.model.num_classes, (tuple, list)) else cfg.model.num_classes
    out["label"] = rng.integers(0, classes, batch).astype(np.int32)
    if cfg.model.ego_classes:
        out["ego_target"] = rng.normal(size=(batch, cfg.model.ego_classes)).astype(np.float32)
    if cfg.model.object_classes:
        out["object_target"] = rng.normal(size=(batch, cfg.model.object_classes)).astype(np.float32)
    if cfg.model.interaction_head:
        variables = jax.eval_shape(lambda: train.init_variables(model, cfg, 0))
        outs = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=False),
            variables,
            [jax.ShapeDtypeStruct(s, np.float32) for s in shapes],
        )
        out["interaction_target"] = rng.uniform(size=outs["interaction_logits"].shape).astype(np.float32)
    return out


def jax_side(cfg, np_batch, device: str, compile_only: bool = False):
    """(compiled step, state, device batch, timings/memory dict) for the repo's real train step."""
    import jax  # noqa: PLC0415

    from egoexo_jax import models, optim, sharding, train  # noqa: PLC0415

    info = {}
    with common.PeakRSS() as mem:
        mesh = sharding.make_mesh(1)
        model = models.build(train.model_config(cfg))
        params = jax.eval_shape(lambda: train.init_variables(model, cfg, 0))["params"]
        tx = optim.make_optimizer(cfg, 100, params)
        t0 = time.perf_counter()
        state, _ = train.create_train_state(cfg, model, tx, mesh)
        jax.block_until_ready(state)
        info["init_s"] = time.perf_counter() - t0
        step = train.make_config_train_step(cfg, mesh, model=model, tx=tx, schedule=optim.make_schedule(cfg, 100))
        batch = sharding.global_batch(np_batch, mesh)
        t0 = time.perf_counter()
        compiled = step.lower(state, batch, {}).compile()
        info["compile_s"] = time.perf_counter() - t0
        if not compile_only:
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch, {})
            jax.block_until_ready(metrics)
            info["first_step_s"] = time.perf_counter() - t0
            info["loss"] = float(metrics["loss"])
    info["host_rss_peak_mb"], info["host_rss_delta_mb"] = mem.peak_mb, mem.delta_mb
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    info["flops_per_step"] = float(cost.get("flops", 0.0)) if cost else 0.0
    info["num_params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
    return compiled, state, batch, info


def torch_side(torch, cfg, np_batch, device: str, dtype: str):
    import torch_reference as ref  # noqa: PLC0415

    dev = "cuda" if device == "gpu" else "cpu"
    info = {}
    with common.PeakRSS() as mem:
        torch.manual_seed(0)
        model = ref.build_model(cfg.model).to(dev)
        o = cfg.optimizer
        opt = ref.make_optimizer(model, o, lr=o.base_lr * cfg.batch_size / o.reference_batch_size)
        weights = {k: float(v) for k, v in cfg.loss.items()}
        autocast = torch.bfloat16 if dtype == "bfloat16" else None
        step = ref.make_train_step(model, opt, weights, grad_clip=o.grad_clip_norm, autocast_dtype=autocast, device=dev)
        inputs, batch = ref.to_torch_batch(np_batch, cfg.model.arch, dev)
        t0 = time.perf_counter()
        loss = step(inputs, batch)
        loss.item()
        info["first_step_s"] = time.perf_counter() - t0
        info["loss"] = float(loss)
    info["host_rss_peak_mb"], info["host_rss_delta_mb"] = mem.peak_mb, mem.delta_mb
    info["num_params"] = ref.num_params(model)
    return step, inputs, batch, info


def _sync_torch(torch, device):
    if device == "gpu":
        torch.cuda.synchronize()


def run_one(
    name: str, size: str, heads: bool, args, torch, kernels: str = "auto", torch_reference: dict | None = None
) -> dict:
    """One row; ``torch_reference``: the torch record of the same model, size and heads measured in
    an earlier row (another kernel setting), reused instead of timing torch again."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    cfg = common.experiment_config(
        name, size, heads=heads, dtype=args.dtype, batch=args.batch or None, device=args.device
    )
    cfg.model.kernels = kernels
    if torch_reference is not None:
        torch = None
    b = cfg.batch_size
    rng = np.random.default_rng(0)
    from egoexo_jax import models, train  # noqa: PLC0415

    np_batch = synthetic_batch(models.build(train.model_config(cfg)), cfg, b, rng)
    from egoexo_jax import ops  # noqa: PLC0415

    rec = {
        "model": name,
        "size": size,
        "heads": heads,
        "kernels": ops.resolve_kernels(kernels),
        "batch": b,
        "frames": cfg.data.num_frames,
        "crop": cfg.data.train_crop_size,
        "dtype": args.dtype,
    }
    print(
        f"[{name} {size} heads={'on' if heads else 'off'} kernels={rec['kernels']}] batch {b}, "
        f"{cfg.data.num_frames} frames, crop {cfg.data.train_crop_size}",
        flush=True,
    )

    if args.device == "gpu":
        for d in jax.local_devices():
            try:
                d.reset_memory_stats() if hasattr(d, "reset_memory_stats") else None
            except Exception:  # noqa: BLE001  pragma: no cover
                pass
    jstep, state, jbatch, jinfo = jax_side(cfg, np_batch, args.device, args.compile_only)
    rec["jax"] = jinfo
    print(
        f"  jax: init {jinfo['init_s']:.1f} s, compile {jinfo['compile_s']:.1f} s, first step "
        f"{jinfo.get('first_step_s', float('nan')):.2f} s, rss peak {jinfo['host_rss_peak_mb']:.0f} MB "
        f"(+{jinfo['host_rss_delta_mb']:.0f} MB)",
        flush=True,
    )
    if args.device == "gpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        jinfo["device_peak_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20
    if args.compile_only:
        rec["speedup"] = None
        rec["loadavg_1min"] = common.loadavg()[:1]
        return rec

    tstep = None
    if torch is not None:
        if args.device == "gpu":
            torch.cuda.reset_peak_memory_stats()
        tstep, tin, tbatch, tinfo = torch_side(torch, cfg, np_batch, args.device, args.dtype)
        rec["torch"] = tinfo
        print(
            f"  torch: first step {tinfo['first_step_s']:.2f} s, rss +{tinfo['host_rss_delta_mb']:.0f} MB", flush=True
        )

    # Warm-up (untimed), then blocks of --block timed steps per side, the sides taking turns.
    for _ in range(args.warmup):
        state, m = jstep(state, jbatch, {})
        jax.block_until_ready(m)
        if tstep is not None:
            tstep(tin, tbatch).item()
    jt, tt = [], []
    load = []
    while len(jt) < args.steps:
        for _ in range(min(args.block, args.steps - len(jt))):
            t0 = time.perf_counter()
            state, m = jstep(state, jbatch, {})
            jax.block_until_ready(m)
            jt.append(time.perf_counter() - t0)
        while tstep is not None and len(tt) < len(jt):
            t0 = time.perf_counter()
            loss = tstep(tin, tbatch)
            _sync_torch(torch, args.device)
            loss.item()
            tt.append(time.perf_counter() - t0)
        load.append(common.loadavg()[:1])
    jinfo["step_s"] = [round(x, 4) for x in jt]
    jinfo["median_step_s"] = statistics.median(jt)
    jinfo["clips_per_s"] = b / jinfo["median_step_s"]
    jinfo["final_loss"] = float(m["loss"])
    if args.device == "gpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        jinfo["device_peak_mb"] = max(jinfo.get("device_peak_mb", 0.0), stats.get("peak_bytes_in_use", 0) / 2**20)
    if jinfo["flops_per_step"]:
        jinfo["achieved_tflops"] = jinfo["flops_per_step"] / jinfo["median_step_s"] / 1e12
        if args.peak_tflops:
            jinfo["mfu"] = jinfo["achieved_tflops"] / args.peak_tflops
    if tstep is not None:
        tinfo = rec["torch"]
        tinfo["step_s"] = [round(x, 4) for x in tt]
        tinfo["median_step_s"] = statistics.median(tt)
        tinfo["clips_per_s"] = b / tinfo["median_step_s"]
        if args.device == "gpu":
            tinfo["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if jinfo["flops_per_step"] and args.peak_tflops:
            # Same model FLOPs (XLA's count of the JAX step) over torch's step time.
            tinfo["mfu"] = jinfo["flops_per_step"] / tinfo["median_step_s"] / 1e12 / args.peak_tflops
        rec["speedup"] = jinfo["clips_per_s"] / tinfo["clips_per_s"]
        print(
            f"  clips/s jax {jinfo['clips_per_s']:.2f} torch {tinfo['clips_per_s']:.2f} speedup {rec['speedup']:.2f}",
            flush=True,
        )
    elif torch_reference is not None:
        rec["torch"] = dict(torch_reference, reused_from_kernels=torch_reference.get("kernels"))
        rec["speedup"] = jinfo["clips_per_s"] / torch_reference["clips_per_s"]
        print(
            f"  clips/s jax {jinfo['clips_per_s']:.2f} torch {torch_reference['clips_per_s']:.2f} (measured with "
            f"kernels={torch_reference.get('kernels')}) speedup {rec['speedup']:.2f}",
            flush=True,
        )
    else:
        rec["speedup"] = None
        print(f"  clips/s jax {jinfo['clips_per_s']:.2f} (no torch reference)", flush=True)
    rec["loadavg_1min"] = [x[0] for x in load if x]
    del state, jstep
    return rec


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_platform(args.device)
    torch = common.import_torch(args.no_torch)
    if torch is not None:
        if args.device == "cpu":
            torch.set_num_threads(common.num_cpus())
        else:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    import jax  # noqa: F401,PLC0415

    result = {
        "benchmark": "train_step",
        "device": args.device,
        "dtype": args.dtype,
        "steps": args.steps,
        "block": args.block,
        "peak_tflops": args.peak_tflops or None,
        "machine": common.machine(torch),
        "torch_threads": torch.get_num_threads() if torch else None,
        "runs": [],
    }
    heads = [h.strip() == "on" for h in args.heads.split(",") if h.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    kernel_settings = [k.strip() for k in args.kernels.split(",") if k.strip()]
    for name in models:
        if name not in common.MODELS:
            raise SystemExit(f"unknown model {name!r}; expected one of {common.MODELS}")
        for size in sizes:
            for h in heads:
                reference = None
                for i, kernels in enumerate(kernel_settings):
                    rec = run_one(name, size, h, args, torch, kernels, reference)
                    if i == 0 and "torch" in rec:
                        reference = dict(rec["torch"], kernels=rec["kernels"])
                    result["runs"].append(rec)
                    key = f"{name}_{size}_{'heads' if h else 'noheads'}"
                    result[f"{key}_{rec['kernels']}_speedup"] = rec["speedup"]
                    if i > 0:
                        continue
                    result[f"{key}_speedup"] = rec["speedup"]
                    result[f"{key}_compile_s"] = rec["jax"]["compile_s"]
                if f"{name}_speedup" not in result:
                    rec = result["runs"][-len(kernel_settings)]
                    result[f"{name}_speedup"] = rec["speedup"]
                    result[f"{name}_compile_s"] = rec["jax"]["compile_s"]
                    if "mfu" in rec["jax"]:
                        result[f"{name}_mfu"] = rec["jax"]["mfu"]
    result["machine"]["loadavg_end"] = common.loadavg()
    result["peak_rss_mb"] = _max_rss_mb()
    print(json.dumps(result, default=_round))
    return result


def _max_rss_mb() -> float:
    import resource  # noqa: PLC0415

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _round(x):
    return float(x)


if __name__ == "__main__":
    hostenv.prepare_process()
    main()
