"""Kinetics split lists: one `relative/path label` line per video, no header.

`{path_to_data_dir}/{train,val,test}.csv`; the full path of a video is `path_prefix/relative/path`
(either may be a `gs://` URL);
labels are integers 0..num_classes-1 (400 for Kinetics-400).
"""

from __future__ import annotations

import dataclasses
import os

from egoexo_jax import storage
from egoexo_jax.data.errors import AnnotationError

NUM_CLASSES = 400


@dataclasses.dataclass(frozen=True)
class KineticsVideo:
    """One line of a Kinetics split list.

    Attributes:
      key: the relative path exactly as written in the list (keys the official ego/object aux files).
      path: the file to decode, `path_prefix/key`.
      label: class index.
    """

    key: str
    path: str
    label: int

    @property
    def video_id(self) -> str:
        """Basename without extension (names the hand-object detection file `{video_id}.npy`)."""
        return os.path.splitext(storage.basename(self.key))[0]


def read_kinetics_list(
    list_path: str | os.PathLike, *, path_prefix: str = "", separator: str = " ", num_classes: int = NUM_CLASSES
) -> list[KineticsVideo]:
    """Parses a Kinetics split list.

    Blank lines are skipped. The label is the text after the last separator, so paths may contain
    the separator.

    Raises:
      AnnotationError: a line without a separator, a non-integer label, or a label outside
        [0, num_classes).
    """
    videos = []
    with storage.open_text(os.fspath(list_path), encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(separator, 1)
            if len(parts) != 2 or not parts[0].strip():
                raise AnnotationError(list_path, line_number, f"expected 'relative/path{separator}label', got {line!r}")
            key, label_text = parts[0].strip(), parts[1].strip()
            try:
                label = int(label_text)
            except ValueError:
                raise AnnotationError(list_path, line_number, f"label {label_text!r} is not an integer") from None
            if not 0 <= label < num_classes:
                raise AnnotationError(list_path, line_number, f"label {label} outside [0, {num_classes})")
            videos.append(KineticsVideo(key=key, path=storage.join(path_prefix, key), label=label))
    return videos
