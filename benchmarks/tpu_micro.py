"""One layer's train-step gradient compiled for a TPU slice, in several exact forms (prints JSON).

A whole-model TPU compile takes 5-25 minutes on a small host; the candidates for an exact rewrite
are compared here on the layer they change, in seconds to a minute each: the gradient (weights,
BatchNorm scale and bias; not the input, as in the first layer of a model) of
``sum(layer(x)**2)`` on a ``Mesh`` over the slice's chips, batch split over them, read through
XLA:TPU's own cost model (``hlo_cost.estimate``: summed ``estimated_cycles``, HBM-only bytes, and
the HBM bytes of instructions it does not estimate).

- ``--layer stem``: a SlowFast fast (or ``--pathway slow``) stem: convolution, training BatchNorm
  over 8-clip groups, ReLU, max-pool. Variants: ``plain``; ``bf16-input`` (the host sends bfloat16);
  ``s2d`` (space-to-depth stem, folded on device); ``s2d-host-fold`` (input folded on the host);
  ``s2d-host-fold-bf16``; ``s2d-one-pass-bn`` (the shipped ``model.rewrites=on`` form);
  ``s2d-one-pass-bn-slice-pool`` (the max-pool by strided slices with a first-maximum gradient).
- ``--layer bn``: training BatchNorm + ReLU of a ``--shape`` activation. Variants: ``two-pass``,
  ``one-pass-sliced-shift`` (shift = each group's first value), ``one-pass-no-shift``,
  ``one-pass-running-mean`` (the shipped form).

    python benchmarks/tpu_micro.py --layer stem --crop 112
    python benchmarks/tpu_micro.py --layer bn --shape 32,32,112,112,8
"""

from __future__ import annotations

import argparse
import json
import os
import time

import common
import hlo_cost
import tpu_compile  # also sets JAX_PLATFORMS=cpu and ALLOW_MULTIPLE_LIBTPU_LOAD for the compiler

