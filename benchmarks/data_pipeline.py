"""Data-pipeline speed: our clip loader vs a PySlowFast-style loader on the same generated videos.

Videos: 10-second 340x256 30 fps H.264 mp4s written with PyAV/libx264 (crf 23, preset medium,
B-frames). By default x264 chooses the keyframes (interval at most 250 plus scene-cut keyframes),
as ffmpeg does when Kinetics clips are resized to short side 256; `--keyint 300` forces a single
keyframe per video, the worst case for seeking (every clip then decodes from frame 0 on both sides).

Work per clip (Kinetics training sampling for SlowFast 8x8 = 32 frames at stride 2):
  ours      open, seek to the keyframe before the clip, decode only up to the clip's last frame,
            convert only the 32 sampled frames to RGB (threaded codec), then scale jitter + crop +
            flip computed only for the 224 crop, normalise, pack [slow, fast]
            (`egoexo_jax.data.samples.make_sample`).
  baseline  open, decode from the first frame up to the clip's last frame keeping every decoded
            frame as RGB (single-threaded codec), select the 32 frames, normalise the whole frames,
            resize whole frames to the jittered size, crop, flip, pack.
Both sides use the same numpy bilinear kernel for resizing, so the transform difference is only
"whole frame" vs "crop only".

Clips per second per core = clips / CPU seconds of this process (all threads), so threaded
decoding gets no credit for using more cores. Also reported: ours with one decode serving two clips
(like PySlowFast MViT's AUG.NUM_SAMPLE=2), the decode-only figures, and what delivering a clip
as its 2x2 space-to-depth fold adds on the host (a run with `model.rewrites` on): CPU microseconds
per clip and their share of ours' CPU time per clip, for the fold written by the spatial transform
(what the pipeline does) and for a separate `egoexo_jax.ops.space_to_depth.fold` pass.

`--storage`: our clip loader on the same videos read from local disk and from a local Cloud Storage
server (fake-gcs-server on the loopback interface, in memory: `tests/gcs_server.py`, the `test`
extra) as `gs://` URLs, whole-object reads (the default for videos up to
`egoexo_jax.data.video.WHOLE_OBJECT_LIMIT`) and ranged reads (that bound lowered below the video
size); one clip of each in turn, so all see the same machine load. The server's own CPU time is not
counted, and loopback has none of real Cloud Storage's latency.

Prints progress lines, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import tempfile
import time

import av
import numpy as np

from egoexo_jax import storage
from egoexo_jax.data import samples, transforms, video
from egoexo_jax.data.sources import Item
from egoexo_jax.data.video import VideoReader
from egoexo_jax.demo_data import media

NUM_FRAMES, SAMPLING_RATE, ALPHA = 32, 2, 4


def textured_frame(index: int, height: int = 256, width: int = 340) -> np.ndarray:
    """`[H, W, 3] uint8` moving smooth pattern with some detail (compresses like camera footage)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = index / 30.0
    r = 128 + 100 * np.sin(0.045 * x + 1.7 * t) * np.cos(0.03 * y - 0.9 * t)
    g = 128 + 90 * np.sin(0.02 * (x + y) + 2.3 * t)
    b = 128 + 80 * np.cos(0.05 * y + 0.013 * x * np.sin(t))
    noise = np.random.default_rng(index).integers(-3, 4, size=(height, width, 1))
    return np.clip(np.stack([r, g, b], -1) + noise, 0, 255).astype(np.uint8)


def write_videos(folder: str, count: int, keyint: int | None, frames: int = 300) -> list[str]:
    """x264 defaults when keyint is None (keyint 250 plus scene-cut keyframes), else exactly one
    keyframe every `keyint` frames (scene-cut detection off)."""
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"video{i}.mp4")
        media.write_mp4(
            path,
            (textured_frame(k + 1000 * i) for k in range(frames)),
            fps=30,
            crf=23,
            preset="medium",
            gop=keyint,
            x264_params="scenecut=0" if keyint else None,
        )
        paths.append(path)
    return paths


