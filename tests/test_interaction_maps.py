"""Interaction-Map targets: hand-worked cases and the official PyTorch targets of the debug fixture."""

import numpy as np
import pytest

from egoexo_jax.data import interaction_maps as im

FIXTURE = "pyslowfast_debug/egoexo_k400_slowfast_r50_w8"


def test_transform_scale_crop_no_flip():
    boxes = np.array([[10.0, 20.0, 50.0, 60.0]], np.float32)
    out = im.transform_boxes(boxes, scale=2.0, crop_offset=(5, 10), crop_size=100, flip=False, normalize=False)
    np.testing.assert_array_equal(out, [[15.0, 30.0, 95.0, 110.0 - 11.0]])  # y2 = 120-10=110 -> clipped to 99
    norm = im.transform_boxes(boxes, scale=2.0, crop_offset=(5, 10), crop_size=100)
    np.testing.assert_allclose(norm, [[0.15, 0.30, 0.95, 0.99]], rtol=1e-6)
    assert norm.dtype == np.float32


def test_transform_flip_uses_crop_width():
    # Crop 10 px wide: x1' = 10 - x2 - 1, x2' = 10 - x1 - 1.
    boxes = np.array([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 9.0, 9.0]])
    out = im.transform_boxes(boxes, crop_size=10, flip=True, normalize=False)
    np.testing.assert_array_equal(out, [[4.0, 1.0, 7.0, 3.0], [0.0, 0.0, 9.0, 9.0]])
    assert out.dtype == np.float64  # arithmetic stays in the input dtype
    # Flip after the crop offset.
    out = im.transform_boxes(
        np.array([[12.0, 0.0, 14.0, 2.0]]), crop_offset=(10, 0), crop_size=10, flip=True, normalize=False
    )
    np.testing.assert_array_equal(out, [[10 - 4 - 1, 0.0, 10 - 2 - 1, 2.0]])


def test_transform_boxes_outside_crop_are_clipped_to_border():
    boxes = np.array(
        [
            [-50.0, -40.0, -10.0, -5.0],  # fully left/above -> corner (0, 0)
            [300.0, 10.0, 400.0, 20.0],
        ],
        np.float32,
    )  # fully right -> last column
    out = im.transform_boxes(boxes, crop_size=224, normalize=False)
    np.testing.assert_array_equal(out, [[0, 0, 0, 0], [223, 10, 223, 20]])
    maps = im.rasterise(out / 224.0, [0.9, 0.4], [0, 0], num_frames=1, grid=7)
    assert maps[0, 0, 0] == pytest.approx(0.9)  # corner cell painted
    assert maps[0, 0, 6] == pytest.approx(0.4)  # right border cell painted
    assert np.count_nonzero(maps) == 2


def test_official_resize_rule_single_long_side_factor():
    # 340x256 (W x H) -> short side 300: new W = floor(340/256*300) = 398, boxes * 398 / 340 on both axes.
    new_h, new_w, (num, den) = im.short_side_resize(256, 340, 300)
    assert (new_h, new_w, num, den) == (300, 398, 398, 340)
    boxes = np.array([[34.0, 25.6, 68.0, 51.2]], np.float32)
    out = im.transform_boxes(boxes, orig_size=(256, 340), resized_size=(new_h, new_w), crop_size=1000, normalize=False)
    np.testing.assert_allclose(out, boxes * np.float32(398) / np.float32(340), rtol=1e-7)
    # Portrait frame: factor new_h / h; same-size: unchanged.
    assert im.short_side_resize(400, 256, 256) == (400, 256, (1, 1))
    assert im.short_side_resize(400, 300, 256)[:2] == (341, 256)
    # Test-time crops.
    assert im.uniform_crop_offset(256, 341, 256, 0) == (0, 0)
    assert im.uniform_crop_offset(256, 341, 256, 1) == (43, 0)
    assert im.uniform_crop_offset(256, 341, 256, 2) == (85, 0)
    assert im.uniform_crop_offset(341, 256, 256, 2) == (0, 85)


def test_rasterise_soft_hard_inclusive_end_cells():
    boxes = np.array(
        [
            [0.0, 0.0, 0.29, 0.14],  # x cells 0..2 (0.29*7=2.03), y 0..0
            [0.1, 0.0, 0.2, 0.1],  # cells x 0..1, y 0..0: inside the first, lower score
            [0.99, 0.99, 1.0, 1.0],
        ]
    )  # beyond 1 -> clamped to 6
    scores = np.array([0.5, 0.3, 0.8])
    soft = im.rasterise(boxes, scores, [1, 1, 2], num_frames=3, grid=7, mode="soft")
    assert soft.shape == (3, 7, 7) and soft.dtype == np.float32
    assert not soft[0].any()  # frame without detections stays 0
    expected = np.zeros((7, 7), np.float32)
    expected[0, 0:3] = 0.5
    np.testing.assert_array_equal(soft[1], expected)  # max(0.5, 0.3) = 0.5 on the overlap
    assert soft[2, 6, 6] == np.float32(0.8) and np.count_nonzero(soft[2]) == 1
    hard = im.rasterise(boxes, scores, [1, 1, 2], num_frames=3, grid=7, mode="hard")
    np.testing.assert_array_equal(hard, (soft > 0).astype(np.float32))
    # Soft keeps the maximum regardless of order.
    again = im.rasterise(boxes[[1, 0]], scores[[1, 0]], [1, 1], num_frames=3, grid=7)
    np.testing.assert_array_equal(again[1], expected)
    with pytest.raises(ValueError):
        im.rasterise(boxes, scores, [0, 0, 3], num_frames=3, grid=7)


