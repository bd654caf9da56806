"""Writers of generated media: H.264 mp4 videos and JPEG frames.

The demo sets and the tests' generated media (``tests/fake_media.py``) both write through these,
so there is one encoder set-up to reason about.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction
from typing import Iterable, Sequence

import av
import numpy as np
from PIL import Image

__all__ = ["write_mp4", "write_jpegs"]


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int,
    crf: int,
    preset: str = "ultrafast",
    codec: str = "libx264",
    gop: int | None = None,
    x264_params: str | None = None,
    threads: int | None = None,
    fps_time_base: bool = False,
    faststart: bool = False,
    rotation: int = 0,
    size: tuple[int, int] | None = None,
) -> None:
    """Encodes `[H, W, 3] uint8` RGB frames into an mp4 (yuv420p).

    Args:
      frames: the frames, in order (any iterable; consumed once).
      fps, crf, preset: frame rate and libx264 quality / speed.
      codec: encoder; `crf`, `preset`, `x264_params` and `threads` apply to libx264 only.
      gop: keyframe interval (None: the encoder's choice).
      x264_params: extra libx264 options (e.g. "scenecut=0").
      threads: encoder threads (1 makes libx264's output byte-reproducible; None: its default).
      fps_time_base: time base 1/fps in the stream and the mp4 track (frame i has pts i, so a
        decoder's frame count equals duration x fps exactly, as the official reader asserts);
        otherwise the muxer picks its own track time scale.
      faststart: put the index (moov) before the frames, as streaming sites do.
      rotation: display rotation in degrees counter-clockwise stored in the stream (what phones
        write).
      size: `(height, width)`; taken from the first frame when None (required for no frames).
    """
    frames = iter(frames)
    first = next(frames, None)
    if size is None:
        if first is None:
            raise ValueError(f"{path}: no frames and no size given")
        size = first.shape[:2]
    height, width = size
    options = {}
    if fps_time_base:
        options["video_track_timescale"] = str(fps)
    if faststart:
        options["movflags"] = "faststart"
    container = av.open(os.fspath(path), "w", options=options)
    try:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if fps_time_base:
            stream.time_base = Fraction(1, fps)
        if rotation:
            stream.set_display_rotation(rotation)
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset}
            if threads is not None:
                stream.options = {**stream.options, "threads": str(threads)}
            if x264_params:
                stream.options = {**stream.options, "x264-params": x264_params}
        if gop:
            stream.codec_context.gop_size = gop
        for i, image in enumerate(itertools.chain([first], frames) if first is not None else ()):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if fps_time_base:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def write_jpegs(paths: Sequence[str | os.PathLike], images: Sequence[np.ndarray], *, quality: int = 95) -> None:
    """Writes `[H, W, 3] uint8` RGB images as JPEGs of `quality` (creating folders)."""
    for path, image in zip(paths, images):
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        Image.fromarray(image).save(path, quality=quality)
