"""One training/evaluation sample from one `Item`: temporal sampling, decoding, spatial transform,
pathway packing, labels.

The sampling rules per dataset are in `transforms.py`; this file wires them to the media:
  * Kinetics (video files): `kinetics_clip_indices` over the decoded video's frame count and fps;
    the clip's frame indices are absolute decoded-frame numbers.
  * Charades-Ego, EPIC (JPEG frames): `segment_clip_positions` over the frame list / segment; the
    clip's frame indices are 0-based frame-list positions (Charades-Ego) or absolute 1-based frame
    numbers `start_frame + position` (EPIC), i.e. what each dataset's hand-object files are keyed by.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from egoexo_jax.data import charades_ego, transforms
from egoexo_jax.data.sources import Item
from egoexo_jax.data.video import VideoReader, read_jpeg_frames

DEFAULT_BGR = {"kinetics": False, "charades_ego": True, "epic100": True, "epic55": True}

# `meta -> dict of fixed-shape arrays` merged into each sample (see `sample_meta` for `meta`).
AuxFn = Callable[[dict], dict]


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Plain-value copy of the data config fields a sample needs (cheap to pickle to workers)."""

    dataset: str
    num_frames: int = 32
    sampling_rate: int = 2
    target_fps: float = 30.0
    jitter_scales: tuple[int, int] = (256, 320)
    train_crop_size: int = 224
    test_crop_size: int = 256
    num_ensemble_views: int = 10
    num_spatial_crops: int = 3
    mean: float | tuple[float, ...] = 0.45
    std: float | tuple[float, ...] = 0.225
    bgr: bool = False
    arch: str = "slowfast"
    alpha: int = 4
    flip_prob: float = 0.5
    decode_threads: str = "AUTO"
    # Not a data config field: the run's choice (egoexo_jax.train.folds_input) to deliver the
    # pathways as their 2x2 space-to-depth fold, which the space-to-depth ResNet stems read.
    space_to_depth: bool = False

    @classmethod
    def from_config(cls, cfg) -> "SampleOptions":
        bgr = cfg.bgr if cfg.bgr is not None else DEFAULT_BGR[cfg.dataset]

        def as_tuple_or_float(v):
            return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)

        return cls(
            dataset=cfg.dataset,
            num_frames=int(cfg.num_frames),
            sampling_rate=int(cfg.sampling_rate),
            target_fps=float(cfg.target_fps),
            jitter_scales=tuple(int(x) for x in cfg.train_jitter_scales),
            train_crop_size=int(cfg.train_crop_size),
            test_crop_size=int(cfg.test_crop_size),
            num_ensemble_views=int(cfg.num_ensemble_views),
            num_spatial_crops=int(cfg.num_spatial_crops),
            mean=as_tuple_or_float(cfg.mean),
            std=as_tuple_or_float(cfg.std),
            bgr=bool(bgr),
            arch=cfg.arch,
            alpha=int(cfg.alpha),
            flip_prob=float(cfg.flip_prob),
            decode_threads=cfg.decode_threads,
        )


@dataclasses.dataclass(frozen=True)
class View:
    """Which clip and crop of an item to produce.

    mode: 'train' = random clip, random scale/crop/flip (also Kinetics/Charades-Ego "val");
          'center' = middle temporal clip (index K // 2 of K) and the centre test crop (EPIC val);
          'test' = temporal clip `temporal_idx` of K and test crop `spatial_idx` of 3.
    """

    mode: str = "train"
    temporal_idx: int = -1
    spatial_idx: int = 1

    def clip_idx(self, num_clips: int) -> int:
        if self.mode == "train":
            return -1
        if self.mode == "center":
            return num_clips // 2
        return self.temporal_idx


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
    """Decoded frames of one clip.

    Attributes:
      frames: `[T, H, W, 3] uint8` RGB.
      positions: `[T] int64` positions in the item's media (decoded-frame index / frame-list position).
      frame_indices: `[T] int64` absolute indices (positions + the item's frame offset).
      num_media_frames: frames in the video / frame list / segment.
      padded: the clip's span is longer than the media, so its last (or first) frame repeats
        (PySlowFast's samplers do the same; the training loop counts these clips per epoch).
    """

    frames: np.ndarray
    positions: np.ndarray
    frame_indices: np.ndarray
    num_media_frames: int
    padded: bool = False


