"""TFDS builders packing the datasets into ArrayRecord shards (for hosts that read from object storage).

Each builder reads the same files as the 'files' source from its `manual_dir` (split lists and media
laid out as in `data/<dataset>/README.md`, media paths relative to `manual_dir` unless `path_prefix`
is given) and stores the *encoded* media: the video file's bytes (Kinetics) or the JPEG bytes of every
frame (Charades-Ego videos, EPIC segments). Only Tensor and ClassLabel features are used, so the
result is readable without TensorFlow through `tfds.data_source` / `builder.as_data_source()`,
which is what the pipeline does with `source='tfds'`.

Build (once per dataset):

    python -m egoexo_jax.data.build_tfds --dataset kinetics --manual_dir data/kinetics \
        --path_prefix data/kinetics/videos --data_dir /path/to/tfds

or from python: `tfds_builders.build("kinetics", manual_dir=..., data_dir=...)`.

Any of the three folders may be a `gs://` URL: lists and media are read through
`egoexo_jax.storage` (a record's frames fetched concurrently). ArrayRecord's writer opens its shards
as local files, so a `gs://` data_dir is built in a local temporary folder (`tmp_dir`; it needs room
for the whole build) and then copied to the bucket with `storage.copy_tree`, `dataset_info.json`
last: a reader never sees a build whose shards are still uploading. Readers need nothing of the
sort: TFDS reaches `gs://` through etils.epath and ArrayRecord reads shards from Cloud Storage itself.

Items whose media are missing or empty are left out of the build and reported (log and return
value), never silently.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from egoexo_jax import storage
from egoexo_jax.data import charades_ego, epic_kitchens, kinetics

_STRING = np.object_


def _string():
    return tfds.features.Tensor(shape=(), dtype=_STRING)


def _read_bytes(path: str) -> bytes | None:
    """The file's bytes; None when it is missing, unreadable or empty."""
    try:
        data = storage.read_bytes(path)
    except OSError:
        return None
    return data or None


def _read_all(paths: Sequence[str]) -> list[bytes | None]:
    """`_read_bytes` of every path; objects are fetched concurrently."""
    return [None if isinstance(data, Exception) or not data else data for data in storage.read_many(paths)]


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: optional `path_prefix`, split list names, a count of skipped items."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    SPLIT_LISTS: dict[str, str] = {}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves builders that live in a package through `importlib_resources`, which
        # is not installed on Python >= 3.9; the file of the class is all it needs.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, path_prefix: str | None = None, split_lists: dict[str, str] | None = None, **kwargs):
        self._path_prefix = path_prefix
        self._split_lists = dict(split_lists or self.SPLIT_LISTS)
        self.skipped: list[tuple[str, str]] = []
        super().__init__(**kwargs)

    def _prefix(self, manual_dir) -> str:
        return self._path_prefix if self._path_prefix is not None else os.fspath(manual_dir)

    def _skip(self, what: str, why: str) -> None:
        logging.warning("tfds build of %s: leaving out %s (%s)", self.name, what, why)
        self.skipped.append((what, why))

    def _split_generators(self, dl_manager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        splits = {}
        for split, name in self._split_lists.items():
            path = storage.join(manual_dir, name)
            if storage.exists(path):
                splits[split] = self._generate_examples(path, self._prefix(manual_dir))
        if not splits:
            raise FileNotFoundError(f"none of {sorted(self._split_lists.values())} in {manual_dir}")
        return splits


class EgoexoKinetics(_Builder):
    """Kinetics: one record per video with the encoded video file."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place train.csv / val.csv / test.csv (`relative/path label` lines) and the videos they name "
        "in manual_dir (see data/kinetics/README.md)."
    )
    SPLIT_LISTS = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "key": _string(),
                    "video_id": _string(),
                    "video": _string(),
                    "label": tfds.features.ClassLabel(num_classes=kinetics.NUM_CLASSES),
                }
            )
        )

    def _generate_examples(self, list_path: str, prefix: str) -> Iterator:
        for video in kinetics.read_kinetics_list(list_path, path_prefix=prefix):
            data = _read_bytes(video.path)
            if data is None:
                self._skip(video.path, "missing or empty")
                continue
            yield video.key, {"key": video.key, "video_id": video.video_id, "video": data, "label": video.label}


class EgoexoCharadesEgo(_Builder):
    """Charades-Ego: one record per video with every frame's JPEG and the (frame, class) labels."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the frame lists train_1st.csv / test_1st.csv and the CharadesEgo_v1_rgb frame folders "
        "in manual_dir (see data/charades_ego/README.md)."
    )
    SPLIT_LISTS = {"train": "train_1st.csv", "test": "test_1st.csv"}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "key": _string(),
                    "video_id": _string(),
                    "frames": tfds.features.Tensor(shape=(None,), dtype=_STRING),
                    "label_frames": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "label_classes": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                }
            )
        )

    def _generate_examples(self, list_path: str, prefix: str) -> Iterator:
        for video in charades_ego.read_charades_ego(list_path, path_prefix=prefix):
            frames = _read_all([video.frames[i] for i in range(len(video.frames))])
            missing = [video.frames[i] for i, f in enumerate(frames) if f is None]
            if missing:
                self._skip(video.key, f"{len(missing)} missing frames, first {missing[0]}")
                continue
            yield (
                video.key,
                {
                    "key": video.key,
                    "video_id": video.video_id,
                    "frames": np.asarray(frames, dtype=object),
                    "label_frames": video.label_frames,
                    "label_classes": video.label_classes,
                },
            )