def test_build_targets_channels_and_slow_selection():
    hands = np.array([[0.0, 0.0, 0.1, 0.1, 0.7, 31]], np.float32)
    objs = np.array([[0.5, 0.5, 0.6, 0.6, 0.4, 13], [0.5, 0.5, 0.6, 0.6, 0.9, 12]], np.float32)
    full = im.build_targets(hands, objs, num_frames=32, grid=7)
    assert full.shape == (32, 7, 7, 2) and full.dtype == np.float32
    assert full[31, 0, 0, 0] == np.float32(0.7) and full[31, ..., 1].sum() == 0
    slow = im.build_targets(hands, objs, num_frames=32, grid=7, slow_frames=8)
    assert slow.shape == (8, 7, 7, 2)
    np.testing.assert_array_equal(slow, full[[0, 4, 8, 13, 17, 22, 26, 31]])
    assert slow[3, 3, 3, 1] == np.float32(0.4)  # frame 13 kept, frame 12 dropped
    np.testing.assert_array_equal(slow[3, 3:5, 3:5, 1], np.full((2, 2), 0.4, np.float32))  # 3.5..4.2 -> cells 3..4
    assert np.count_nonzero(slow[..., 1]) == 4
    empty = im.build_targets(np.zeros((0, 6)), np.zeros((0, 6)), num_frames=8, grid=8)
    assert empty.shape == (8, 8, 8, 2) and not empty.any()


def test_pixel_rows_to_targets_end_to_end():
    # A detection in a 320x240 frame, resized to short side 256 (341x256), crop at (40, 16), flipped.
    rows = np.array([[100.0, 60.0, 180.0, 120.0, 0.9, 3]], np.float32)
    new_h, new_w, _ = im.short_side_resize(240, 320, 256)
    meta = im.transform_rows(
        rows, orig_size=(240, 320), resized_size=(new_h, new_w), crop_offset=(40, 16), crop_size=224, flip=True
    )
    f = np.float32(new_w) / np.float32(320)
    x1, y1, x2, y2 = 100 * f - 40, 60 * f - 16, 180 * f - 40, 120 * f - 16
    np.testing.assert_allclose(meta[0, :4], np.array([224 - x2 - 1, y1, 224 - x1 - 1, y2]) / 224, rtol=1e-5)
    np.testing.assert_array_equal(meta[0, 4:], [np.float32(0.9), 3])
    target = im.build_targets(meta, np.zeros((0, 6)), num_frames=8, grid=7)
    cells = np.floor(meta[0, :4] * 7).astype(int)
    assert target[3, cells[1] : cells[3] + 1, cells[0] : cells[2] + 1, 0].min() == np.float32(0.9)
    assert np.count_nonzero(target) == (cells[3] - cells[1] + 1) * (cells[2] - cells[0] + 1)


def test_reproduces_official_targets(fixtures_dir):
    inputs = np.load(fixtures_dir / FIXTURE / "inputs.npz")
    outputs = np.load(fixtures_dir / FIXTURE / "outputs.npz")
    t_fast = inputs["pathway1"].shape[2]
    t_slow = inputs["pathway0"].shape[2]
    grid = outputs["handobj_score_map"].shape[-1]
    assert grid == 2
    for i in range(inputs["pathway0"].shape[0]):
        hands, objs = inputs[f"meta_hands_{i}"], inputs[f"meta_objs_{i}"]
        full = im.build_targets(hands, objs, num_frames=t_fast, grid=grid)
        np.testing.assert_array_equal(full[..., 0], outputs["hand_targets"][i])
        np.testing.assert_array_equal(full[..., 1], outputs["obj_targets"][i])
        slow = im.build_targets(hands, objs, num_frames=t_fast, grid=grid, slow_frames=t_slow)
        np.testing.assert_array_equal(slow[..., 0], outputs["hand_targets_slow"][i])
        np.testing.assert_array_equal(slow[..., 1], outputs["obj_targets_slow"][i])


def test_repeated_frames_keep_their_boxes_at_the_last_position():
    # Clip positions 0..5 read list positions [7, 9, 11, 11, 11, 4]: frame 11 is used three times.
    positions = [7, 9, 11, 11, 11, 4]
    np.testing.assert_array_equal(im.last_positions(positions), [0, 1, 4, 4, 4, 5])
    np.testing.assert_array_equal(im.last_positions([3, 3, 3]), [2, 2, 2])
    np.testing.assert_array_equal(im.last_positions([5, 6, 7]), [0, 1, 2])
    # Rows as VideoDetections.rows gives them: one box per clip frame read, t = the clip index.
    rows = np.array(
        [
            [0.0, 0.0, 0.1, 0.1, 0.9, 0],
            [0.2, 0.2, 0.3, 0.3, 0.8, 2],
            [0.2, 0.2, 0.3, 0.3, 0.8, 3],
            [0.2, 0.2, 0.3, 0.3, 0.8, 4],
            [0.5, 0.5, 0.6, 0.6, 0.7, 5],
        ],
        np.float32,
    )
    last = im.assign_repeated_frames(rows, positions, "last")
    np.testing.assert_array_equal(last[:, 5], [0, 4, 4, 4, 5])
    np.testing.assert_array_equal(last[:, :5], rows[:, :5])
    np.testing.assert_array_equal(im.assign_repeated_frames(rows, positions, "all"), rows)
    assert rows[1, 5] == 2  # the input is not modified
    maps = im.build_targets(np.zeros((0, 6)), last, num_frames=6, grid=7)[..., 1]
    assert not maps[2].any() and not maps[3].any() and maps[4, 1, 1] == np.float32(0.8)
    assert im.assign_repeated_frames(np.zeros((0, 6), np.float32), positions).shape == (0, 6)
    with pytest.raises(ValueError, match="repeated-frame rule"):
        im.assign_repeated_frames(rows, positions, "first")
