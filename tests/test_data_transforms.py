"""Clip sampling and spatial transforms (egoexo_jax/data/transforms.py) against hand-computed cases."""

import dataclasses
import math

import numpy as np
import pytest

from egoexo_jax.data import transforms as T

EVERY_2_TO_60_THEN_63 = list(range(0, 61, 2)) + [63]  # floor(linspace(0, 63, 32))


# --- temporal sampling ------------------------------------------------------------------------


def test_kinetics_test_clip_uses_k_over_10_and_truncated_linspace():
    # N=300, 32x2 at 30 fps: span 64, free 236, clip 3 of 10 starts at 70.8 -> int 70.
    idx = T.kinetics_clip_indices(300, num_frames=32, sampling_rate=2, fps=30, clip_idx=3, num_clips=10)
    assert idx.tolist() == [70 + o for o in EVERY_2_TO_60_THEN_63]
    # Clip 0 starts at 0, clip 9 at 236 * 0.9 = 212.4 -> 212 (never at the very end: /10 not /9).
    assert T.kinetics_clip_indices(300, num_frames=32, sampling_rate=2, fps=30, clip_idx=0)[0] == 0
    assert T.kinetics_clip_indices(300, num_frames=32, sampling_rate=2, fps=30, clip_idx=9)[0] == 212


def test_kinetics_slow_8x8_offsets_and_fps_scaling_and_clamping():
    idx = T.kinetics_clip_indices(64, num_frames=8, sampling_rate=8, fps=30, clip_idx=0)
    assert idx.tolist() == [0, 9, 18, 27, 36, 45, 54, 63]
    # 60 fps doubles the span to 128 source frames; a 100-frame video has no free span and the tail
    # is clamped to the last frame.
    idx = T.kinetics_clip_indices(100, num_frames=32, sampling_rate=2, fps=60, clip_idx=5)
    assert idx[0] == 0 and idx[1] == 4 and idx[11] == 45  # floor(11 * 127 / 31) = 45
    assert idx.max() == 99 and idx[-1] == 99 and idx[24] == 98  # floor(24 * 4.097) = 98


def test_kinetics_train_start_is_uniform_over_the_free_span():
    rng = np.random.default_rng(0)
    starts = [T.kinetics_clip_indices(100, num_frames=8, sampling_rate=8, fps=30, rng=rng)[0] for _ in range(400)]
    assert min(starts) == 0 and max(starts) == 35  # free = 100 - 64 = 36, start in [0, 36)
    assert len(set(starts)) == 36


def test_segment_positions_test_views_use_k_over_9():
    # L=100, 32x2: span 63, free 37, clip 4 of 10 -> round(4 * 37 / 9) = round(16.44) = 16.
    pos = T.segment_clip_positions(100, num_frames=32, sampling_rate=2, clip_idx=4, num_clips=10)
    assert pos.tolist() == list(range(16, 16 + 64, 2))
    last = T.segment_clip_positions(100, num_frames=32, sampling_rate=2, clip_idx=9, num_clips=10)
    assert last[0] == 37 and last[-1] == 99


def test_segment_positions_epic_centre_clip_of_first_validation_segment():
    # P01_11_0: frames 1..113 (L=113); centre clip 5 of 10 starts at round(5 * 50 / 9) = 28.
    pos = T.segment_clip_positions(113, num_frames=32, sampling_rate=2, clip_idx=5, num_clips=10)
    assert pos[0] == 28 and pos[-1] == 90
    assert (pos + 1).tolist()[:3] == [29, 31, 33]  # absolute frame numbers = start_frame + position


def test_segment_positions_short_video_clamps_and_train_start_range():
    pos = T.segment_clip_positions(40, num_frames=32, sampling_rate=2, clip_idx=0, num_clips=10)
    assert pos.tolist() == list(range(0, 40, 2)) + [39] * 12
    rng = np.random.default_rng(1)
    firsts = {int(T.segment_clip_positions(40, num_frames=32, sampling_rate=2, rng=rng)[0]) for _ in range(300)}
    assert firsts == {0}  # start in [40 - 63, 0] = [-23, 0], clamped to 0
    rng = np.random.default_rng(2)
    starts = {int(T.segment_clip_positions(70, num_frames=32, sampling_rate=2, rng=rng)[0]) for _ in range(300)}
    assert starts == set(range(0, 8))  # randint(0, 70 - 63) inclusive