class EgoexoEpic100(_Builder):
    """EPIC-Kitchens-100: one record per action segment with the JPEGs of start..stop frames."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place EPIC_100_train.csv / EPIC_100_validation.csv (and optionally "
        "EPIC_100_test_timestamps.csv) and the {P}/rgb_frames/{video}/ folders in manual_dir "
        "(see data/epic100/README.md)."
    )
    SPLIT_LISTS = {
        "train": "EPIC_100_train.csv",
        "validation": "EPIC_100_validation.csv",
        "test": "EPIC_100_test_timestamps.csv",
    }

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "key": _string(),
                    "video_id": _string(),
                    "participant_id": _string(),
                    "start_frame": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "stop_frame": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "frames": tfds.features.Tensor(shape=(None,), dtype=_STRING),
                    "verb": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "noun": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            )
        )

    def _generate_examples(self, list_path: str, prefix: str) -> Iterator:
        for segment in epic_kitchens.read_epic_annotations(list_path):
            paths = segment.frames(prefix)
            frames = _read_all([paths[i] for i in range(len(paths))])
            missing = [paths[i] for i, f in enumerate(frames) if f is None]
            if missing:
                self._skip(segment.key, f"{len(missing)} missing frames, first {missing[0]}")
                continue
            yield (
                segment.key,
                {
                    "key": segment.key,
                    "video_id": segment.video_id,
                    "participant_id": segment.participant_id,
                    "start_frame": segment.start_frame,
                    "stop_frame": segment.stop_frame,
                    "frames": np.asarray(frames, dtype=object),
                    "verb": segment.verb,
                    "noun": segment.noun,
                },
            )


BUILDERS = {
    "kinetics": EgoexoKinetics,
    "charades_ego": EgoexoCharadesEgo,
    "epic100": EgoexoEpic100,
}


def build(
    dataset: str,
    *,
    manual_dir: str,
    data_dir: str,
    path_prefix: str | None = None,
    split_lists: dict[str, str] | None = None,
    tmp_dir: str | None = None,
) -> list[tuple[str, str]]:
    """Builds the ArrayRecord version of `dataset` under `data_dir`.

    Args:
      dataset: 'kinetics' | 'charades_ego' | 'epic100'.
      manual_dir: folder with the split lists (and, by default, the media).
      data_dir: TFDS data dir to write (`{data_dir}/egoexo_{dataset}/1.0.0/`); a `gs://` URL is built
        in a local temporary folder and copied there (module docstring).
      path_prefix: where the media paths of the lists start (default: manual_dir).
      split_lists: {tfds split: list file name} to override the defaults.
      tmp_dir: local folder for that temporary build (default: the system's temporary folder).

    Returns:
      the (item, reason) pairs left out because their media were missing.
    """
    manual_dir = storage.check(manual_dir, "manual_dir")
    data_dir = storage.check(data_dir, "data_dir")
    if path_prefix is not None:
        storage.check(path_prefix, "path_prefix")
    builder_class = BUILDERS[dataset]

    def prepare(root: str) -> _Builder:
        builder = builder_class(
            data_dir=root, file_format="array_record", path_prefix=path_prefix, split_lists=split_lists
        )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        return builder

    if not storage.is_url(data_dir):
        return prepare(data_dir).skipped
    target = storage.join(data_dir, builder_class.name, str(builder_class.VERSION))
    if storage.exists(storage.join(target, "dataset_info.json")):
        logging.info("tfds build of %s: %s already holds a build, kept", builder_class.name, target)
        return []
    with tempfile.TemporaryDirectory(prefix="egoexo-tfds-", dir=tmp_dir) as local:
        builder = prepare(local)
        # dataset_info.json marks a finished build for TFDS: it goes up after every shard.
        info = storage.join(builder.data_dir, "dataset_info.json")
        info_bytes = storage.read_bytes(info)
        storage.remove(info)
        storage.copy_tree(builder.data_dir, target)
        storage.write_bytes(storage.join(target, "dataset_info.json"), info_bytes)
        logging.info("tfds build of %s: built in %s, copied to %s", builder.name, local, target)
    return builder.skipped
