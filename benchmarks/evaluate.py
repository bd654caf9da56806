"""30-view evaluation throughput (videos/s) on decoded synthetic videos held in memory (prints JSON).

Each video is a random ``uint8 [T, H, W, 3]`` array (already decoded, so no codec time). Per video
the benchmark assembles PySlowFast's test views with the repo's own transforms --
``transforms.kinetics_clip_indices`` (10 temporal clips), ``transforms.test_spatial`` (3 crops
along the long side at the test scale), ``transforms.spatial_transform`` (resize + crop +
normalise) and ``transforms.pack_pathways`` -- runs them through the jitted
``evaluate.make_eval_step`` in batches of ``--views-per-batch`` views, and sum-ensembles the
per-view probabilities per video (as ``evaluate.collect_view_scores`` does). View assembly of the
next batch overlaps with the device computing the current one (JAX dispatch is asynchronous).

Reports videos/s and views/s over ``--videos`` videos after one warm-up batch, the compile time of
the eval step and the share of host time spent assembling views.

    python benchmarks/evaluate.py --model slowfast_r50 --size reduced --videos 6
    python benchmarks/evaluate.py --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import time

from egoexo_jax import hostenv

import common

# Decoded-video geometry per size: frames, height, width (short side = the test scale), test crop.
VIDEOS = {
    "full": dict(frames=300, height=256, width=340, crop=256),
    "reduced": dict(frames=150, height=112, width=149, crop=96),
    "dry": dict(frames=40, height=36, width=48, crop=32),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--model", default="slowfast_r50", choices=common.MODELS)
    p.add_argument("--size", default="reduced", choices=("reduced", "full"))
    p.add_argument(
        "--heads",
        choices=("on", "off"),
        default="off",
        help="Ego-Exo heads in the evaluated model (off: a fine-tuned classifier)",
    )
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--temporal", type=int, default=10, help="temporal clips per video")
    p.add_argument("--spatial", type=int, default=3, help="spatial crops per clip")
    p.add_argument("--views-per-batch", type=int, default=0, help="default: one video's views (30)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--dry-run", action="store_true", help="tiny model and videos, 2 videos")
    args = p.parse_args(argv)
    if args.dry_run:
        args.size, args.videos = "dry", min(args.videos, 2)
    return args


def assemble(video, cfg, clip_spatial):
    """The pathways of the given (clip, crop) views of one decoded video: list of ``[V, ...]``."""
    import numpy as np  # noqa: PLC0415

    from egoexo_jax.data import transforms  # noqa: PLC0415

    d = cfg.data
    t, h, w, _ = video.shape
    crop = d.test_crop_size
    paths = None
    arch = cfg.model.arch if cfg.model.arch != "mvit" else "mvit"
    for k, s in clip_spatial:
        idx = transforms.kinetics_clip_indices(
            t,
            num_frames=d.num_frames,
            sampling_rate=d.sampling_rate,
            fps=30.0,
            clip_idx=k,
            num_clips=d.num_ensemble_views,
        )
        params = transforms.test_spatial(h, w, spatial_idx=s, scale=crop, crop_size=crop)
        frames = transforms.spatial_transform(video[idx], params, mean=d.mean, std=d.std)
        packed = transforms.pack_pathways(frames, arch=arch, alpha=cfg.model.alpha)
        if paths is None:
            paths = [[] for _ in packed]
        for acc, x in zip(paths, packed):
            acc.append(x)
    return [np.stack(p) for p in paths]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from egoexo_jax import evaluate, models, sharding, train  # noqa: PLC0415

    size = args.size
    cfg = common.experiment_config(args.model, size, heads=args.heads == "on", dtype=args.dtype, device=args.device)
    geo = VIDEOS[size]
    if args.model == "mvit_v2_s":
        geo = dict(geo, crop=cfg.data.train_crop_size)  # MViT tests at its training crop
    cfg.data.update(test_crop_size=geo["crop"], num_ensemble_views=args.temporal, num_spatial_crops=args.spatial)
    views = args.temporal * args.spatial
    per_batch = args.views_per_batch or views
    mesh = sharding.make_mesh(1)
    model = models.build(train.model_config(cfg))
    variables = sharding.replicate(train.init_variables(model, cfg, 0), mesh)
    eval_fn = evaluate.make_eval_step(mesh, model=model, arch=cfg.model.arch)

    rng = np.random.default_rng(0)
    n = args.videos + 1  # + 1 warm-up video
    videos = [rng.integers(0, 256, (geo["frames"], geo["height"], geo["width"], 3), dtype=np.uint8) for _ in range(n)]
    order = [(v, k, s) for v in range(n) for k in range(args.temporal) for s in range(args.spatial)]
    batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]

    def host_batch(items):
        pathways = None
        vid, view = [], []
        for v in sorted({i[0] for i in items}):
            mine = [(k, s) for vv, k, s in items if vv == v]
            p = assemble(videos[v], cfg, mine)
            pathways = p if pathways is None else [np.concatenate([a, b]) for a, b in zip(pathways, p)]
            vid += [v] * len(mine)
            view += [k * args.spatial + s for k, s in mine]
        real = len(vid)
        pad = per_batch - real
        if pad:
            pathways = [np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) for x in pathways]
            vid += [0] * pad
            view += [0] * pad
        out = {f"pathway{i}": x for i, x in enumerate(pathways)}
        out.update(
            video_index=np.asarray(vid, np.int32),
            view_index=np.asarray(view, np.int32),
            mask=np.asarray([1.0] * real + [0.0] * pad, np.float32),
        )
        return out

    # Compile (and warm up) on the first video's batch.
    first = host_batch(batches[0])
    t0 = time.perf_counter()
    compiled = eval_fn.lower(variables, sharding.global_batch(first, mesh)).compile()
    compile_s = time.perf_counter() - t0
    warm = [b for b in batches if all(i[0] == 0 for i in b)]
    timed = [b for b in batches if b not in warm]
    for b in warm:
        jax.block_until_ready(compiled(variables, sharding.global_batch(host_batch(b), mesh)))

    scores = None
    assemble_s = 0.0
    start = time.perf_counter()
    pending = None
    for i in range(len(timed) + 1):
        nxt = None
        if i < len(timed):
            t0 = time.perf_counter()
            hb = host_batch(timed[i])
            assemble_s += time.perf_counter() - t0
            nxt = compiled(variables, sharding.global_batch(hb, mesh))  # async dispatch
        if pending is not None:
            out = jax.tree.map(np.asarray, pending)
            probs = out["probs"] if isinstance(out["probs"], (tuple, list)) else (out["probs"],)
            if scores is None:
                scores = [np.zeros((n, p.shape[-1]), np.float32) for p in probs]
            valid = out["mask"] > 0
            for sc, p in zip(scores, probs):
                np.add.at(sc, out["video_index"][valid], p[valid])
        pending = nxt
    total = time.perf_counter() - start
    timed_videos = args.videos
    result = {
        "benchmark": "evaluate",
        "device": args.device,
        "dtype": args.dtype,
        "model": args.model,
        "size": size,
        "heads": args.heads,
        "videos": timed_videos,
        "views_per_video": views,
        "views_per_batch": per_batch,
        "frames": cfg.data.num_frames,
        "test_crop": geo["crop"],
        "video_shape": [geo["frames"], geo["height"], geo["width"], 3],
        "compile_s": compile_s,
        "total_s": total,
        "assemble_s": assemble_s,
        "assemble_share": assemble_s / total if total else None,
        "videos_per_s": timed_videos / total,
        "views_per_s": timed_videos * views / total,
        "ensembled_sum_check": float(scores[0][1:].sum() / max(timed_videos, 1)) if scores else None,
        "peak_rss_mb": common.rss_mb(),
        "machine": common.machine(None),
    }
    result["machine"]["loadavg_end"] = common.loadavg()
    if args.device == "gpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        result["device_peak_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20
    print(
        f"{args.model} {size}: {result['videos_per_s']:.3f} videos/s ({result['views_per_s']:.2f} views/s), "
        f"compile {compile_s:.1f} s, view assembly {100 * result['assemble_share']:.0f}% of the time",
        flush=True,
    )
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    hostenv.prepare_process()
    main()
