"""Frozen *online* Ego-Exo teachers, run inside the jitted train step.

The official code reads pre-computed teacher outputs (``k400_ego_predicts.pkl``,
``k400_IN_predicts.pkl``; see ``egoexo_jax.data.aux_targets``). With ``source="online"`` the
teachers run on the student's own (augmented) clip instead:

- **Ego-Score** (2-way, index 1 = egocentric): one of our video classifiers whose first
  head has 2 classes (e.g. a Slow/SlowFast trained on Charades-Ego first- vs third-person).
- **Object-Score** (1000-way): a torchvision ImageNet ResNet (:class:`ResNet2D`) applied to
  ``K`` frames of the clip; the ``K`` logit vectors are **averaged**. How the official files
  aggregated frames is not documented (docs/method.md#object-score); averaging logits keeps the
  target a logit vector, which is what the KD loss soft-maxes (``losses.kd_loss``).

This module holds what the train step calls: teachers are described by frozen (hashable)
dataclasses, their variables travel as a separate pytree argument (``{"ego": ..., "object":
...}``, never in the optimiser state), ``apply`` runs with ``train=False`` (running BN
statistics, no dropout, nothing mutated) and every output goes through
``jax.lax.stop_gradient``. Reading teacher checkpoints and binding the teachers of a training
config is :mod:`egoexo_jax.teacher_loading`.

Input convention: the student's pathways ``[B, T, H, W, 3] float32`` normalised as
``(x / 255 - mean) / std`` with the data config's mean/std (scalars or per channel, in the
clip's channel order), channels BGR when ``input_bgr``. Teachers undo this and apply their
own normalisation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax.models.resnet2d import ResNet2D
from egoexo_jax.slow_frames import slow_indices

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EgoTeacher",
    "ObjectTeacher",
    "OnlineTeachers",
    "TeacherError",
    "ego_teacher_logits",
    "ego_teacher_pathways",
    "frame_indices",
    "object_teacher_logits",
    "online_teacher_targets",
    "renormalise",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, [0, 1] pixels (torchvision ImageNet models)
IMAGENET_STD = (0.229, 0.224, 0.225)

Norm = Union[float, Sequence[float]]


class TeacherError(ValueError):
    """A teacher checkpoint or setting that cannot serve as the requested teacher."""


# ----------------------------------------------------------------------------------------------
# Specs.


@dataclasses.dataclass(frozen=True)
class ObjectTeacher:
    """Object-Score teacher: a 2D ImageNet classifier on ``num_frames`` frames of the clip.

    Attributes:
      module: the :class:`ResNet2D`.
      num_frames: K, frames taken at ``floor(linspace(0, T - 1, K))`` of the clip.
      dtype: compute dtype override (None: the module's).
    """

    module: ResNet2D
    num_frames: int = 8
    dtype: Any = None


@dataclasses.dataclass(frozen=True)
class EgoTeacher:
    """Ego-Score teacher: a 2-way video classifier (``logits`` of its first head).

    Attributes:
      module: a ``ResNetVideo`` (slow / slowfast) or ``MViT``.
      num_pathways, num_frames, alpha: the pathways it takes (1 or 2; frames of the fast or
        only pathway; slow = ``num_frames // alpha`` frames of the fast one).
      input_mean, input_std, input_bgr: the normalisation it was trained with; None = the
        student's (no renormalisation).
      dtype: compute dtype override (None: the module's).
    """

    module: nn.Module
    num_pathways: int
    num_frames: int
    alpha: int = 1
    input_mean: Optional[Norm] = None
    input_std: Optional[Norm] = None
    input_bgr: Optional[bool] = None
    dtype: Any = None

    @classmethod
    def from_module(cls, module: nn.Module, **kwargs) -> "EgoTeacher":
        """Reads the pathway layout off a ``ResNetVideo`` / ``MViT`` module."""
        if hasattr(module, "num_pathways"):  # ResNetVideo
            return cls(
                module,
                module.num_pathways,
                module.num_frames,
                module.alpha if module.num_pathways == 2 else 1,
                **kwargs,
            )
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_frames"):  # MViT
            return cls(module, 1, int(config.num_frames), 1, **kwargs)
        raise TeacherError(f"cannot tell the input pathways of {type(module).__name__}")


@dataclasses.dataclass(frozen=True)
class OnlineTeachers:
    """The online teachers of a run (either may be None). Hashable: safe as a static argument."""

    ego: Optional[EgoTeacher] = None
    object: Optional[ObjectTeacher] = None


# ----------------------------------------------------------------------------------------------
# Pure functions for the train step.


def frame_indices(num_frames: int, k: int) -> np.ndarray:
    """The slow-frame rule :func:`egoexo_jax.slow_frames.slow_indices` (static, int64), ``1 <= k <= T``."""
    if k < 1 or k > num_frames:
        raise ValueError(f"cannot take {k} frames of a {num_frames}-frame clip (need 1 <= K <= T)")
    return slow_indices(num_frames, k)


def _vec(v: Norm) -> jax.Array:
    return jnp.asarray(v, jnp.float32).reshape(-1)  # scalar -> [1], per channel -> [3]


def renormalise(
    x: jax.Array, *, src_mean: Norm, src_std: Norm, src_bgr: bool, dst_mean: Norm, dst_std: Norm, dst_bgr: bool
) -> jax.Array:
    """``[..., 3] float32`` from one ``(x/255 - mean) / std`` convention (channel order) to another.

    Means/stds are scalars or per channel in their own channel order.
    """
    unit = x.astype(jnp.float32) * _vec(src_std) + _vec(src_mean)  # [0, 1] pixels, src order
    if bool(src_bgr) != bool(dst_bgr):
        unit = unit[..., ::-1]
    return (unit - _vec(dst_mean)) / _vec(dst_std)


def _with_dtype(module: nn.Module, dtype) -> nn.Module:
    if dtype is None or jnp.dtype(module.dtype) == jnp.dtype(dtype):
        return module
    return module.clone(dtype=dtype)


def object_teacher_logits(
    module: ResNet2D,
    variables,
    clip: jax.Array,
    *,
    num_frames_k: int,
    input_mean: Norm = 0.45,
    input_std: Norm = 0.225,
    input_bgr: bool = False,
    dtype=None,
) -> jax.Array:
    """Object-Score teacher logits of a clip.

    Args:
      module, variables: the 2D ImageNet classifier (frozen).
      clip: the student's fast (or only) pathway ``[B, T, H, W, 3] float32``, normalised with
        ``input_mean``/``input_std``, BGR if ``input_bgr``.
      num_frames_k: K frames at ``floor(linspace(0, T - 1, K))``.
      dtype: compute dtype override (None: the module's).
    Returns:
      ``[B, num_classes] float32``: the mean over the K frames of the per-frame logits
      (ImageNet-normalised RGB frames at the clip's resolution), gradient stopped.
    """
    b, t, h, w, c = clip.shape
    idx = frame_indices(t, num_frames_k)
    frames = clip[:, idx].reshape(b * len(idx), h, w, c)
    frames = renormalise(
        frames,
        src_mean=input_mean,
        src_std=input_std,
        src_bgr=input_bgr,
        dst_mean=IMAGENET_MEAN,
        dst_std=IMAGENET_STD,
        dst_bgr=False,
    )
    logits = _with_dtype(module, dtype).apply(variables, frames, train=False)
    logits = logits.astype(jnp.float32).reshape(b, len(idx), -1).mean(axis=1)
    return jax.lax.stop_gradient(logits)


def ego_teacher_logits(module: nn.Module, variables, pathways: Sequence[jax.Array], dtype=None) -> jax.Array:
    """``[B, 2] float32`` logits of a video classifier (its first task if multi-task).

    ``pathways`` are already in the teacher's layout and normalisation (see
    :func:`ego_teacher_pathways`). Eval mode, gradient stopped.
    """
    out = _with_dtype(module, dtype).apply(variables, [jnp.asarray(p, jnp.float32) for p in pathways], train=False)
    logits = out["logits"]
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return jax.lax.stop_gradient(logits.astype(jnp.float32))


def ego_teacher_pathways(
    teacher: EgoTeacher, pathways: Sequence[jax.Array], *, input_mean: Norm, input_std: Norm, input_bgr: bool
) -> list:
    """The student's pathways rearranged (and renormalised) for the ego teacher.

    The student's pathways pass through unchanged when their frame counts already match
    the teacher's. Otherwise the teacher's ``num_frames`` are taken from the student's fast
    (or only) pathway at ``floor(linspace(0, T - 1, num_frames))`` and, for a SlowFast
    teacher, its slow pathway from those at ``floor(linspace(0, n - 1, n // alpha))``
    (frame *counts* are matched; a different sampling rate is not corrected).
    """
    pathways = list(pathways)
    n = teacher.num_frames
    if teacher.num_pathways == 2:
        want = [n // teacher.alpha, n]
    else:
        want = [n]
    if [p.shape[1] for p in pathways] != want:
        fast = pathways[-1]
        fast = fast[:, frame_indices(fast.shape[1], n)]
        pathways = [fast[:, frame_indices(n, want[0])], fast] if len(want) == 2 else [fast]
    mean = input_mean if teacher.input_mean is None else teacher.input_mean
    std = input_std if teacher.input_std is None else teacher.input_std
    bgr = input_bgr if teacher.input_bgr is None else teacher.input_bgr
    if (mean, std, bool(bgr)) != (input_mean, input_std, bool(input_bgr)):
        pathways = [
            renormalise(
                p, src_mean=input_mean, src_std=input_std, src_bgr=input_bgr, dst_mean=mean, dst_std=std, dst_bgr=bgr
            )
            for p in pathways
        ]
    return pathways


def online_teacher_targets(
    teachers: OnlineTeachers,
    teacher_variables,
    pathways: Sequence[jax.Array],
    *,
    input_mean: Norm = 0.45,
    input_std: Norm = 0.225,
    input_bgr: bool = False,
) -> dict:
    """Targets of the online teachers for one batch (jit-able, frozen).

    Args:
      teachers: which teachers run (static).
      teacher_variables: ``{"ego": variables, "object": variables}`` for the present teachers.
      pathways: the student's pathways, slow first, each ``[B, T_p, H, W, 3] float32``.
      input_mean, input_std, input_bgr: the student's input normalisation.
    Returns:
      ``{"ego_target": [B, 2] float32, "object_target": [B, num_classes] float32}`` (only the
      present teachers' keys): teacher logits, gradient stopped, read by ``losses.total``.
    """
    out = {}
    if teachers.ego is not None:
        ego = teachers.ego
        inputs = ego_teacher_pathways(ego, pathways, input_mean=input_mean, input_std=input_std, input_bgr=input_bgr)
        out["ego_target"] = ego_teacher_logits(ego.module, teacher_variables["ego"], inputs, ego.dtype)
    if teachers.object is not None:
        obj = teachers.object
        out["object_target"] = object_teacher_logits(
            obj.module,
            teacher_variables["object"],
            pathways[-1],
            num_frames_k=obj.num_frames,
            input_mean=input_mean,
            input_std=input_std,
            input_bgr=input_bgr,
            dtype=obj.dtype,
        )
    return out
