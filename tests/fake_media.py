"""Test helper: small generated videos and JPEG frame folders whose frames say their own index.

A "coded" frame shows its index as 16 black/white blocks (2 rows x 8 columns, bit k of the index
in block k, row-major), which survives H.264 and JPEG compression, so a reader's frame-index
bookkeeping can be checked exactly. Files are written with the package's media writers
(`egoexo_jax.demo_data.media`).
"""

from __future__ import annotations

import io
import os
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from egoexo_jax.demo_data import media

CODE_BITS = 16


def coded_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """`[H, W, 3] uint8` image whose 2 x 8 blocks spell `index` in binary (white = 1)."""
    image = np.zeros((height, width, 3), np.uint8)
    rows, cols = 2, CODE_BITS // 2
    for bit in range(CODE_BITS):
        if (index >> bit) & 1:
            r, c = divmod(bit, cols)
            image[r * height // rows : (r + 1) * height // rows, c * width // cols : (c + 1) * width // cols] = 255
    return image


def read_code(frame: np.ndarray) -> int:
    """Inverse of `coded_frame` for a decoded `[H, W, 3]` frame (block centres, threshold 128)."""
    height, width = frame.shape[:2]
    rows, cols = 2, CODE_BITS // 2
    value = 0
    for bit in range(CODE_BITS):
        r, c = divmod(bit, cols)
        y0, y1 = r * height // rows, (r + 1) * height // rows
        x0, x1 = c * width // cols, (c + 1) * width // cols
        my, mx = (y1 - y0) // 4, (x1 - x0) // 4
        block = frame[y0 + my : y1 - my, x0 + mx : x1 - mx]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def write_video(
    path: str | os.PathLike,
    num_frames: int,
    *,
    height: int = 48,
    width: int = 64,
    fps: int = 30,
    crf: int = 0,
    image_fn: Callable[[int, int, int], np.ndarray] = coded_frame,
    **options,
) -> None:
    """Encodes frames `image_fn(i, height, width)` for i < num_frames into an mp4 (yuv420p) with
    the package writer (`egoexo_jax.demo_data.media.write_mp4`; `options`: its gop, preset,
    x264_params, faststart, rotation, codec). Lossless (crf 0) by default."""
    frames = (image_fn(i, height, width) for i in range(num_frames))
    media.write_mp4(path, frames, fps=fps, crf=crf, size=(height, width), **options)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """The JPEG file bytes of `[H, W, 3] uint8` RGB `image` (for readers given bytes, not paths)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Tiny datasets in the official layouts (for tests and smoke runs).

EPIC_COLUMNS = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
    "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
    "all_nouns,all_noun_classes"
)


def write_kinetics_dataset(
    root: str | os.PathLike,
    lengths: Sequence[int],
    *,
    lists: Sequence[str] = ("train.csv", "val.csv", "test.csv"),
    height: int = 48,
    width: int = 64,
    fps: int = 30,
) -> list[str]:
    """Videos `v{i}.mp4` (coded frames, `lengths[i]` frames, label i) and split lists naming all of
    them. Returns the relative paths."""
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    names = []
    for i, n in enumerate(lengths):
        names.append(f"v{i}.mp4")
        write_video(os.path.join(root, names[-1]), n, height=height, width=width, fps=fps)
    for list_name in lists:
        with open(os.path.join(root, list_name), "w", encoding="utf-8") as f:
            f.writelines(f"{name} {i}\n" for i, name in enumerate(names))
    return names


def write_charades_dataset(
    root: str | os.PathLike,
    lengths: Sequence[int],
    labels: Sequence[Sequence[Sequence[int]]],
    *,
    lists: Sequence[str] = ("train_1st.csv", "test_1st.csv"),
    height: int = 48,
    width: int = 64,
) -> list[str]:
    """Frame folders `rgb/C{i}EGO/C{i}EGO-%06d.jpg` (frame j shows code j) and frame lists;
    `labels[i][j]` = classes of frame j of video i. Returns the video ids."""
    root = os.fspath(root)
    ids = []
    rows = ["original_vido_id video_id frame_id path labels"]
    for i, n in enumerate(lengths):
        vid = f"C{i}EGO"
        ids.append(vid)
        rel = [f"{vid}/{vid}-{j + 1:06d}.jpg" for j in range(n)]
        media.write_jpegs(
            [os.path.join(root, "rgb", r) for r in rel], [coded_frame(j, height, width) for j in range(n)]
        )
        for j in range(n):
            rows.append(f'{vid} {vid} {j + 1} {rel[j]} "{",".join(str(c) for c in labels[i][j])}"')
    for list_name in lists:
        with open(os.path.join(root, list_name), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return ids


def write_epic_dataset(
    root: str | os.PathLike,
    video_lengths: dict[str, int],
    segments: Sequence[tuple[str, int, int, int, int]],
    *,
    lists: Sequence[str] = ("EPIC_100_train.csv", "EPIC_100_validation.csv"),
    height: int = 48,
    width: int = 64,
) -> None:
    """Frames `frames/{P}/rgb_frames/{video}/frame_%010d.jpg` (frame n shows code n, n from 1) and
    annotation csvs with the official columns; segments are (video_id, start, stop, verb, noun)."""
    root = os.fspath(root)
    for video, n in video_lengths.items():
        participant = video.split("_")[0]
        folder = os.path.join(root, "frames", participant, "rgb_frames", video)
        media.write_jpegs(
            [os.path.join(folder, f"frame_{k:010d}.jpg") for k in range(1, n + 1)],
            [coded_frame(k, height, width) for k in range(1, n + 1)],
        )
    rows = [EPIC_COLUMNS]
    for i, (video, start, stop, verb, noun) in enumerate(segments):
        participant = video.split("_")[0]
        rows.append(
            f"{video}_{i},{participant},{video},00:00:00.00,00:00:00.00,00:00:01.00,{start},"
            f"{stop},\"do, thing\",v{verb},{verb},n{noun},{noun},['n{noun}'],[{noun}]"
        )
    for list_name in lists:
        with open(os.path.join(root, list_name), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