STEMS = {"fast": {"frames": 32, "features": 8, "kt": 5}, "slow": {"frames": 8, "features": 64, "kt": 1}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", default="v5e:2x2")
    p.add_argument("--layer", choices=("stem", "bn"), default="stem")
    p.add_argument("--pathway", choices=tuple(STEMS), default="fast")
    p.add_argument("--crop", type=int, default=224, help="stem input crop")
    p.add_argument("--batch-per-chip", type=int, default=8)
    p.add_argument("--shape", default="32,32,112,112,8", help="bn: activation shape [B,T,H,W,C] (B over all chips)")
    p.add_argument("--variants", default="", help="comma list (default: all of the layer's)")
    return p.parse_args(argv)


def _bn_variants():
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from egoexo_jax.ops import xla  # noqa: PLC0415

    def no_shift(x, scale, bias, eps, shift):
        return xla.group_batch_norm_one_pass(x, scale, bias, eps, jnp.zeros_like(shift))

    return {
        "two-pass": xla.group_batch_norm,
        "one-pass-sliced-shift": lambda x, scale, bias, eps, shift: xla.group_batch_norm_one_pass(x, scale, bias, eps),
        "one-pass-no-shift": no_shift,
        "one-pass-running-mean": lambda x, scale, bias, eps, shift: xla.group_batch_norm_one_pass(
            x, scale, bias, eps, jax.lax.stop_gradient(shift)
        ),
    }


def _stem_variants():
    from egoexo_jax.ops import cpu_pool, space_to_depth, xla  # noqa: PLC0415

    plain = lambda x, w: xla.conv3d(x, w, (1, 2, 2))  # noqa: E731
    # name -> (conv, BatchNorm, pool, input folded on the host, input dtype)
    return {
        "plain": (plain, xla.group_batch_norm, xla.stem_max_pool, False, "float32"),
        "bf16-input": (plain, xla.group_batch_norm, xla.stem_max_pool, False, "bfloat16"),
        "s2d": (space_to_depth.stem_conv, xla.group_batch_norm, xla.stem_max_pool, False, "float32"),
        "s2d-host-fold": (space_to_depth.stem_conv, xla.group_batch_norm, xla.stem_max_pool, True, "float32"),
        "s2d-host-fold-bf16": (space_to_depth.stem_conv, xla.group_batch_norm, xla.stem_max_pool, True, "bfloat16"),
        "s2d-one-pass-bn": (
            space_to_depth.stem_conv,
            xla.group_batch_norm_one_pass,
            xla.stem_max_pool,
            True,
            "float32",
        ),
        "s2d-one-pass-bn-slice-pool": (
            space_to_depth.stem_conv,
            xla.group_batch_norm_one_pass,
            cpu_pool.stem_max_pool,
            True,
            "float32",
        ),
    }


def _norm_relu(bn, y, scale, bias, shift):
    """BatchNorm over 8-clip groups (float32 statistics) + ReLU, back in bfloat16."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    g = y.astype(jnp.float32).reshape((y.shape[0] // 8, 8) + y.shape[1:])
    out, _, _ = bn(g, scale, bias, 1e-5, shift)
    return jax.nn.relu(out.reshape(y.shape)).astype(jnp.bfloat16)


def compile_variant(args, mesh, name: str):
    """Compiles the gradient of one variant; returns ``(compiled, seconds)``."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

    from egoexo_jax.ops import space_to_depth  # noqa: PLC0415

    rep, data = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
    if args.layer == "bn":
        bn = _bn_variants()[name]
        shape = tuple(int(v) for v in args.shape.split(","))

        def layer(x, scale, bias, shift):
            return _norm_relu(bn, x, scale, bias, shift)

        x = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=data)
        argnums = (0, 1, 2)
        params = [jax.ShapeDtypeStruct(shape[-1:], jnp.float32, sharding=rep) for _ in range(3)]
    else:
        conv, bn, pool, host_fold, dtype = _stem_variants()[name]
        stem = STEMS[args.pathway]
        frames = (args.batch_per_chip * mesh.devices.size, stem["frames"], args.crop, args.crop, 3)
        shape = space_to_depth.folded_shape(frames) if host_fold else frames

        def layer(x, w, scale, bias, shift):
            y = conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
            return pool(_norm_relu(bn, y, scale, bias, shift))

        x = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=data)
        o = stem["features"]
        argnums = (1, 2, 3)
        params = [jax.ShapeDtypeStruct((stem["kt"], 7, 7, 3, o), jnp.float32, sharding=rep)]
        params += [jax.ShapeDtypeStruct((o,), jnp.float32, sharding=rep) for _ in range(3)]
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(layer(*a).astype(jnp.float32) ** 2), argnums=argnums))
    t0 = time.perf_counter()
    compiled = grad.lower(x, *params).compile()
    return compiled, time.perf_counter() - t0


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    chip = tpu_compile.chip_of(args.topology)
    mesh = tpu_compile.tpu_mesh(args.topology)
    names = list(_bn_variants() if args.layer == "bn" else _stem_variants())
    if args.variants:
        unknown = sorted(set(args.variants.split(",")) - set(names))
        if unknown:
            raise SystemExit(f"error: --variants: unknown {unknown}; expected some of {names}")
        names = args.variants.split(",")
    rows = []
    for name in names:
        compiled, seconds = compile_variant(args, mesh, name)
        est = hlo_cost.estimate(compiled.as_text(), tpu_compile.clock_hz(chip), chip["hbm_gbps"] * 1e9)
        unest = sum(u["hbm_bytes"] for u in est["unestimated"].values())
        row = {
            "variant": name,
            "estimated_s": est["estimated_s"],
            "hbm_only_bytes": est["hbm_only_bytes"],
            "unestimated_hbm_bytes": unest,
            "compile_s": round(seconds, 1),
        }
        rows.append(row)
        print(
            f"{name:28s} estimated {row['estimated_s'] * 1e3:8.3f} ms, HBM-only {row['hbm_only_bytes'] / 1e9:6.2f} GB, "
            f"not estimated {unest / 1e6:.0f} MB (compile {seconds:.0f} s)",
            flush=True,
        )
    result = {"benchmark": "tpu_micro", "args": vars(args), "machine": common.machine(), "rows": rows}
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
