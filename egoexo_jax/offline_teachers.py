"""The run config's ``teachers`` section -> the offline-teacher ``aux_fn`` of the data pipelines.

:func:`from_config` checks ``config.teachers`` (sources, file paths, map mode) and builds
:class:`egoexo_jax.data.aux_targets.OfflineTeacherTargets` for the signals read from the official
teacher files, with the interaction-map geometry the student model implies
(:func:`map_stride`, the MViT map frame count). It sits above ``data/`` and ``models/``: it
reads the model config the way the model builds it.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from egoexo_jax import storage
from egoexo_jax.cli import InputError, MissingFileError
from egoexo_jax.data import aux_targets, interaction_maps
from egoexo_jax.models import mvit_config

__all__ = ["from_config", "map_stride"]

_LOG = logging.getLogger(__name__)


def _configured_path(cfg, signal: str, field: str, *, folder: bool) -> str:
    """The path of ``teachers.{signal}.{field}``; errors name the key when it is unusable."""
    key = f"teachers.{signal}.{field}"
    path = str(cfg[signal][field] or "")
    if not path:
        raise InputError(f"config.teachers.{signal}.source is 'file' but config.{key} is empty")
    storage.check(path, f"config.{key}")
    exists = storage.isdir(path) if folder else storage.isfile(path)
    if not exists:
        what = "folder" if folder else "file"
        raise MissingFileError(f"{what} not found, config.{key}={path}, expected an existing {what}")
    return path


def _mvit_map_frames(data_cfg, model_cfg) -> int:
    stride = (2, 4, 4)
    mvit_cfg = model_cfg.get("mvit") if hasattr(model_cfg, "get") else None
    if mvit_cfg is not None and "patch_stride" in mvit_cfg:
        stride = tuple(mvit_cfg["patch_stride"])
    return int(data_cfg.num_frames) // int(stride[0])


def from_config(teachers_cfg, data_cfg, model_cfg) -> Optional[aux_targets.OfflineTeacherTargets]:
    """The ``aux_fn`` for ``config.teachers``, or ``None`` when no signal comes from files.

    Args:
      teachers_cfg: ``config.teachers`` (``ego``/``object``/``interaction`` with ``source`` in
        ``none | file | online``; files ``ego.file``, ``object.file``,
        ``interaction.detections`` (a folder), ``interaction.mode``,
        ``interaction.repeated_frames``; ``allow_missing``).
      data_cfg: ``default_data_config(...)``-style config (``num_frames``, ``dataset``).
      model_cfg: ``models.default_model_config()``-style config (``arch``, ``alpha``,
        ``object_classes``; MViT: ``mvit.patch_stride``).

    Raises:
      FileNotFoundError: a configured file or folder does not exist (message names the key).
      ValueError: ``source='file'`` with an empty path, unknown source or map mode.
    """
    sources = {}
    for signal, allowed in (
        ("ego", ("none", "file", "online")),
        ("object", ("none", "file", "online")),
        ("interaction", ("none", "file")),
    ):
        source = teachers_cfg[signal].source
        if source not in allowed:
            raise ValueError(f"config.teachers.{signal}.source={source!r}; expected one of {list(allowed)}")
        sources[signal] = source
    if all(s != "file" for s in sources.values()):
        return None
    ego = _configured_path(teachers_cfg, "ego", "file", folder=False) if sources["ego"] == "file" else ""
    obj = _configured_path(teachers_cfg, "object", "file", folder=False) if sources["object"] == "file" else ""
    dets = (
        _configured_path(teachers_cfg, "interaction", "detections", folder=True)
        if sources["interaction"] == "file"
        else ""
    )
    mode = str(teachers_cfg.interaction.mode)
    if mode not in aux_targets.MAP_MODES:
        raise ValueError(f"config.teachers.interaction.mode={mode!r}; expected one of {list(aux_targets.MAP_MODES)}")
    if (ego or obj) and data_cfg.dataset != "kinetics":
        _LOG.warning("teacher score files are keyed by Kinetics csv paths but the dataset is %r", data_cfg.dataset)
    repeated = str(teachers_cfg.interaction.get("repeated_frames", "last"))
    if repeated not in interaction_maps.REPEATED_FRAME_RULES:
        raise ValueError(
            f"config.teachers.interaction.repeated_frames={repeated!r}; expected one "
            f"of {list(interaction_maps.REPEATED_FRAME_RULES)}"
        )
    arch = str(model_cfg.arch)
    map_frames = _mvit_map_frames(data_cfg, model_cfg) if arch == "mvit" and dets else 0
    return aux_targets.OfflineTeacherTargets(
        ego_scores=ego,
        object_scores=obj,
        detections=dets,
        map_mode=mode,
        arch=arch,
        alpha=int(model_cfg.alpha),
        map_frames=map_frames,
        map_stride=map_stride(model_cfg),
        object_classes=int(model_cfg.object_classes or 1000),
        repeated_frames=repeated,
        allow_missing=bool(teachers_cfg.get("allow_missing", False)),
    )


def map_stride(model_cfg) -> int:
    """Spatial stride of the student's interaction map: the res5 stride of a ResNet (stem 4 x
    the stage strides, 32 by default), the patch stride x the spatial Q strides of MViT (32 for
    the official models), computed from ``model_cfg.mvit`` as the model builds it."""
    if model_cfg.arch in ("slowfast", "slow"):
        return 4 * int(np.prod(model_cfg.spatial_strides))
    return mvit_config.mvit_config_from_model_config(model_cfg).feature_stride
