"""The data section of a run config: `default_data_config(dataset)` with the Ego-Exo defaults."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

__all__ = ["default_data_config"]

# Per dataset: (train, val, test) list files, and the TFDS splits they become.
# Charades-Ego "val" is the test split (as in the original); EPIC is tested on its validation set.
_LISTS = {
    "kinetics": ("train.csv", "val.csv", "test.csv"),
    "charades_ego": ("train_1st.csv", "test_1st.csv", "test_1st.csv"),
    "epic100": ("EPIC_100_train.csv", "EPIC_100_validation.csv", "EPIC_100_validation.csv"),
    # The Ego-Exo release's split of the EPIC-55 training set (TBN); tested on its val part.
    "epic55": ("EPIC_train_action_labels.pkl", "EPIC_val_action_labels.pkl", "EPIC_val_action_labels.pkl"),
}
_TFDS_SPLITS = {
    "kinetics": ("train", "validation", "test"),
    "charades_ego": ("train", "test", "test"),
    "epic100": ("train", "validation", "validation"),
    "epic55": ("train", "validation", "validation"),
}


def default_data_config(dataset: str = "kinetics") -> ml_collections.ConfigDict:
    """Data config with the Ego-Exo defaults for `dataset` ('kinetics' | 'charades_ego' | 'epic100' |
    'epic55').

    Fields:
      dataset, source: 'files' (split lists + media under path_prefix) or 'tfds' (ArrayRecord build).
      path_to_data_dir: folder of the split lists / annotation files.
      path_prefix: folder the media paths in the lists are relative to (EPIC-100: the folder holding
        `{P}/rgb_frames/...`; EPIC-55: the folder holding `{video_id}/frame_*.jpg`).
      train_list, val_list, test_list: file names inside path_to_data_dir.
      path_label_separator: Kinetics list separator.
      num_classes: Kinetics classes (400).
      charades_fps: frame rate of the Charades-Ego frames (only for the official csv index).
      num_frames, sampling_rate, target_fps: clip = num_frames frames every sampling_rate (at
        target_fps for videos; raw frames for JPEG datasets).
      train_jitter_scales, train_crop_size, flip_prob: training augmentation.
      test_crop_size: short side and crop of evaluation views.
      num_ensemble_views, num_spatial_crops: test views = temporal x spatial.
      epic_val_random: EPIC 'val' with training-style random sampling (Ego-Exo*) instead of the centre
        clip and crop.
      mean, std: normalisation of [0, 1] pixels.
      bgr: channel order; None = the original code's per dataset (RGB for Kinetics, BGR for the
        OpenCV-read Charades-Ego and EPIC frames).
      arch, alpha: 'slowfast' packs [slow, fast] with slow = T // alpha frames; other archs one pathway.
      num_workers: grain worker processes (0 = in-process); num_threads: loader threads when
        num_workers is 0 (worker processes load sequentially);
        prefetch: batches buffered per process.
      decode_threads: PyAV codec thread_type ('AUTO', 'FRAME', 'SLICE', 'NONE').
      max_bad_fraction, bad_input_allowance, max_retries: bad-input policy (module docstring).
      bad_input_log: eval bad-input log file ('' = none; training takes the path as an argument).
      eval_seed: seed of the random views of Kinetics / Charades-Ego 'val'.
      tfds_name, tfds_data_dir, tfds_{train,val,test}_split: the TFDS build read when source='tfds'.
    """
    if dataset not in _LISTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(_LISTS)}")
    train_list, val_list, test_list = _LISTS[dataset]
    tfds_train, tfds_val, tfds_test = _TFDS_SPLITS[dataset]
    return ml_collections.ConfigDict(
        {
            "dataset": dataset,
            "source": "files",
            "path_to_data_dir": "",
            "path_prefix": "",
            "train_list": train_list,
            "val_list": val_list,
            "test_list": test_list,
            "path_label_separator": " ",
            "num_classes": 400,
            "charades_fps": 24.0,
            "num_frames": 32,
            "sampling_rate": 2,
            "target_fps": 30.0,
            "train_jitter_scales": (256, 320),
            "train_crop_size": 224,
            "test_crop_size": 256,
            "flip_prob": 0.5,
            "num_ensemble_views": 10,
            "num_spatial_crops": 3,
            "epic_val_random": False,
            "mean": 0.45,
            "std": 0.225,
            "bgr": config_dict.placeholder(bool),
            "arch": "slowfast",
            "alpha": 4,
            "num_workers": 0,
            "num_threads": 2,
            "prefetch": 2,
            "decode_threads": "AUTO",
            "max_bad_fraction": 0.01,
            "bad_input_allowance": 10,
            "max_retries": 10,
            "bad_input_log": "",
            "eval_seed": 0,
            "tfds_name": "",
            "tfds_data_dir": "",
            "tfds_train_split": tfds_train,
            "tfds_val_split": tfds_val,
            "tfds_test_split": tfds_test,
        }
    )
