"""JPEG frame sequences: Charades-Ego and EPIC-Kitchens frame folders, or JPEG bytes of TFDS records.

Layouts: Charades-Ego (`VIDEOID/VIDEOID-000001.jpg`, listed in frame lists) and EPIC-Kitchens
(`{P}/rgb_frames/{video}/frame_{n:010d}.jpg`, n = absolute 1-based frame number). `read_jpeg_frames`
returns `[T, H, W, 3] uint8` for the requested positions, in the order asked (repeats allowed,
clamped to the sequence). `bgr=True` returns the channels reversed, which is what OpenCV's `imdecode`
gave the original Charades-Ego / EPIC code.

Frames may be `gs://` URLs (through `egoexo_jax.storage`): a clip's distinct frames are fetched
concurrently, then decoded from memory. Local frames are read through `egoexo_jax.storage` (a FIFO
or device is refused, never waited on) and decoded by Pillow. A frame over `MAX_FRAME_PIXELS` is a
`DecodeError`, found from its header before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image

from egoexo_jax import storage
from egoexo_jax.data.errors import DecodeError

# Frames larger than this (pixels, read from the image header before decoding) are refused as a
# `DecodeError`: 8192 x 8192 is far above any dataset's frames, and a header claiming 30000 x 30000
# would otherwise make one worker allocate gigabytes (PIL itself refuses headers over twice its own
# limit inside `Image.open`; that becomes the same `DecodeError`).
MAX_FRAME_PIXELS = 8192 * 8192


def check_frame_size(width: int, height: int, name: str) -> None:
    """Raises `DecodeError` naming `name` when a `width x height` frame exceeds `MAX_FRAME_PIXELS`."""
    if int(width) * int(height) > MAX_FRAME_PIXELS:
        raise DecodeError(
            f"frame {name} is {width}x{height} pixels, more than the limit of {MAX_FRAME_PIXELS} "
            "(8192x8192); expected a video frame"
        )


def channel_order(frames: np.ndarray, bgr: bool) -> np.ndarray:
    """`frames` as they are (RGB), or with the channels reversed (BGR, OpenCV's order)."""
    return np.ascontiguousarray(frames[..., ::-1]) if bgr else frames


def decode_jpeg(data_or_path: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """Decodes one JPEG (path, `gs://` URL or bytes) into `[H, W, 3] uint8` RGB.

    `name`: what errors call bytes (e.g. the URL they were fetched from); default `<bytes>`.

    Raises:
      DecodeError: missing, empty, unreadable or not a regular file, or larger than
        `MAX_FRAME_PIXELS` (checked from the header, before decoding).
    """
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        shown = name or "<bytes>"
        if len(data_or_path) == 0:
            raise DecodeError(f"zero-length frame {name}" if name else "empty JPEG bytes")
        source = io.BytesIO(data_or_path)
    else:
        shown = os.fspath(data_or_path)
        if storage.is_url(shown):
            return decode_jpeg(_fetched(shown, storage.read_many([shown])[0]), name=shown)
        if not storage.exists(shown):
            raise DecodeError(f"missing frame {shown}")
        try:  # through storage: a FIFO or device is refused before a byte is read
            source = io.BytesIO(storage.read_bytes(shown))
        except OSError as e:
            raise DecodeError(f"cannot read frame {shown}: {e}") from e
        if not source.getbuffer().nbytes:
            raise DecodeError(f"zero-length frame {shown}")
    try:
        with Image.open(source) as image:
            check_frame_size(image.width, image.height, shown)
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as e:  # PIL refuses headers over twice its own limit in open()
        raise DecodeError(
            f"frame {shown} is larger than the limit of {MAX_FRAME_PIXELS} pixels (8192x8192) ({e}); "
            "expected a video frame"
        ) from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DecodeError(f"cannot decode frame {shown}: {e}") from e


def _fetched(url: str, got: bytes | Exception) -> bytes:
    """The bytes `storage.read_many` fetched for `url`, or the `DecodeError` naming it."""
    if isinstance(got, FileNotFoundError):
        raise DecodeError(f"missing frame {url}")
    if isinstance(got, Exception):
        raise DecodeError(f"cannot read frame {url}: {got}") from got
    return got


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
    distinct = list(dict.fromkeys(positions.tolist()))
    # Frames in a bucket: the clip's distinct objects are fetched concurrently, then decoded.
    urls = [p for p in distinct if isinstance(items[p], str) and storage.is_url(items[p])]
    fetched = dict(zip(urls, storage.read_many([items[p] for p in urls]))) if urls else {}
    cache: dict[int, np.ndarray] = {}
    for p in distinct:
        if p in fetched:
            cache[p] = decode_jpeg(_fetched(items[p], fetched[p]), name=items[p])
        else:
            cache[p] = decode_jpeg(items[p])
    frames = [cache[p] for p in positions.tolist()]
    shapes = {f.shape for f in cache.values()}
    if len(shapes) != 1:
        raise DecodeError(f"frames of different sizes {sorted(shapes)}")
    return channel_order(np.stack(frames), bgr)


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
    """Path (or URL) of EPIC frame `frame_number` (absolute, 1-based)."""
    return storage.join(prefix, participant_id, "rgb_frames", video_id, f"frame_{int(frame_number):010d}.jpg")


def epic_frame_sequence(
    prefix: str, participant_id: str, video_id: str, start_frame: int, stop_frame: int
) -> FrameSequence:
    """Frames start_frame..stop_frame (inclusive, absolute 1-based) of an EPIC video; position 0 is
    `start_frame`."""
    template = storage.join(prefix, participant_id, "rgb_frames", video_id).replace("%", "%%")
    return FrameSequence(template=template + "/frame_%010d.jpg", first=start_frame, count=stop_frame - start_frame + 1)