# --- spatial parameters -----------------------------------------------------------------------


def test_short_side_resize_shape_floors_the_long_side():
    assert T.short_side_resize_shape(256, 340, 300) == (300, 398)  # floor(340 / 256 * 300) = 398
    assert T.short_side_resize_shape(340, 256, 256) == (340, 256)
    assert T.short_side_resize_shape(100, 100, 256) == (256, 256)


def test_test_crops_left_centre_right_and_top_centre_bottom():
    offsets = [T.test_spatial(256, 341, spatial_idx=i) for i in range(3)]
    assert [(p.crop_y, p.crop_x) for p in offsets] == [(0, 0), (0, 43), (0, 85)]  # ceil(85 / 2)
    offsets = [T.test_spatial(340, 256, spatial_idx=i) for i in range(3)]
    assert [(p.crop_y, p.crop_x) for p in offsets] == [(0, 0), (42, 0), (84, 0)]
    assert not any(p.flip for p in offsets)


def test_train_spatial_ranges():
    rng = np.random.default_rng(0)
    params = [T.sample_train_spatial(256, 340, rng) for _ in range(500)]
    sizes = {p.resized_h for p in params}
    assert min(sizes) == 256 and max(sizes) == 320
    assert all(0 <= p.crop_y < p.resized_h - 224 or p.crop_y == 0 for p in params)
    assert all(p.crop_x < p.resized_w - 224 for p in params)  # exclusive upper bound
    flips = np.mean([p.flip for p in params])
    assert 0.4 < flips < 0.6
    d = params[0].as_dict()
    assert d["scale_x"] == params[0].resized_w / 340 and d["crop_size"] == 224


# --- applying the transform -------------------------------------------------------------------


