"""predict CLI: top-k table and the interaction-map picture, on the converted Ego-Exo fixture and on
a demo student trained for 2 steps (a video whose first half shows a hand and second half does not)."""
import dataclasses
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from egoexo_jax import predict
from egoexo_jax.data import fake_media, synthetic, transforms


def test_predict_prints_table_and_writes_maps(fixtures_dir, tmp_path, capsys):
    ckpt = str(fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth")
    video = tmp_path / "clip.mp4"
    fake_media.write_video(video, 60, height=64, width=80)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"action_{i}" for i in range(10)) + "\n")
    png = tmp_path / "maps.png"
    rc = predict.main(["--checkpoint", ckpt, "--video", str(video), "--labels", str(labels), "--top-k", "3",
                       "--temporal-views", "2", "--spatial-crops", "1", "--save-maps", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and all("action_" in r for r in rows)
    scores = [float(r.split()[-1]) for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    img = np.asarray(Image.open(png).convert("RGB"), np.float32)
    assert img.shape == (24 + 3 * 160 + 16, 4 * 160, 3)  # 4 slow frames, 3 rows of 160 px
    frame_row, hand_row, obj_row = (img[24 + r * 160: 24 + (r + 1) * 160] for r in range(3))
    assert hand_row[..., 0].mean() > frame_row[..., 0].mean()  # red overlay
    assert obj_row[..., 2].mean() > frame_row[..., 2].mean()  # blue overlay


def test_predict_errors_name_the_input(tmp_path, fixtures_dir, capsys):
    ckpt = str(fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth")
    assert predict.main(["--checkpoint", ckpt, "--video", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert predict.main(["--checkpoint", ckpt, "--video", str(bad)]) == 2
    assert "bad.mp4" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# A trained demo checkpoint (the Ego-Exo pre-training stage of the demo, 2 steps, tiny).

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from demo_checkpoint import quick_demo_root  # noqa: E402,F401  pylint: disable=wrong-import-position


def _hand_then_no_hand_video(path, num_frames=32, height=48, width=64):
    """A demo-generator scene whose first half shows a hand and whose second half does not
    (the same scene rendered with and without its hand). Returns the per-frame hand flags."""
    _, scene = synthetic.pretrain_video(7, 10, height=height, width=width, num_frames=num_frames)
    assert scene.hand_present and scene.ego  # an egocentric scene: a large hand from the bottom
    with_hand = synthetic.render_scene(scene)
    without = synthetic.render_scene(dataclasses.replace(scene, hand_present=False))
    has_hand = np.arange(num_frames) < num_frames // 2
    frames = np.where(has_hand[:, None, None, None], with_hand.frames, without.frames)
    assert not np.isnan(with_hand.hand_boxes[0]).any()  # the palm is visible in frame 0
    fake_media.write_video(path, num_frames, height=height, width=width, image_fn=lambda i, h, w: frames[i])
    return has_hand


@pytest.mark.slow  # the shared fixture trains the demo student first (about 1-2 min on 2 cores)
def test_predict_cli_on_a_trained_demo_checkpoint(quick_demo_root, tmp_path, capsys):
    workdir = quick_demo_root / "pretrain_egoexo"
    video = tmp_path / "hand.mp4"
    has_hand = _hand_then_no_hand_video(video)
    png = tmp_path / "maps.png"
    labels = quick_demo_root / "data" / "classes_pretrain.txt"
    rc = predict.main(["--checkpoint", str(workdir), "--video", str(video), "--labels", str(labels),
                       "--temporal-views", "1", "--spatial-crops", "1", "--save-maps", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "training workdir" in out and "interaction maps:" in out
    assert sum(line.strip()[:1].isdigit() for line in out.splitlines()) == 5  # top-5 of the 8 classes

    # The demo student: 8 fast frames every 4 -> 2 slow frames, each one 160-px column.
    cell = 160
    img = np.asarray(Image.open(png).convert("RGB"), np.float32)
    assert img.shape == (24 + 3 * cell + 16, 2 * cell, 3)
    # Slow frames of the only view: clip frames floor(linspace(0, 31, 8))[[0, 7]] = video frames 0, 31.
    fast = transforms.kinetics_clip_indices(32, num_frames=8, sampling_rate=4, fps=30.0, clip_idx=0, num_clips=1)
    slow = fast[transforms.slow_indices(8, 4)]
    assert slow.tolist() == [0, 31] and has_hand[slow].tolist() == [True, False]
    frame_row, hand_row, obj_row = (img[24 + r * cell: 24 + (r + 1) * cell] for r in range(3))
    hand_col, no_hand_col = (hand_row[:, c * cell:(c + 1) * cell] for c in range(2))
    # The hand-overlay cells of the frame with a hand and the frame without one differ ...
    assert np.abs(hand_col - no_hand_col).mean() > 2.0
    # ... and each is its frame tinted red by the predicted hand probability p in [0, 1]:
    # overlay = frame * (1 - 0.7 p) + 0.7 p * (1, 0.1, 0.1), so red never drops, green/blue never rise.
    assert (hand_row[..., 0] >= frame_row[..., 0] - 3).all()
    assert (hand_row[..., 1:] <= frame_row[..., 1:] + 3).all()
    assert hand_row[..., 0].mean() > frame_row[..., 0].mean() and obj_row[..., 2].mean() > frame_row[..., 2].mean()