def decode_clip(item: Item, view: View, rng: np.random.Generator | None, opts: SampleOptions) -> Clip:
    """Samples the clip's frames for `view` and decodes them.

    Raises:
      DecodeError: missing, empty or corrupt media.
    """
    clip_idx = view.clip_idx(opts.num_ensemble_views)
    if item.is_video:
        with VideoReader(item.media, threads=opts.decode_threads) as reader:
            n = reader.num_frames
            positions = transforms.kinetics_clip_indices(
                n,
                num_frames=opts.num_frames,
                sampling_rate=opts.sampling_rate,
                fps=reader.fps,
                target_fps=opts.target_fps,
                clip_idx=clip_idx,
                num_clips=opts.num_ensemble_views,
                rng=rng,
            )
            frames = reader.read(positions)
            span = opts.num_frames * opts.sampling_rate * reader.fps / opts.target_fps
    else:
        n = len(item.media)
        positions = transforms.segment_clip_positions(
            n,
            num_frames=opts.num_frames,
            sampling_rate=opts.sampling_rate,
            clip_idx=clip_idx,
            num_clips=opts.num_ensemble_views,
            rng=rng,
        )
        frames = read_jpeg_frames(item.media, positions)
        span = (opts.num_frames - 1) * opts.sampling_rate + 1
    return Clip(frames, positions, positions + item.frame_offset, n, padded=bool(span > n))


def spatial_params(
    clip: Clip, view: View, rng: np.random.Generator | None, opts: SampleOptions
) -> transforms.SpatialParams:
    _, h, w, _ = clip.frames.shape
    if view.mode == "train":
        return transforms.sample_train_spatial(
            h, w, rng, jitter_scales=opts.jitter_scales, crop_size=opts.train_crop_size, flip_prob=opts.flip_prob
        )
    spatial_idx = 1 if view.mode == "center" else view.spatial_idx
    return transforms.test_spatial(
        h, w, spatial_idx=spatial_idx, scale=opts.test_crop_size, crop_size=opts.test_crop_size
    )


def labels(item: Item, clip: Clip, *, video_level: bool) -> dict[str, np.ndarray]:
    """Kinetics `label` int32; Charades-Ego `label` `[157] float32` (span union for training,
    video-level for evaluation); EPIC `verb`, `noun` int32."""
    if item.dataset == "kinetics":
        return {"label": np.int32(item.label)}
    if item.dataset == "charades_ego":
        if video_level:
            classes = item.label_classes
        else:
            classes = charades_ego.span_classes(
                item.label_frames, item.label_classes, int(clip.positions[0]), int(clip.positions[-1])
            )
        return {"label": charades_ego.multi_hot(classes)}
    return {"verb": np.int32(item.verb), "noun": np.int32(item.noun)}


def pathways(frames: np.ndarray, params: transforms.SpatialParams, opts: SampleOptions) -> dict[str, np.ndarray]:
    """`pathway0` (slow, or the only one), `pathway1` (fast, SlowFast only): float32 normalised
    `[T_p, S, S, 3]`, or with `opts.space_to_depth` their 2x2 space-to-depth fold
    `[T_p, ceil(S/2), ceil(S/2), 12]` (`egoexo_jax.ops.space_to_depth.fold`'s layout, written by the
    spatial transform itself, before the slow frames are picked: the model's stems get it without a
    device transpose, and the host without an extra pass)."""
    out = transforms.spatial_transform(
        frames, params, mean=opts.mean, std=opts.std, bgr=opts.bgr, space_to_depth=opts.space_to_depth
    )
    return {f"pathway{i}": p for i, p in enumerate(transforms.pack_pathways(out, arch=opts.arch, alpha=opts.alpha))}


def sample_meta(item: Item, clip: Clip, params: transforms.SpatialParams, split: str) -> dict:
    """What an `aux_fn` receives (plain python / numpy values)."""
    return {
        "dataset": item.dataset,
        "split": split,
        "key": item.key,
        "video_id": item.video_id,
        "frame_indices": clip.frame_indices.copy(),
        "num_video_frames": clip.num_media_frames,
        "transform": params.as_dict(),
    }


def make_sample(
    item: Item,
    view: View,
    rng: np.random.Generator | None,
    opts: SampleOptions,
    *,
    split: str,
    video_level_labels: bool,
    aux_fn: AuxFn | None = None,
    clip: Clip | None = None,
) -> dict[str, np.ndarray]:
    """Decodes (unless `clip` is given) and transforms one sample; merges `aux_fn(meta)` into it.

    Besides pathways and labels, `padded` int32: 1 when the clip ran past the media's end.
    """
    if clip is None:
        clip = decode_clip(item, view, rng, opts)
    params = spatial_params(clip, view, rng, opts)
    sample = pathways(clip.frames, params, opts)
    sample.update(labels(item, clip, video_level=video_level_labels))
    sample["padded"] = np.int32(clip.padded)
    if aux_fn is not None:
        extra = aux_fn(sample_meta(item, clip, params, split))
        clash = set(extra) & set(sample)
        if clash:
            raise ValueError(f"aux_fn returned keys {sorted(clash)} that the sample already has")
        sample.update(extra)
    return sample


def view_of(view_index: int, opts: SampleOptions) -> View:
    """Test view v -> temporal clip v // num_spatial_crops, spatial crop v % num_spatial_crops
    (the centre crop when there is only one)."""
    crops = opts.num_spatial_crops
    return View("test", view_index // crops, view_index % crops if crops > 1 else 1)


def stack(samples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """List of sample dicts -> dict of `[B, ...]` arrays."""
    return {k: np.ascontiguousarray(np.stack([s[k] for s in samples])) for k in samples[0]}