def keyframes_per_video(paths: list[str]) -> float:
    counts = []
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            counts.append(sum(packet.is_keyframe for packet in container.demux(stream)))
    return float(np.mean(counts))


# --- baseline: PySlowFast-style ---------------------------------------------------------------


def baseline_decode(path: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Decode from the start to the clip's end, keep all frames as RGB, then select."""
    container = av.open(path)
    stream = container.streams.video[0]
    num_video_frames = stream.frames
    fps = float(stream.average_rate)
    indices = transforms.kinetics_clip_indices(
        num_video_frames, num_frames=NUM_FRAMES, sampling_rate=SAMPLING_RATE, fps=fps, rng=rng
    )
    last = int(indices[-1])
    frames = []
    for frame in container.decode(stream):
        frames.append(frame.to_rgb().to_ndarray())
        if len(frames) > last:
            break
    container.close()
    frames = np.stack(frames)
    return frames[np.clip(indices, 0, len(frames) - 1)], num_video_frames


def resize_whole_frames(x: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """`[T, H, W, C] float32` -> `[T, new_h, new_w, C]`, bilinear align_corners=False, frame by frame
    with the same separable kernel our loader uses (rows, then columns)."""
    t, h, w, c = x.shape
    y0, y1, wy = transforms._bilinear_taps(new_h, h, new_h, 0, False)  # pylint: disable=protected-access
    x0, x1, wx = transforms._bilinear_taps(new_w, w, new_w, 0, False)  # pylint: disable=protected-access
    cols0 = (x0[:, None] * c + np.arange(c)).ravel()
    cols1 = (x1[:, None] * c + np.arange(c)).ravel()
    wx_flat, wy_col = np.repeat(wx, c), wy[:, None]
    rows_of = x.reshape(t, h, w * c)
    out = np.empty((t, new_h, new_w * c), np.float32)
    for k in range(t):
        top = rows_of[k][y0]
        bottom = rows_of[k][y1] - top
        bottom *= wy_col
        top += bottom
        left = top[:, cols0]
        right = top[:, cols1] - left
        right *= wx_flat
        left += right
        out[k] = left
    return out.reshape(t, new_h, new_w, c)


def baseline_transform(clip: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Normalise whole frames, resize whole frames, crop, flip, pack."""
    _, h, w, _ = clip.shape
    x = transforms.normalize(clip)
    size = int(round(rng.uniform(256, 320)))
    new_h, new_w = transforms.short_side_resize_shape(h, w, size)
    full = resize_whole_frames(x, new_h, new_w)
    cy = int(rng.integers(0, new_h - 224)) if new_h > 224 else 0
    cx = int(rng.integers(0, new_w - 224)) if new_w > 224 else 0
    out = full[:, cy : cy + 224, cx : cx + 224]
    if rng.uniform() < 0.5:
        out = out[:, :, ::-1]
    return transforms.pack_pathways(np.ascontiguousarray(out), arch="slowfast", alpha=ALPHA)


# --- ours -------------------------------------------------------------------------------------


OPTS = samples.SampleOptions(
    dataset="kinetics", num_frames=NUM_FRAMES, sampling_rate=SAMPLING_RATE, alpha=ALPHA, arch="slowfast"
)


def ours_sample(path: str, rng: np.random.Generator) -> dict:
    item = Item("kinetics", storage.basename(path), "v", path, label=0)
    return samples.make_sample(item, samples.View("train"), rng, OPTS, split="train", video_level_labels=False)


def ours_decode(path: str, rng: np.random.Generator) -> np.ndarray:
    item = Item("kinetics", storage.basename(path), "v", path, label=0)
    return samples.decode_clip(item, samples.View("train"), rng, OPTS).frames


def ours_two_clips(path: str, rng: np.random.Generator) -> list[dict]:
    """One open + one pass over the union of two random clips' frames, two samples out."""
    item = Item("kinetics", storage.basename(path), "v", path, label=0)
    with VideoReader(path) as reader:
        clips_idx = [
            transforms.kinetics_clip_indices(
                reader.num_frames, num_frames=NUM_FRAMES, sampling_rate=SAMPLING_RATE, fps=reader.fps, rng=rng
            )
            for _ in range(2)
        ]
        decoded = reader.read_clips(clips_idx)
    out = []
    for idx, frames in zip(clips_idx, decoded):
        clip = samples.Clip(frames, idx, idx, reader.num_frames)
        out.append(
            samples.make_sample(
                item, samples.View("train"), rng, OPTS, split="train", video_level_labels=False, clip=clip
            )
        )
    return out


def measure(name: str, fn, paths: list[str], clips: int, clips_per_call: int = 1) -> dict:
    rng = np.random.default_rng(0)
    fn(paths[0], rng)  # warm-up
    calls = max(clips // clips_per_call, 1)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        fn(paths[i % len(paths)], rng)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = calls * clips_per_call
    result = {
        "clips": done,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "clips_per_s_per_core": round(done / cpu, 3),
        "clips_per_s_wall": round(done / wall, 3),
    }
    print(f"{name:>22}: {json.dumps(result)}", flush=True)
    return result


def measure_fold(path: str, clips: int) -> dict:
    """CPU cost of delivering a SlowFast training clip as its 2x2 space-to-depth fold: the spatial
    transform with `space_to_depth` (the fold written by its column gather) minus the plain one, on
    the same decoded clip and parameters, the variants taking turns; and, for comparison, a separate
    `space_to_depth.fold` pass over the transformed `[32, 224, 224, 3]` float32 clip."""
    from egoexo_jax.ops import space_to_depth  # pylint: disable=import-outside-toplevel  (jax + flax)

    rng = np.random.default_rng(0)
    frames = ours_decode(path, rng)
    _, h, w, _ = frames.shape
    params = transforms.sample_train_spatial(h, w, rng, jitter_scales=OPTS.jitter_scales, crop_size=224, flip_prob=0.5)
    variants = {
        "plain": lambda: transforms.spatial_transform(frames, params, mean=OPTS.mean, std=OPTS.std),
        "fused": lambda: transforms.spatial_transform(
            frames, params, mean=OPTS.mean, std=OPTS.std, space_to_depth=True
        ),
        "separate": lambda: space_to_depth.fold(
            transforms.spatial_transform(frames, params, mean=OPTS.mean, std=OPTS.std)
        ),
    }
    cpu = dict.fromkeys(variants, 0.0)
    repeats = max(clips, 20)
    for i in range(-1, repeats):  # one warm-up round, then the variants in turn
        for name, fn in variants.items():
            cpu0 = time.process_time()
            fn()
            if i >= 0:
                cpu[name] += time.process_time() - cpu0
    us = {k: 1e6 * v / repeats for k, v in cpu.items()}
    result = {
        "clips": repeats,
        "transform_cpu_us_per_clip": round(us["plain"], 1),
        "transform_with_fold_cpu_us_per_clip": round(us["fused"], 1),
        "fold_cpu_us_per_clip": round(us["fused"] - us["plain"], 1),
        "separate_fold_pass_cpu_us_per_clip": round(us["separate"] - us["plain"], 1),
    }
    print(f"{'host fold':>22}: {json.dumps(result)}", flush=True)
    return result


def run(clips: int, num_videos: int, keyint: int | None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        paths = write_videos(folder, num_videos, keyint)
        size_kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        keyframes = keyframes_per_video(paths)
        print(
            f"wrote {num_videos} videos (mean {size_kb:.0f} KB, {keyframes:.1f} keyframes each) in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )
        base = measure("baseline", lambda p, r: baseline_transform(baseline_decode(p, r)[0], r), paths, clips)
        ours = measure("ours", ours_sample, paths, clips)
        ours2 = measure("ours NUM_SAMPLE=2", ours_two_clips, paths, clips, clips_per_call=2)
        base_dec = measure("baseline decode only", baseline_decode, paths, clips)
        ours_dec = measure("ours decode only", ours_decode, paths, clips)
        fold = measure_fold(paths[0], clips)
    ours_cpu_us_per_clip = 1e6 * ours["cpu_s"] / ours["clips"]
    return {
        "ours_clips_per_s_per_core": ours["clips_per_s_per_core"],
        "baseline_clips_per_s_per_core": base["clips_per_s_per_core"],
        "speedup": round(ours["clips_per_s_per_core"] / base["clips_per_s_per_core"], 2),
        "ours_num_sample2_clips_per_s_per_core": ours2["clips_per_s_per_core"],
        "num_sample2_speedup": round(ours2["clips_per_s_per_core"] / base["clips_per_s_per_core"], 2),
        "ours_decode_only_clips_per_s_per_core": ours_dec["clips_per_s_per_core"],
        "baseline_decode_only_clips_per_s_per_core": base_dec["clips_per_s_per_core"],
        "decode_only_speedup": round(ours_dec["clips_per_s_per_core"] / base_dec["clips_per_s_per_core"], 2),
        "ours_clips_per_s_wall": ours["clips_per_s_wall"],
        "baseline_clips_per_s_wall": base["clips_per_s_wall"],
        "host_fold_cpu_us_per_clip": fold["fold_cpu_us_per_clip"],
        "host_fold_share_of_ours_cpu_per_clip": round(fold["fold_cpu_us_per_clip"] / ours_cpu_us_per_clip, 4),
        "host_fold_separate_pass_cpu_us_per_clip": fold["separate_fold_pass_cpu_us_per_clip"],
        "host_fold_separate_pass_share_of_ours_cpu_per_clip": round(
            fold["separate_fold_pass_cpu_us_per_clip"] / ours_cpu_us_per_clip, 4
        ),
        "video": {
            "seconds": 10,
            "size": "340x256",
            "fps": 30,
            "codec": "libx264 crf23 medium",
            "x264_keyint": keyint or "default (250 + scene cuts)",
            "keyframes_per_video": keyframes,
            "mean_kb": round(float(size_kb)),
        },
        "clip": "SlowFast 32x2 train sampling, 224 crop of jitter 256-320, flip, normalise",
        "cpu_count": os.cpu_count(),
    }


# --- ours, local disk vs a Cloud Storage server ------------------------------------------------


@contextlib.contextmanager
def _whole_object_limit(limit: int):
    saved, video.WHOLE_OBJECT_LIMIT = video.WHOLE_OBJECT_LIMIT, limit
    try:
        yield
    finally:
        video.WHOLE_OBJECT_LIMIT = saved


def measure_in_turn(modes: dict, clips: int) -> dict:
    """`modes`: {name: (fn, paths, whole_object_limit)}. One clip of each mode in turn (after one
    warm-up each), so a change of machine load hits all of them alike; per-mode CPU and wall time."""
    rng = {name: np.random.default_rng(0) for name in modes}
    cpu = dict.fromkeys(modes, 0.0)
    wall = dict.fromkeys(modes, 0.0)
    for i in range(-1, clips):
        for name, (fn, paths, limit) in modes.items():
            with _whole_object_limit(limit):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                fn(paths[max(i, 0) % len(paths)], rng[name])
                if i >= 0:
                    cpu[name] += time.process_time() - cpu0
                    wall[name] += time.perf_counter() - wall0
    out = {}
    for name in modes:
        out[name] = {
            "clips": clips,
            "cpu_s": round(cpu[name], 3),
            "wall_s": round(wall[name], 3),
            "clips_per_s_per_core": round(clips / cpu[name], 3),
            "clips_per_s_wall": round(clips / wall[name], 3),
        }
        print(f"{name:>22}: {json.dumps(out[name])}", flush=True)
    return out


def _gcs_server():
    """tests/gcs_server.py, loaded from its file (a script run from benchmarks/ does not have tests/
    on its path)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gcs_server.py")
    spec = importlib.util.spec_from_file_location("gcs_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_storage(clips: int, num_videos: int, keyint: int | None, *, frames: int = 300, bucket: str = "") -> dict:
    """Our clip loader on the same videos from local disk and from a Cloud Storage server: `bucket`
    (`gs://NAME` on a server this process already points at), else a local server started here."""
    with tempfile.TemporaryDirectory() as folder:
        videos = os.path.join(folder, "videos")
        os.makedirs(videos)
        paths = write_videos(videos, num_videos, keyint, frames)
        size = min(os.path.getsize(p) for p in paths)
        server = None
        if not bucket:
            os.makedirs(os.path.join(folder, "server"))
            server = _gcs_server().start(pathlib.Path(folder, "server"))
            bucket = server.new_bucket()
        try:
            storage.copy_tree(videos, bucket + "/videos")
            urls = [f"{bucket}/videos/{os.path.basename(p)}" for p in paths]
            ranged_limit = max(size // 4, 1)
            print(
                f"wrote {num_videos} videos (mean {np.mean([os.path.getsize(p) for p in paths]) / 1024:.0f} KB) "
                f"to local disk and {bucket}; ranged reads: bound {ranged_limit} bytes",
                flush=True,
            )
            limit = video.WHOLE_OBJECT_LIMIT
            result = measure_in_turn(
                {
                    "ours local disk": (ours_sample, paths, limit),
                    "ours gs:// whole": (ours_sample, urls, limit),
                    "ours gs:// ranged": (ours_sample, urls, ranged_limit),
                },
                clips,
            )
        finally:
            if server is not None:
                server.stop()
    local, whole, ranged = (result[k] for k in ("ours local disk", "ours gs:// whole", "ours gs:// ranged"))
    return {
        "benchmark": "data_pipeline_storage",
        "local_clips_per_s_per_core": local["clips_per_s_per_core"],
        "gs_whole_object_clips_per_s_per_core": whole["clips_per_s_per_core"],
        "gs_ranged_clips_per_s_per_core": ranged["clips_per_s_per_core"],
        "gs_whole_object_vs_local": round(whole["clips_per_s_per_core"] / local["clips_per_s_per_core"], 3),
        "gs_ranged_vs_local": round(ranged["clips_per_s_per_core"] / local["clips_per_s_per_core"], 3),
        "local_clips_per_s_wall": local["clips_per_s_wall"],
        "gs_whole_object_clips_per_s_wall": whole["clips_per_s_wall"],
        "gs_ranged_clips_per_s_wall": ranged["clips_per_s_wall"],
        "clips_each": clips,
        "ranged_whole_object_limit": ranged_limit,
        "server": "fake-gcs-server, loopback, in memory (no real Cloud Storage latency; its CPU not counted)",
        "video": {
            "count": num_videos,
            "frames": frames,
            "size": "340x256",
            "fps": 30,
            "codec": "libx264 crf23 medium",
            "x264_keyint": keyint or "default (250 + scene cuts)",
            "min_kb": round(size / 1024),
        },
        "clip": "SlowFast 32x2 train sampling, 224 crop of jitter 256-320, flip, normalise",
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=40, help="clips per measurement")
    parser.add_argument("--videos", type=int, default=4, help="generated videos")
    parser.add_argument(
        "--keyint",
        type=int,
        default=0,
        help="fixed keyframe interval without scene cuts (0 = x264 defaults); "
        "300 = one keyframe per video, the worst case for seeking",
    )
    parser.add_argument(
        "--storage",
        action="store_true",
        help="ours from local disk vs from a local Cloud Storage server (gs:// URLs), same videos, same run",
    )
    args = parser.parse_args()
    if args.storage:
        print(json.dumps(run_storage(args.clips, args.videos, args.keyint or None)))
    else:
        print(json.dumps(run(args.clips, args.videos, args.keyint or None)))


if __name__ == "__main__":
    main()
