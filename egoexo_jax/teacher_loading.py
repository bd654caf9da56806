"""Loading the online teachers: reading their checkpoints and binding them to a training config.

The Ego-Score teacher is a 2-way video classifier from a PySlowFast ``.pyth``, a converted
directory, a training workdir (any kind :func:`egoexo_jax.checkpoint.pretrained.load_pretrained`
reads) or variables in memory; the Object-Score teacher is a torchvision ImageNet ResNet
``.pth``. :func:`from_config` turns ``config.teachers`` into the ``teacher_fn`` the train step
calls (:func:`egoexo_jax.models.teachers.online_teacher_targets` with the teachers and the
student's input normalisation bound). This sits above ``models/`` because it reads checkpoints,
converts weights and reads the data config.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from egoexo_jax import models, storage
from egoexo_jax.checkpoint import pretrained
from egoexo_jax.convert.torchvision_resnet import load_torchvision_resnet
from egoexo_jax.data.samples import DEFAULT_BGR
from egoexo_jax.models.resnet2d import ResNet2D
from egoexo_jax.models.teachers import (
    EgoTeacher,
    ObjectTeacher,
    OnlineTeachers,
    TeacherError,
    frame_indices,
    online_teacher_targets,
)

__all__ = ["ego_teacher_from_variables", "from_config", "load_ego_teacher", "load_object_teacher", "student_norm"]


# ----------------------------------------------------------------------------------------------
# Loaders.


def _dtype_name(dtype) -> str:
    return jnp.dtype(dtype).name


def load_object_teacher(
    weights: Optional[str], depth: int = 50, width: int = 64, num_classes: int = 1000, dtype=jnp.float32, seed: int = 0
):
    """``(ResNet2D, variables)`` for the Object-Score teacher.

    Args:
      weights: torchvision ``resnet*.pth`` file; empty/None = random init (demos and tests
        only; logged as a warning, the targets are then meaningless).
      depth, width, num_classes: architecture; with ``weights`` the checkpoint must match
        ``depth`` and ``num_classes`` (width is read from the file).
      dtype: compute dtype (parameters float32).
      seed: random-init seed.
    Raises:
      TeacherError: the checkpoint's classes differ from ``num_classes``.
      egoexo_jax.convert.pyslowfast.ConversionError: keys/shapes do not fit ``depth``.
    """
    if weights:
        module, variables = load_torchvision_resnet(weights, depth, dtype=dtype)
        if module.num_classes != num_classes:
            raise TeacherError(f"object teacher {weights} has {module.num_classes} classes; expected {num_classes}")
        return module, variables
    logging.warning(
        "object teacher: no weights given, using a RANDOMLY initialised ResNet-%d "
        "(width %d, %d classes); Object-Score targets are meaningless (demo/test only)",
        depth,
        width,
        num_classes,
    )
    module = ResNet2D(depth=depth, width=width, num_classes=num_classes, dtype=dtype)
    variables = jax.jit(module.init)(jax.random.key(seed, impl="rbg"), jnp.zeros((1, 64, 64, 3), jnp.float32))
    return module, jax.tree.map(np.asarray, dict(variables))


def _first_head_classes(model_cfg) -> int:
    n = model_cfg.num_classes
    return int(n[0]) if isinstance(n, (list, tuple)) else int(n)


def _check_two_way(model_cfg, where: str) -> None:
    n = _first_head_classes(model_cfg)
    if n != 2:
        raise TeacherError(
            f"{where}: an Ego-Score teacher must be a 2-way (non-ego / ego) classifier, "
            f"but its first head has {n} classes (model.num_classes={model_cfg.num_classes})"
        )


def ego_teacher_from_variables(model_cfg, variables, dtype=None, *, where: str = "ego teacher"):
    """``(module, variables)`` from a model config and its variables already in memory.

    The variables must have exactly the module's structure and shapes (e.g. the
    ``{"params", "batch_stats"}`` of a training workdir). ``dtype`` overrides the config's
    compute dtype.

    Raises:
      TeacherError: not 2-way, or variables that do not fit the module (named).
    """
    _check_two_way(model_cfg, where)
    copy = getattr(model_cfg, "copy_and_resolve_references", None)
    cfg = copy() if copy is not None else model_cfg
    if dtype is not None:
        cfg.dtype = _dtype_name(dtype)
    module = models.build(cfg)
    shapes = [jnp.zeros(s, jnp.float32) for s in models.input_shapes(cfg)]
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), shapes, train=False))
    want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(dict(target))[0]}
    have = {
        jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(dict(variables))[0]
    }
    problems = [f"missing {k}" for k in sorted(set(want) - set(have))]
    problems += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
    problems += [f"{k}: {have[k]} != {want[k]}" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise TeacherError(f"{where}: variables do not fit the model config: {'; '.join(problems[:8])}{more}")
    return module, {k: variables[k] for k in target}


def load_ego_teacher(path: str, dtype=None):
    """``(module, variables)`` of a 2-way video classifier.

    Args:
      path: PySlowFast / Ego-Exo ``.pyth`` file, converted checkpoint directory
        (``egoexo_jax.checkpoint.converted``) or training workdir (newest checkpoint).
      dtype: compute dtype (None: the checkpoint's / float32).
    Raises:
      TeacherError: the classifier's first head is not 2-way (the message names the file and
        the head size; for a ``.pyth`` before its weights are converted), or no such path.
      cli.InputError: the path is none of the checkpoint kinds above.
    """
    path = storage.check(str(path), "config.teachers.ego.checkpoint")
    if not storage.exists(path):
        raise TeacherError(f"ego teacher {path}: no such file or directory")
    cfg, variables, _ = pretrained.load_pretrained(path, flag="config.teachers.ego.checkpoint", check=_check_two_way)
    return ego_teacher_from_variables(cfg, variables, dtype, where=path)


# ----------------------------------------------------------------------------------------------
# Config wiring.


def _norm_value(v):
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)


def student_norm(data_cfg) -> dict:
    """``{input_mean, input_std, input_bgr}`` of a data config (``bgr`` None = dataset default)."""
    bgr = data_cfg.bgr
    if bgr is None:
        bgr = DEFAULT_BGR[data_cfg.dataset]
    return {"input_mean": _norm_value(data_cfg.mean), "input_std": _norm_value(data_cfg.std), "input_bgr": bool(bgr)}


def from_config(config, model_cfg=None):
    """``(teacher_fn, teacher_variables)`` for the online teachers of a training config.

    ``teacher_fn(teacher_variables, pathways) -> {"ego_target", "object_target"}`` (present
    teachers only) is :func:`online_teacher_targets` with the teachers and the student's
    input normalisation bound; ``(None, {})`` when no teacher is online.

    Reads ``config.teachers.ego`` (``checkpoint``; optional ``input_mean``/``input_std``/
    ``input_bgr`` when the teacher was trained with another normalisation) and
    ``config.teachers.object`` (``weights``, ``depth``, ``width``, ``num_frames``). The
    teachers compute in the student's ``model.dtype``.
    """
    model_cfg = model_cfg if model_cfg is not None else config.model
    dtype = jnp.dtype(model_cfg.dtype)
    ego = obj = None
    variables = {}
    tcfg = config.teachers
    if tcfg.ego.source == "online":
        if not tcfg.ego.checkpoint:
            raise TeacherError("config.teachers.ego.source is 'online' but config.teachers.ego.checkpoint is empty")
        module, variables["ego"] = load_ego_teacher(tcfg.ego.checkpoint, dtype)
        extra = {
            k: (_norm_value(tcfg.ego[k]) if k != "input_bgr" else bool(tcfg.ego[k]))
            for k in ("input_mean", "input_std", "input_bgr")
            if tcfg.ego.get(k) is not None
        }
        ego = EgoTeacher.from_module(module, **extra)
        logging.info("online ego teacher: %s (%s)", tcfg.ego.checkpoint, type(module).__name__)
    if tcfg.object.source == "online":
        num_classes = int(model_cfg.object_classes) or 1000
        module, variables["object"] = load_object_teacher(
            tcfg.object.weights,
            depth=int(tcfg.object.depth),
            width=int(tcfg.object.width),
            num_classes=num_classes,
            dtype=dtype,
            seed=int(config.get("seed", 0)),
        )
        num_frames = int(tcfg.object.num_frames)
        frame_indices(int(config.data.num_frames), num_frames)  # fail now, not inside jit
        obj = ObjectTeacher(module, num_frames)
        logging.info(
            "online object teacher: ResNet-%d width %d, %d frames, weights %r",
            module.depth,
            module.width,
            num_frames,
            tcfg.object.weights,
        )
    if ego is None and obj is None:
        return None, {}
    fn = functools.partial(online_teacher_targets, OnlineTeachers(ego, obj), **student_norm(config.data))
    return fn, variables
