"""predict CLI: top-k table and the interaction-map picture, on the converted Ego-Exo fixture and on
a demo student trained for 2 steps (a video whose first half shows a hand and second half does not)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from egoexo_jax import predict
from egoexo_jax.data import transforms
from egoexo_jax.demo_data import media, pretrain_scenes, render
from egoexo_jax.slow_frames import slow_indices

import fake_media


def test_predict_prints_table_and_writes_maps(fixtures_dir, tmp_path, capsys):
    ckpt = str(fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth")
    video = tmp_path / "clip.mp4"
    fake_media.write_video(video, 60, height=64, width=80)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"action_{i}" for i in range(10)) + "\n")
    png = tmp_path / "maps.png"
    rc = predict.main(
        [
            "--checkpoint",
            ckpt,
            "--video",
            str(video),
            "--labels",
            str(labels),
            "--top_k",
            "3",
            "--temporal_views",
            "2",
            "--spatial_crops",
            "1",
            "--save_maps",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and all("action_" in r for r in rows)
    scores = [float(r.split()[-1]) for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    img = np.asarray(Image.open(png).convert("RGB"), np.float32)
    # One column per frame of the clip: the fixture's fast pathway has 16 (its maps 4 time steps),
    # 150 px each so the picture stays 2400 px wide; the title fits on one 14-px line.
    cell, header = 150, 8 + 14
    assert img.shape == (header + 3 * cell + 16, 16 * cell, 3)
    frame_row, hand_row, obj_row = (img[header + r * cell : header + (r + 1) * cell] for r in range(3))
    assert hand_row[..., 0].mean() > frame_row[..., 0].mean()  # red overlay
    assert obj_row[..., 2].mean() > frame_row[..., 2].mean()  # blue overlay


def test_maps_picture_shows_the_whole_title_and_every_frame():
    """A one-frame picture is 160 px wide: the title wraps into lines that fit, nothing is cut."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    draw = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    lines = predict._wrap(draw, predict.TITLE, 160 - 8)  # pylint: disable=protected-access
    assert len(lines) >= 3 and " ".join(lines) == predict.TITLE
    assert all(draw.textlength(line) <= 152 for line in lines)
    rng = np.random.default_rng(0)
    for t, t_map in ((1, 1), (8, 2), (16, 8)):
        frames = rng.uniform(size=(t, 32, 32, 3)).astype(np.float32)
        maps = np.zeros((t_map, 2, 2, 2), np.float32)
        maps[t_map - 1, ..., 0] = 1.0  # only the last map time step has a hand
        img = np.asarray(predict.maps_picture(frames, maps, np.arange(t) / 30.0, cell=160), np.float32)
        cell = 160
        header = 8 + 14 * len(predict._wrap(draw, predict.TITLE, t * cell - 8))  # pylint: disable=protected-access
        assert img.shape == (header + 3 * cell + 16, t * cell, 3)
        hand_row = img[header + cell : header + 2 * cell]
        red = [
            hand_row[:, i * cell : (i + 1) * cell, 0].mean() - hand_row[:, i * cell : (i + 1) * cell, 1].mean()
            for i in range(t)
        ]
        # frame i shows map i * t_map // t: the frames of the last map step are red, the others not
        tinted = [i * t_map // t == t_map - 1 for i in range(t)]
        assert all((r > 100) == want for r, want in zip(red, tinted)), (t, t_map, red)


def test_predict_errors_name_the_input(tmp_path, fixtures_dir, capsys):
    ckpt = str(fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth")
    assert predict.main(["--checkpoint", ckpt, "--video", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert predict.main(["--checkpoint", ckpt, "--video", str(bad)]) == 2
    assert "bad.mp4" in capsys.readouterr().err


def test_save_maps_without_a_map_head_fails_before_scoring(fixtures_dir, tmp_path, capsys, monkeypatch):
    ckpt = str(fixtures_dir / "pyslowfast" / "slowfast_r50" / "checkpoint.pyth")  # no interaction head
    video = tmp_path / "clip.mp4"
    fake_media.write_video(video, 30, height=64, width=80)

    def must_not_score(*args, **kwargs):
        raise AssertionError("views were decoded and scored before the --save_maps check")

    monkeypatch.setattr(predict, "load_views", must_not_score)
    rc = predict.main(["--checkpoint", ckpt, "--video", str(video), "--save_maps", str(tmp_path / "m.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "no interaction-map head" in err[0] and "--save_maps" in err[0]


def test_checkpoint_folder_of_stage_workdirs_names_them(tmp_path, capsys):
    demo = tmp_path / "demo_run"  # what the demo command writes: one training workdir per stage
    for stage in ("pretrain_baseline", "pretrain_egoexo"):
        (demo / stage / "checkpoints").mkdir(parents=True)
    (demo / "data").mkdir()
    rc = predict.main(["--checkpoint", str(demo), "--video", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "it holds pretrain_baseline/, pretrain_egoexo/" in err[0] and "data/" not in err[0]
    assert f"--checkpoint={demo / 'pretrain_baseline'}" in err[0]


# ----------------------------------------------------------------------------------------------
# A trained demo checkpoint (the Ego-Exo pre-training stage of the demo, 2 steps, tiny:
# the quick_demo_root fixture of tests/demo_checkpoint.py).


def _hand_then_no_hand_video(path, num_frames=32, height=48, width=64):
    """A demo-generator scene whose first half shows a hand and whose second half does not
    (the same scene rendered with and without its hand). Returns the per-frame hand flags."""
    _, scene = pretrain_scenes.pretrain_video(7, 10, height=height, width=width, num_frames=num_frames)
    assert scene.hand_present and scene.ego  # an egocentric scene: a large hand from the bottom
    with_hand = render.render_scene(scene)
    without = render.render_scene(dataclasses.replace(scene, hand_present=False))
    has_hand = np.arange(num_frames) < num_frames // 2
    frames = np.where(has_hand[:, None, None, None], with_hand.frames, without.frames)
    assert not np.isnan(with_hand.hand_boxes[0]).any()  # the palm is visible in frame 0
    media.write_mp4(path, frames, fps=30, crf=0)
    return has_hand


@pytest.mark.slow  # the shared fixture trains the demo student first (about 1-2 min on 2 cores)
def test_predict_cli_on_a_trained_demo_checkpoint(quick_demo_root, tmp_path, capsys):
    workdir = quick_demo_root / "pretrain_egoexo"
    video = tmp_path / "hand.mp4"
    has_hand = _hand_then_no_hand_video(video)
    png = tmp_path / "maps.png"
    labels = quick_demo_root / "data" / "classes_pretrain.txt"
    rc = predict.main(
        [
            "--checkpoint",
            str(workdir),
            "--video",
            str(video),
            "--labels",
            str(labels),
            "--temporal_views",
            "1",
            "--spatial_crops",
            "1",
            "--save_maps",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "training workdir" in out and "interaction maps:" in out
    assert sum(line.strip()[:1].isdigit() for line in out.splitlines()) == 5  # top-5 of the 8 classes

    # The demo student: 8 fast frames every 4 -> 2 slow frames (the maps' 2 time steps); every one
    # of the 8 frames gets a 160-px column, frames 0-3 with map 0 and frames 4-7 with map 1.
    cell = 160
    img = np.asarray(Image.open(png).convert("RGB"), np.float32)
    header = img.shape[0] - 3 * cell - 16
    assert img.shape[1] == 8 * cell and 0 < header < 60
    # Slow frames of the only view: clip frames floor(linspace(0, 31, 8))[[0, 7]] = video frames 0, 31.
    fast = transforms.kinetics_clip_indices(32, num_frames=8, sampling_rate=4, fps=30.0, clip_idx=0, num_clips=1)
    slow = fast[slow_indices(8, 2)]
    assert slow.tolist() == [0, 31] and has_hand[slow].tolist() == [True, False]
    frame_row, hand_row, obj_row = (img[header + r * cell : header + (r + 1) * cell] for r in range(3))
    hand_col, no_hand_col = (hand_row[:, c * cell : (c + 1) * cell] for c in (0, 7))
    # The hand-overlay cells of the frame with a hand and the frame without one differ ...
    assert np.abs(hand_col - no_hand_col).mean() > 2.0
    # ... and each is its frame tinted red by the predicted hand probability p in [0, 1]:
    # overlay = frame * (1 - 0.7 p) + 0.7 p * (1, 0.1, 0.1), so red never drops, green/blue never rise.
    assert (hand_row[..., 0] >= frame_row[..., 0] - 3).all()
    assert (hand_row[..., 1:] <= frame_row[..., 1:] + 3).all()
    assert hand_row[..., 0].mean() > frame_row[..., 0].mean() and obj_row[..., 2].mean() > frame_row[..., 2].mean()