def _interp_matrix(out_size, in_size):
    """Dense bilinear (align_corners=False) interpolation matrix, written independently."""
    m = np.zeros((out_size, in_size))
    for o in range(out_size):
        src = max((o + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        m[o, i0] += 1 - frac
        m[o, i1] += frac
    return m


def _reference(frames, p):
    ay = _interp_matrix(p.resized_h, p.orig_h)
    ax = _interp_matrix(p.resized_w, p.orig_w)
    full = np.einsum("yh,thwc,xw->tyxc", ay, frames.astype(np.float64), ax)
    crop = full[:, p.crop_y : p.crop_y + p.crop_size, p.crop_x : p.crop_x + p.crop_size]
    return crop[:, :, ::-1] if p.flip else crop


def test_bilinear_matches_torch_align_corners_false_on_known_case():
    # torch.nn.functional.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear",
    # align_corners=False) is this well-known matrix.
    x = np.array([[0, 1], [2, 3]], np.uint8)[None, :, :, None]
    p = T.SpatialParams(2, 2, 4, 4, 0, 0, 4, False)
    out = T.resize_crop_flip(x, p)[0, :, :, 0]
    np.testing.assert_allclose(
        out, [[0, 0.25, 0.75, 1], [0.5, 0.75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]], atol=1e-6
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fused_resize_crop_flip_equals_full_resize_then_crop(seed):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(2, 30, 41, 3), dtype=np.uint8)
    p = T.sample_train_spatial(30, 41, rng, jitter_scales=(32, 48), crop_size=28, flip_prob=0.5)
    np.testing.assert_allclose(T.resize_crop_flip(frames, p), _reference(frames, p), atol=1e-3)
    p = T.test_spatial(30, 41, spatial_idx=seed % 3, scale=36, crop_size=36)
    np.testing.assert_allclose(T.resize_crop_flip(frames, p), _reference(frames, p), atol=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_transform_parameters_carry_boxes_like_the_pixels(seed):
    """A box painted into the frame lands where the parameters say (pixel-edge coordinates)."""
    h, w = 48, 64
    x1, y1, x2, y2 = 20, 10, 37, 30  # box covers pixels [x1, x2) x [y1, y2)
    frame = np.zeros((1, h, w, 3), np.uint8)
    frame[:, y1:y2, x1:x2] = 255
    rng = np.random.default_rng(seed)
    p = T.sample_train_spatial(h, w, rng, jitter_scales=(56, 80), crop_size=48, flip_prob=0.5)
    out = T.resize_crop_flip(frame, p)[0, :, :, 0] > 127.5
    # Map the box through the parameters.
    bx1, bx2 = x1 * p.scale_x - p.crop_x, x2 * p.scale_x - p.crop_x
    by1, by2 = y1 * p.scale_y - p.crop_y, y2 * p.scale_y - p.crop_y
    if p.flip:
        bx1, bx2 = p.crop_size - bx2, p.crop_size - bx1
    centres = np.arange(p.crop_size) + 0.5
    expect = (centres[:, None] > by1) & (centres[:, None] < by2) & (centres[None, :] > bx1) & (centres[None, :] < bx2)
    assert out.any()
    wrong = np.argwhere(out != expect)
    # Disagreements only on the 1-pixel rim of the mapped edges.
    for y, x in wrong:
        near = min(abs(y + 0.5 - by1), abs(y + 0.5 - by2), abs(x + 0.5 - bx1), abs(x + 0.5 - bx2))
        assert near <= 1.0, (y, x, p)


def test_normalise_bgr_and_pathways():
    frames = np.zeros((8, 4, 4, 3), np.uint8)
    frames[..., 0] = 255
    x = T.normalize(frames.astype(np.float32))
    np.testing.assert_allclose(x[0, 0, 0], [(1 - 0.45) / 0.225, -0.45 / 0.225, -0.45 / 0.225], rtol=1e-6)
    assert x.dtype == np.float32
    p = T.SpatialParams(4, 4, 4, 4, 0, 0, 4, False)
    bgr = T.spatial_transform(frames, p, bgr=True)
    np.testing.assert_allclose(bgr[..., ::-1], T.spatial_transform(frames, p), rtol=1e-6)
    clip = np.arange(32)[:, None, None, None] * np.ones((32, 2, 2, 3))
    slow, fast = T.pack_pathways(clip, arch="slowfast", alpha=4)
    assert slow[:, 0, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31] and fast.shape[0] == 32
    (only,) = T.pack_pathways(clip[:8], arch="slow")
    assert only.shape[0] == 8


@pytest.mark.parametrize("crop", [28, 27])
@pytest.mark.parametrize("mean, std", [(0.45, 0.225), ((0.43, 0.45, 0.47), (0.22, 0.225, 0.23))])
@pytest.mark.parametrize("seed", [0, 1])
def test_space_to_depth_transform_is_the_fold_of_the_transform(crop, mean, std, seed):
    """spatial_transform(space_to_depth=True) writes exactly ops.space_to_depth.fold of the plain
    transform (same float32 values, zeros past an odd crop's edge), for scalar and per-channel
    normalisation, BGR and flipped crops."""
    from egoexo_jax.ops import space_to_depth

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(3, 30, 41, 3), dtype=np.uint8)
    p = T.sample_train_spatial(30, 41, rng, jitter_scales=(32, 48), crop_size=crop, flip_prob=0.5)
    for params in (p, dataclasses.replace(p, flip=not p.flip)):
        for bgr in (False, True):
            plain = T.spatial_transform(frames, params, mean=mean, std=std, bgr=bgr)
            folded = T.spatial_transform(frames, params, mean=mean, std=std, bgr=bgr, space_to_depth=True)
            assert folded.shape == (3, (crop + 1) // 2, (crop + 1) // 2, 12) and folded.flags.c_contiguous
            np.testing.assert_array_equal(folded, space_to_depth.fold(plain))
