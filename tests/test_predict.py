"""predict CLI: top-k table and the interaction-map picture, on the converted Ego-Exo fixture."""
import numpy as np
from PIL import Image

from egoexo_jax import predict
from egoexo_jax.data import fake_media


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
