"""Reading clip frames: encoded videos through PyAV, JPEG frame folders through Pillow.

Every reader returns `[T, H, W, 3] uint8` arrays for the requested frame indices, in the order asked
(repeats allowed); indices outside the video's frame range are clamped to it.

Videos: a frame's index is computed from its timestamp, `round((pts - start_time) * time_base * fps)`,
so any ordinary mp4 works (no "one pts tick per frame" requirement). A read seeks to the keyframe before
the first wanted frame and decodes only up to the last wanted frame; only the wanted frames are
converted to RGB. Several clips of one opened video can be read in one pass (`read_clips`).

A video whose stream ends well before its container's duration (a file cut mid-stream) cannot
deliver the frames asked for: that read raises `DecodeError` (the pipeline counts and lists it)
instead of repeating the last decodable frame. Only a shortfall of a couple of frames (a frame
count that overstates the stream by rounding) is filled with the last frame.

Display rotation (the display matrix phones write): frames come back as a player shows them,
rotated by the stored multiple of 90 degrees; any other angle is a `DecodeError`.

JPEG frames: Charades-Ego (`VIDEOID/VIDEOID-000001.jpg`, listed in frame lists) and EPIC-Kitchens
(`{P}/rgb_frames/{video}/frame_{n:010d}.jpg`, n = absolute 1-based frame number) layouts, or a list of
encoded JPEG bytes (TFDS records). `bgr=True` returns the channels reversed, which is what OpenCV's
`imdecode` gave the original Charades-Ego / EPIC code.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import av
import numpy as np
from PIL import Image


class DecodeError(RuntimeError):
    """A video or frame could not be read (missing, empty, corrupt)."""


def _to_channel_order(frames: np.ndarray, bgr: bool) -> np.ndarray:
    return np.ascontiguousarray(frames[..., ::-1]) if bgr else frames


def _unique_sorted(indices: np.ndarray, low: int, high: int) -> np.ndarray:
    """Clamps `indices` to [low, high] and returns the sorted distinct values."""
    return np.unique(np.clip(np.asarray(indices, dtype=np.int64), low, high))


class VideoReader:
    """An opened video file (path or encoded bytes) that hands out frames by index.

    Use as a context manager, or call `close()`.

    Attributes:
      fps: frames per second of the video stream (float).
      num_frames: frame count from the container (stream.frames) or, when that is missing, estimated
        from the duration; used for clip sampling.
      height, width: coded frame size in pixels (before any display rotation).
    """

    def __init__(self, source: str | os.PathLike | bytes, *, threads: str = "AUTO", seek_gap: int = 96):
        """Opens `source`.

        Args:
          source: a file path, or the encoded file's bytes.
          threads: PyAV codec `thread_type` ("AUTO", "FRAME", "SLICE", or "NONE" for one thread).
          seek_gap: when the next wanted frame lies more than this many frames after the current decode
            position, seek instead of decoding through the gap.

        Raises:
          DecodeError: missing, empty, or unreadable file, or no video stream.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise DecodeError("empty video bytes")
            self._name = "<bytes>"
            handle = io.BytesIO(source)
        else:
            self._name = os.fspath(source)
            if not os.path.exists(self._name):
                raise DecodeError(f"missing file {self._name}")
            if os.path.getsize(self._name) == 0:
                raise DecodeError(f"zero-length file {self._name}")
            handle = self._name
        try:
            self._container = av.open(handle)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DecodeError(f"cannot open {self._name}: {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(f"no video stream in {self._name}")
        self._stream = self._container.streams.video[0]
        if threads != "NONE":
            self._stream.thread_type = threads
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            self._container.close()
            raise DecodeError(f"no frame rate in {self._name}")
        self.fps = float(rate)
        self._time_base = self._stream.time_base
        self._start = self._stream.start_time or 0
        self._frames_per_tick = float(self._time_base) * self.fps
        self.height = self._stream.codec_context.height
        self.width = self._stream.codec_context.width
        self.num_frames = self._count_frames()
        if self.num_frames <= 0:
            self._container.close()
            raise DecodeError(f"no frames in {self._name}")
        # Index of the last frame the container's duration promises (frame count when unknown), and
        # how far the stream may fall short of it before a read counts as truncated.
        self._expected_last = self._duration_frames() - 1
        self._tolerance = max(2, self._expected_last // 100)
        self._seek_gap = seek_gap
        self._frames = None  # live decode generator
        self._position = None  # index of the last frame pulled from the generator

    def _count_frames(self) -> int:
        if self._stream.frames:
            return int(self._stream.frames)
        if self._stream.duration is not None:
            return int(round(float(self._stream.duration * self._time_base) * self.fps))
        if self._container.duration is not None:
            return int(round(self._container.duration / av.time_base * self.fps))
        return 0

    def _duration_frames(self) -> int:
        """Frames the stream's (or container's) duration spans, in `_index_of` units."""
        if self._stream.duration is not None:
            return int(round(self._stream.duration * self._frames_per_tick))
        if self._container.duration is not None:
            return int(round(self._container.duration / av.time_base * self.fps))
        return self.num_frames

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """`[H, W, 3] uint8` RGB as displayed: the frame's display rotation applied."""
        array = frame.to_ndarray(format="rgb24")
        rotation = int(round(frame.rotation or 0))
        if rotation % 90:
            raise DecodeError(
                f"display rotation of {rotation} degrees in {self._name}: only multiples of 90 are supported"
            )
        return np.ascontiguousarray(np.rot90(array, k=(rotation // 90) % 4)) if rotation % 360 else array

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._frames = None
        self._container.close()

    def _index_of(self, frame: av.VideoFrame) -> int:
        if frame.pts is None:
            return (self._position if self._position is not None else -1) + 1
        return int(round((frame.pts - self._start) * self._frames_per_tick))

    def _seek(self, index: int) -> None:
        """Seeks to the keyframe at or before frame `index` (half a frame early, against rounding)."""
        seconds = max(index - 0.5, 0.0) / self.fps
        target = self._start + int(seconds / self._time_base)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._position = None

    def _rewind(self) -> None:
        self._container.seek(self._start, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._position = None

    def _decode_wanted(self, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Decodes the frames whose indices are in sorted `wanted`; returns {index: [H, W, 3] uint8}.

        A wanted index that the stream skips (timestamp gap) gets the next frame; wanted indices a few
        frames past the real end of the stream get the last frame. A stream that ends well before the
        container's duration (cut mid-stream) raises `DecodeError`.
        """
        out: dict[int, np.ndarray] = {}
        pending = [int(i) for i in wanted]
        k = 0
        rewound = False
        last = None  # the most recent decoded frame, not yet converted
        last_index = -1
        try:
            while k < len(pending):
                target = pending[k]
                if rewound and self._position is None:
                    seeked = False  # decoding from the start after a late landing
                else:
                    seeked = (
                        self._frames is None
                        or self._position is None
                        or target <= self._position
                        or target > self._position + self._seek_gap
                    )
                    if seeked:
                        self._seek(target)
                landed_late = end_of_stream = False
                for frame in self._frames:
                    index = self._index_of(frame)
                    if seeked and index > target and not rewound:
                        # The demuxer put us after the target: decode from the start instead.
                        landed_late = True
                        break
                    seeked = False
                    self._position = index
                    last, last_index = frame, max(last_index, index)
                    if pending[k] <= index:
                        array = self._to_rgb(frame)
                        while k < len(pending) and pending[k] <= index:
                            out[pending[k]] = array
                            k += 1
                    # Past this seek's target, seek again rather than decode through a long gap.
                    if k >= len(pending) or (pending[k] > index + self._seek_gap and index >= target):
                        break
                else:
                    end_of_stream = True
                if landed_late:
                    self._rewind()
                    rewound = True
                    continue
                if end_of_stream:
                    self._frames = None
                    if (
                        k < len(pending)
                        and pending[-1] > last_index + self._tolerance
                        and last_index < self._expected_last - self._tolerance
                    ):
                        raise DecodeError(
                            f"{self._name} ends at frame {last_index} but frame {pending[-1]} was "
                            f"requested (its duration promises {self._expected_last + 1} frames): "
                            "truncated or corrupt"
                        )
                    if last is not None and k < len(pending):
                        array = self._to_rgb(last)
                        for index in pending[k:]:
                            out[index] = array
                    break
        except (av.error.FFmpegError, ValueError) as e:
            raise DecodeError(f"decode failed in {self._name}: {e}") from e
        return out

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Returns the frames at absolute `indices` (clamped to the decodable range).

        Args:
          indices: `[T]` integer frame indices, any order, repeats allowed.

        Returns:
          `[T, H, W, 3] uint8` RGB frames.

        Raises:
          DecodeError: nothing could be decoded.
        """
        return self.read_clips([indices])[0]

    def read_clips(self, clips: Iterable[Sequence[int] | np.ndarray]) -> list[np.ndarray]:
        """Reads several clips of this video in one pass over the union of their frames.

        Args:
          clips: each a `[T_i]` integer array of absolute frame indices.

        Returns:
          a list of `[T_i, H, W, 3] uint8` RGB arrays, one per clip.
        """
        clips = [np.asarray(c, dtype=np.int64) for c in clips]
        wanted = _unique_sorted(np.concatenate(clips), 0, max(self.num_frames - 1, 0))
        decoded = self._decode_wanted(wanted)
        if not decoded:
            raise DecodeError(f"no frame decoded from {self._name} (wanted {wanted[0]}..{wanted[-1]})")
        # Fill frames past the real end (the container's frame count may overstate it) with the last one.
        have = np.array(sorted(decoded), dtype=np.int64)
        results = []
        for clip in clips:
            clamped = np.clip(clip, 0, max(self.num_frames - 1, 0))
            pos = np.searchsorted(have, clamped, side="right") - 1
            pos = np.maximum(pos, 0)
            results.append(np.stack([decoded[int(have[p])] for p in pos]))
        return results


def read_video_clip(
    source: str | os.PathLike | bytes, indices: Sequence[int] | np.ndarray, *, bgr: bool = False, threads: str = "AUTO"
) -> np.ndarray:
    """Opens `source`, reads frames `indices` and closes it. Returns `[T, H, W, 3] uint8`."""
    with VideoReader(source, threads=threads) as reader:
        return _to_channel_order(reader.read(indices), bgr)


def decode_jpeg(data_or_path: str | os.PathLike | bytes) -> np.ndarray:
    """Decodes one JPEG (path or bytes) into `[H, W, 3] uint8` RGB.

    Raises:
      DecodeError: missing, empty or unreadable image.
    """
    try:
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            if len(data_or_path) == 0:
                raise DecodeError("empty JPEG bytes")
            image = Image.open(io.BytesIO(data_or_path))
        else:
            path = os.fspath(data_or_path)
            if not os.path.exists(path):
                raise DecodeError(f"missing frame {path}")
            image = Image.open(path)
        with image:
            return np.asarray(image.convert("RGB"))
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        shown = data_or_path if not isinstance(data_or_path, bytes) else "<bytes>"
        raise DecodeError(f"cannot decode frame {shown}: {e}") from e


def read_jpeg_frames(
    items: Sequence[str | bytes], positions: Sequence[int] | np.ndarray, *, bgr: bool = False
) -> np.ndarray:
    """Reads the frames at `positions` of an ordered frame sequence.

    Args:
      items: the sequence's frames, as file paths or encoded JPEG bytes (anything indexable).
      positions: `[T]` 0-based positions into `items`; clamped to [0, len(items) - 1]; each distinct
        frame is decoded once.
      bgr: reverse the channels (OpenCV order).

    Returns:
      `[T, H, W, 3] uint8`.
    """
    n = len(items)
    if n == 0:
        raise DecodeError("empty frame sequence")
    positions = np.clip(np.asarray(positions, dtype=np.int64), 0, n - 1)
    cache: dict[int, np.ndarray] = {}
    frames = []
    for p in positions:
        p = int(p)
        if p not in cache:
            cache[p] = decode_jpeg(items[p])
        frames.append(cache[p])
    shapes = {f.shape for f in cache.values()}
    if len(shapes) != 1:
        raise DecodeError(f"frames of different sizes {sorted(shapes)}")
    return _to_channel_order(np.stack(frames), bgr)


class FrameSequence:
    """Ordered list of frame file paths, stored compactly.

    Either a printf-style template with a first number (`template % (first + i)` is frame i), which is
    what the Charades-Ego and EPIC layouts reduce to, or an explicit array of paths.
    """

    def __init__(
        self,
        *,
        template: str | None = None,
        first: int = 0,
        count: int = 0,
        paths: np.ndarray | Sequence[str] | None = None,
    ):
        if (template is None) == (paths is None):
            raise ValueError("give either template or paths")
        self.template = template
        self.first = int(first)
        if paths is not None:
            self._paths = np.asarray(paths, dtype=np.str_)
            self.count = len(self._paths)
        else:
            self._paths = None
            self.count = int(count)

    @classmethod
    def from_paths(cls, paths: Sequence[str]) -> "FrameSequence":
        """Compresses `paths` into a template when they are consecutively numbered, else keeps them."""
        paths = list(paths)
        if paths:
            template, first = _template_of(paths[0])
            if template is not None and all(template % (first + i) == p for i, p in enumerate(paths)):
                return cls(template=template, first=first, count=len(paths))
        return cls(paths=paths)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self.count:
            raise IndexError(i)
        if self._paths is not None:
            return str(self._paths[i])
        return self.template % (self.first + i)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, FrameSequence)
            and len(self) == len(other)
            and all(self[i] == other[i] for i in range(len(self)))
        )

    def __repr__(self) -> str:
        head = self[0] if self.count else ""
        return f"FrameSequence({self.count} frames, first={head!r})"


def _template_of(path: str) -> tuple[str | None, int]:
    """Finds the last run of digits in the file name: 'a/V-000012.jpg' -> ('a/V-%06d.jpg', 12)."""
    base_start = path.rfind("/") + 1
    end = len(path)
    i = end - 1
    while i >= base_start and not path[i].isdigit():
        i -= 1
    if i < base_start:
        return None, 0
    j = i
    while j >= base_start and path[j].isdigit():
        j -= 1
    digits = path[j + 1 : i + 1]
    escaped_head = path[: j + 1].replace("%", "%%")
    escaped_tail = path[i + 1 :].replace("%", "%%")
    return f"{escaped_head}%0{len(digits)}d{escaped_tail}", int(digits)


def epic_frame_path(prefix: str, participant_id: str, video_id: str, frame_number: int) -> str:
    """Path of EPIC frame `frame_number` (absolute, 1-based)."""
    return os.path.join(prefix, participant_id, "rgb_frames", video_id, f"frame_{int(frame_number):010d}.jpg")


def epic_frame_sequence(
    prefix: str, participant_id: str, video_id: str, start_frame: int, stop_frame: int
) -> FrameSequence:
    """Frames start_frame..stop_frame (inclusive, absolute 1-based) of an EPIC video; position 0 is
    `start_frame`."""
    template = os.path.join(prefix, participant_id, "rgb_frames", video_id).replace("%", "%%")
    return FrameSequence(template=template + "/frame_%010d.jpg", first=start_frame, count=stop_frame - start_frame + 1)
