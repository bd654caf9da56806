"""Reading clip frames from encoded videos through PyAV (JPEG frame sequences: `frames.py`).

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

`gs://` URLs (through `egoexo_jax.storage`): a video object of at most `WHOLE_OBJECT_LIMIT` bytes is
fetched in one request and decoded from memory; a larger one is handed to PyAV as a seekable file
(the bytes that request brought, then ranged reads with read-ahead). Local paths are opened by PyAV,
once the storage layer found them to be regular files (a FIFO would block the open forever). A stream
whose coded frames exceed `MAX_FRAME_PIXELS` is a `DecodeError` before anything is decoded.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Iterable, Sequence

import av
import numpy as np

from egoexo_jax import storage
from egoexo_jax.data.errors import DecodeError
from egoexo_jax.data.frames import (
    MAX_FRAME_PIXELS,
    FrameSequence,
    channel_order,
    check_frame_size,
    decode_jpeg,
    epic_frame_path,
    epic_frame_sequence,
    read_jpeg_frames,
)

# The frame-sequence readers are imported from here too.
__all__ = [
    "DecodeError",
    "FrameSequence",
    "MAX_FRAME_PIXELS",
    "VideoReader",
    "WHOLE_OBJECT_LIMIT",
    "decode_jpeg",
    "epic_frame_path",
    "epic_frame_sequence",
    "read_jpeg_frames",
    "read_video_clip",
]

# A `gs://` video up to this size is fetched whole (one request) and decoded from memory; a larger
# one is read in ranges as PyAV seeks (Kinetics clips are a few MB; long EPIC/Ego4D videos are not).
WHOLE_OBJECT_LIMIT = 64 * 2**20


def _unique_sorted(indices: np.ndarray, low: int, high: int) -> np.ndarray:
    """Clamps `indices` to [low, high] and returns the sorted distinct values."""
    return np.unique(np.clip(np.asarray(indices, dtype=np.int64), low, high))


class _LargeObject(io.RawIOBase):
    """A `gs://` object larger than `WHOLE_OBJECT_LIMIT` as a seekable binary file: the first bytes,
    already fetched, from memory; the rest through `storage.open_read` (ranged reads with
    read-ahead), opened when first needed (an mp4 keeps its index at the start or the end)."""

    def __init__(self, path: str, head: bytes):
        super().__init__()
        self._path, self._head, self._pos = path, head, 0
        self._ranged = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _tail(self) -> BinaryIO:
        if self._ranged is None:
            self._ranged = storage.open_read(self._path)
        return self._ranged

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            base = self._tail().seek(0, io.SEEK_END)
        else:
            base = self._pos if whence == io.SEEK_CUR else 0
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset} in {self._path}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos < len(self._head):
            chunk = self._head[self._pos : self._pos + len(view)]
        else:
            tail = self._tail()
            tail.seek(self._pos)
            chunk = tail.read(len(view))
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def close(self) -> None:
        if self._ranged is not None:
            self._ranged.close()
            self._ranged = None
        self._head = b""
        super().close()


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
          source: a file path or `gs://` URL, or the encoded file's bytes.
          threads: PyAV codec `thread_type` ("AUTO", "FRAME", "SLICE", or "NONE" for one thread).
          seek_gap: when the next wanted frame lies more than this many frames after the current decode
            position, seek instead of decoding through the gap.

        Raises:
          DecodeError: missing, empty, unreadable or not a regular file, no video stream, or frames
            over `MAX_FRAME_PIXELS` (from the stream header, before decoding).
        """
        self._file = None  # the ranged-read file object of a large `gs://` video
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise DecodeError("empty video bytes")
            self._name = "<bytes>"
            handle = io.BytesIO(source)
        elif storage.is_url(source):
            self._name = os.fspath(source)
            handle = self._open_object()
        else:
            self._name = os.fspath(source)
            if not storage.exists(self._name):
                raise DecodeError(f"missing file {self._name}")
            try:  # a FIFO or device is refused here instead of blocking inside PyAV
                with storage.open_read(self._name):
                    pass
            except OSError as e:
                raise DecodeError(f"cannot read {self._name}: {e}") from e
            if storage.size(self._name) == 0:
                raise DecodeError(f"zero-length file {self._name}")
            handle = self._name
        try:
            self._container = av.open(handle)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            self._close_file()
            raise DecodeError(f"cannot open {self._name}: {e}") from e
        if not self._container.streams.video:
            self.close()
            raise DecodeError(f"no video stream in {self._name}")
        self._stream = self._container.streams.video[0]
        if threads != "NONE":
            self._stream.thread_type = threads
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            self.close()
            raise DecodeError(f"no frame rate in {self._name}")
        self.fps = float(rate)
        self._time_base = self._stream.time_base
        self._start = self._stream.start_time or 0
        self._frames_per_tick = float(self._time_base) * self.fps
        self.height = self._stream.codec_context.height
        self.width = self._stream.codec_context.width
        try:
            check_frame_size(self.width, self.height, f"size of {self._name}")
        except DecodeError:
            self.close()
            raise
        self.num_frames = self._count_frames()
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(f"no frames in {self._name}")
        # Index of the last frame the container's duration promises (frame count when unknown), and
        # how far the stream may fall short of it before a read counts as truncated.
        self._expected_last = self._duration_frames() - 1
        self._tolerance = max(2, self._expected_last // 100)
        self._seek_gap = seek_gap
        self._frames = None  # live decode generator
        self._position = None  # index of the last frame pulled from the generator

    def _open_object(self) -> BinaryIO:
        """The `gs://` object as a file PyAV reads: its bytes in memory when it is at most
        `WHOLE_OBJECT_LIMIT` (one request: asking for one byte more tells whether that was all),
        else `_LargeObject` (those bytes, then ranged reads)."""
        limit = WHOLE_OBJECT_LIMIT
        try:
            head = storage.read_bytes(self._name, start=0, end=limit + 1)
            if len(head) == 0:
                raise DecodeError(f"zero-length file {self._name}")
            if len(head) <= limit:
                return io.BytesIO(head)
            self._file = _LargeObject(self._name, head)
            return self._file
        except FileNotFoundError:
            raise DecodeError(f"missing file {self._name}") from None
        except OSError as e:
            raise DecodeError(f"cannot read {self._name}: {e}") from e

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

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
        self._close_file()

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
        except (av.error.FFmpegError, OSError, ValueError) as e:  # OSError: a failed ranged read of an object
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
        return channel_order(reader.read(indices), bgr)
