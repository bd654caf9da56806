"""Random-access sources of `Item`s: the raw files + official annotation files, or TFDS ArrayRecord.

Both sources hand out the same `Item` (metadata + a media handle), so clip loading does not care where
the bytes came from. Sources are picklable (grain ships them to worker processes); the TFDS source
opens its ArrayRecord files lazily in each process.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from egoexo_jax import storage
from egoexo_jax.cli import InputError, MissingFileError
from egoexo_jax.data import charades_ego, epic_kitchens, kinetics
from egoexo_jax.data.errors import not_utf8
from egoexo_jax.data.frames import FrameSequence

DATASETS = ("kinetics", "charades_ego", "epic100", "epic55")
EPIC_DATASETS = ("epic100", "epic55")
TFDS_NAMES = {
    "kinetics": "egoexo_kinetics",
    "charades_ego": "egoexo_charades_ego",
    "epic100": "egoexo_epic100",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """One video (Kinetics, Charades-Ego) or action segment (EPIC) ready to be sampled.

    Attributes:
      dataset: 'kinetics' | 'charades_ego' | 'epic100' | 'epic55'.
      key: the id other files use (Kinetics: relative path from the split list; Charades-Ego:
        video id of the frame list; EPIC-100: narration_id; EPIC-55: uid).
      video_id: name of the per-video hand-object detection file (without `.npy`).
      media: Kinetics: a file path or the encoded video bytes; Charades-Ego/EPIC: a `FrameSequence`
        of JPEG paths or a sequence of JPEG bytes.
      frame_offset: absolute frame number of media position 0 (EPIC: start_frame; else 0).
      label: Kinetics class (int).
      verb, noun: EPIC classes (-1 unlabelled).
      label_frames, label_classes: Charades-Ego (position, class) pairs, `[M] int32` each.
    """

    dataset: str
    key: str
    video_id: str
    media: Any
    frame_offset: int = 0
    label: int = -1
    verb: int = -1
    noun: int = -1
    label_frames: np.ndarray | None = None
    label_classes: np.ndarray | None = None

    @property
    def is_video(self) -> bool:
        return self.dataset == "kinetics"

    def describe(self) -> str:
        """A path (or id) for the bad-input log."""
        if isinstance(self.media, (str, os.PathLike)):
            return os.fspath(self.media)
        if isinstance(self.media, FrameSequence) and len(self.media):
            return storage.dirname(self.media[0])
        return f"{self.dataset}:{self.key}"


def split_list(cfg, split: str) -> str:
    name = {"train": cfg.train_list, "val": cfg.val_list, "test": cfg.test_list}[split]
    return storage.join(cfg.path_to_data_dir, name)


class FileSource:
    """Items from the official split/annotation files; media are paths under `path_prefix` (lists and
    media may be `gs://` URLs)."""

    def __init__(self, cfg, split: str):
        self.dataset = cfg.dataset
        self.split = split
        self.list_path = split_list(cfg, split)
        self._prefix = cfg.path_prefix
        if cfg.dataset not in DATASETS:
            raise InputError(f"unknown dataset, config.data.dataset={cfg.dataset!r}, expected one of {DATASETS}")
        storage.check(cfg.path_to_data_dir, "config.data.path_to_data_dir")
        storage.check(cfg.path_prefix, "config.data.path_prefix")
        if not storage.isdir(cfg.path_to_data_dir or "."):
            raise MissingFileError(
                f"data folder not found, config.data.path_to_data_dir={cfg.path_to_data_dir!r}, "
                f"expected the folder holding the {split} list {storage.basename(self.list_path)}"
            )
        if not storage.isfile(self.list_path):
            raise MissingFileError(
                f"{split} list not found, {self.list_path}, expected the file named by "
                f"config.data.{split}_list inside config.data.path_to_data_dir"
            )
        try:
            if cfg.dataset == "kinetics":
                self._records = kinetics.read_kinetics_list(
                    self.list_path,
                    path_prefix=cfg.path_prefix,
                    separator=cfg.path_label_separator,
                    num_classes=cfg.num_classes,
                )
            elif cfg.dataset == "charades_ego":
                self._records = charades_ego.read_charades_ego(
                    self.list_path, path_prefix=cfg.path_prefix, fps=cfg.charades_fps
                )
            else:
                self._records = epic_kitchens.read_epic_annotations(self.list_path, cfg.dataset)
        except UnicodeDecodeError as e:
            raise not_utf8(self.list_path, e) from None
        if not self._records:
            raise InputError(f"no videos listed, {self.list_path}, expected one line per video")

    def __len__(self) -> int:
        return len(self._records)

    def ids(self) -> list[tuple[str, str]]:
        """`(key, video_id)` of every item, in index order, without touching the media."""
        return [(r.key, r.video_id) for r in self._records]

    def item(self, i: int) -> Item:
        r = self._records[i]
        if self.dataset == "kinetics":
            return Item("kinetics", r.key, r.video_id, r.path, label=r.label)
        if self.dataset == "charades_ego":
            return Item(
                "charades_ego", r.key, r.video_id, r.frames, label_frames=r.label_frames, label_classes=r.label_classes
            )
        return Item(
            self.dataset,
            r.key,
            r.video_id,
            r.frames(self._prefix, flat=self.dataset == "epic55"),
            frame_offset=r.start_frame,
            verb=r.verb,
            noun=r.noun,
        )


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TfdsSource:
    """Items read from a TFDS ArrayRecord build (see `tfds_builders.py`) through `tfds.data_source`
    (`tfds_data_dir` may be a `gs://` URL: TFDS reaches it through etils.epath, ArrayRecord itself)."""

    def __init__(self, cfg, split: str):
        if cfg.dataset not in TFDS_NAMES:
            raise ValueError(
                f"source='tfds' has no build for dataset {cfg.dataset!r} (builds: "
                f"{sorted(TFDS_NAMES)}); use source='files'"
            )
        self.dataset = cfg.dataset
        self.split = split
        self.name = cfg.tfds_name or TFDS_NAMES[cfg.dataset]
        self.data_dir = storage.check(cfg.tfds_data_dir, "config.data.tfds_data_dir") if cfg.tfds_data_dir else None
        self.tfds_split = {"train": cfg.tfds_train_split, "val": cfg.tfds_val_split, "test": cfg.tfds_test_split}[split]
        self._source = None
        self._length = len(self._open())

    def _open(self):
        if self._source is None:
            import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

            from egoexo_jax.data import tfds_builders  # noqa: F401  (registers the builders with TFDS)

            builder = tfds.builder(self.name, data_dir=self.data_dir)
            self._source = builder.as_data_source(split=self.tfds_split)
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __len__(self) -> int:
        return self._length

    def ids(self) -> None:
        """None: the keys of an ArrayRecord build cannot be listed without reading every record."""
        return None

    def item(self, i: int) -> Item:
        r = self._open()[i]
        key = _text(r["key"])
        if self.dataset == "kinetics":
            return Item("kinetics", key, _text(r["video_id"]), bytes(r["video"]), label=int(r["label"]))
        frames = list(r["frames"])
        if self.dataset == "charades_ego":
            return Item(
                "charades_ego",
                key,
                _text(r["video_id"]),
                frames,
                label_frames=np.asarray(r["label_frames"], np.int32),
                label_classes=np.asarray(r["label_classes"], np.int32),
            )
        return Item(
            "epic100",
            key,
            _text(r["video_id"]),
            frames,
            frame_offset=int(r["start_frame"]),
            verb=int(r["verb"]),
            noun=int(r["noun"]),
        )


def build_source(cfg, split: str):
    """The `FileSource` or `TfdsSource` for `split` ('train' | 'val' | 'test') per `cfg.source`."""
    if cfg.source == "files":
        return FileSource(cfg, split)
    if cfg.source == "tfds":
        return TfdsSource(cfg, split)
    raise InputError(f"unknown data source, config.data.source={cfg.source!r}, expected 'files' or 'tfds'")
