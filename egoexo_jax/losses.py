"""Pure, jit-able losses of Ego-Exo (docs/method.md#losses-and-weights).

* :func:`cross_entropy` — single-label CE, batch mean (Kinetics, EPIC verb / noun).
* :func:`multilabel_bce` — BCE-with-logits over ``B x C`` (Charades-Ego).
* :func:`kd_loss` — ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean (Ego- and
  Object-Score distillation; the teacher values are logits).
* :func:`interaction_map_bce` — per-channel BCE-with-logits of the Interaction Map.
* :func:`total` — the weighted sum used by the train step, with per-term logging values.

Every loss takes an optional per-example ``mask [B]`` (bool or float): masked-out examples
contribute nothing and the mean is over the valid ones (0 when none is valid, never NaN).  With
``mask=None`` the reductions are exactly PyTorch's (``reduction='mean'`` / ``'batchmean'``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["cross_entropy", "multilabel_bce", "kd_loss", "interaction_map_bce", "total"]


def _masked_mean(values: Array, mask: Optional[Array], elems_per_example: int = 1) -> Array:
    """Mean of ``values [B, ...]`` over valid examples (all elements of an example count)."""
    if mask is None:
        return jnp.mean(values)
    m = jnp.asarray(mask, values.dtype).reshape((-1,) + (1,) * (values.ndim - 1))
    total_ = jnp.sum(values * m)
    count = jnp.sum(jnp.asarray(mask, values.dtype)) * elems_per_example
    return jnp.where(count > 0, total_ / jnp.maximum(count, 1), jnp.zeros((), values.dtype))


def _bce_with_logits(logits: Array, targets: Array, pos_weight: float | Array = 1.0) -> Array:
    """Element-wise ``BCEWithLogitsLoss(reduction='none', pos_weight=...)``, stable for any logit.

    ``(1 - y) * x + (1 + (w - 1) * y) * (log1p(exp(-|x|)) + max(-x, 0))``, PyTorch's formula.
    """
    log_weight = 1.0 + (pos_weight - 1.0) * targets
    return (1.0 - targets) * logits + log_weight * (jnp.log1p(jnp.exp(-jnp.abs(logits))) + jnp.maximum(-logits, 0.0))


def cross_entropy(logits: Array, labels: Array, mask: Optional[Array] = None) -> Array:
    """Softmax cross-entropy, mean over the (valid) batch.

    Args:
      logits: ``[B, C]`` float.
      labels: ``[B]`` int class indices.
      mask: optional ``[B]`` bool/float validity.

    Returns:
      scalar float32 (the logits' float dtype).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) if logits.dtype == jnp.bfloat16 else logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    return _masked_mean(nll, mask)


def multilabel_bce(logits: Array, targets: Array, mask: Optional[Array] = None) -> Array:
    """Multi-label BCE-with-logits (Charades-Ego), mean over the ``B x C`` (valid) elements.

    Args:
      logits: ``[B, C]`` float.
      targets: ``[B, C]`` float multi-hot (soft targets allowed).
      mask: optional ``[B]`` validity.
    """
    logits = logits.astype(jnp.float32) if logits.dtype == jnp.bfloat16 else logits
    loss = _bce_with_logits(logits, targets.astype(logits.dtype))
    return _masked_mean(loss, mask, elems_per_example=logits.shape[-1])


def kd_loss(
    student_logits: Array,
    teacher_logits: Array,
    alpha: float = 1.0,
    temperature: float = 1.0,
    mask: Optional[Array] = None,
) -> Array:
    """Distillation loss ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.

    Matches ``nn.KLDivLoss(reduction='batchmean')(log_softmax(s/T), softmax(t/T)) * alpha*T*T``:
    summed over classes and examples, divided by the number of (valid) examples.

    Args:
      student_logits: ``[B, C]`` float.
      teacher_logits: ``[B, C]`` float teacher **logits** (soft-maxed here).
      alpha: loss weight folded in, as the official ``loss_fn_kd`` does.
      temperature: ``T``.
      mask: optional ``[B]`` validity (clips without a teacher entry).

    Returns:
      scalar.
    """
    s = student_logits.astype(jnp.float32) if student_logits.dtype == jnp.bfloat16 else student_logits
    t = teacher_logits.astype(s.dtype)
    log_q = jax.nn.log_softmax(s / temperature, axis=-1)
    log_p = jax.nn.log_softmax(t / temperature, axis=-1)
    p = jnp.exp(log_p)
    # xlogy convention: a zero teacher probability contributes 0 (as torch's KLDivLoss).
    pointwise = jnp.where(p > 0, p * (log_p - log_q), 0.0)
    per_example = jnp.sum(pointwise, axis=-1)
    return _masked_mean(per_example, mask) * (alpha * temperature * temperature)


def interaction_map_bce(
    logits: Array, targets: Array, pos_weight: float = 1.0, mask: Optional[Array] = None
) -> Tuple[Array, Array]:
    """Interaction-Map loss, one BCE-with-logits per channel.

    Args:
      logits: ``[B, T, h, w, 2]`` float, channel 0 = hand, 1 = object (``interaction_logits``).
      targets: ``[B, T, h, w, 2]`` float soft targets in ``[0, 1]``.
      pos_weight: positive-class weight (``HANDOBJ.POS_WEIGHT``, 1 in every config).
      mask: optional ``[B]`` validity (clips without detections for this split).

    Returns:
      ``(hand_loss, obj_loss)``: scalars, each the mean over the valid ``B * T * h * w`` cells.
    """
    logits = logits.astype(jnp.float32) if logits.dtype == jnp.bfloat16 else logits
    loss = _bce_with_logits(logits, targets.astype(logits.dtype), pos_weight)
    cells = loss.shape[1] * loss.shape[2] * loss.shape[3]
    return (_masked_mean(loss[..., 0], mask, cells), _masked_mean(loss[..., 1], mask, cells))


def _get(weights: Any, name: str, default: Any) -> Any:
    if isinstance(weights, Mapping):
        return weights.get(name, default)
    return getattr(weights, name, default)


def total(
    outputs: Mapping[str, Any], batch: Mapping[str, Any], weights: Any, multi_label: Optional[bool] = None
) -> Tuple[Array, Dict[str, Array]]:
    """Weighted training objective and its parts.

    ``loss = ce * L_task + ego * KL_ego + object * KL_obj + hand * BCE_hand + object_map * BCE_obj``
    where each auxiliary term is added only if its weight is non-zero **and** its target is in
    the batch (a disabled term is skipped entirely, so with all auxiliary weights 0 the result is
    exactly ``ce * L_task``).

    Args:
      outputs: model outputs: ``logits`` (``[B, C]``, or a tuple ``(verb [B, 97], noun [B, 300])``
        for the EPIC multi-task head), and when the aux terms are on ``ego_logits [B, 2]``,
        ``object_logits [B, K]``, ``interaction_logits [B, T, h, w, 2]``.
      batch: ``label`` (int ``[B]``, or float multi-hot ``[B, C]`` for multi-label) — or ``verb``
        and ``noun`` int ``[B]`` for EPIC; optional ``ego_target [B, 2]`` / ``object_target [B, K]``
        (teacher logits), ``interaction_target [B, T, h, w, 2]``, per-example validity
        ``ego_mask`` / ``object_mask`` / ``interaction_mask`` ``[B]`` and ``label_mask [B]``.
      weights: mapping or attribute object with ``ce`` (default 1), ``ego``, ``object``, ``hand``,
        ``object_map`` (default 0), ``ego_temperature``, ``object_temperature`` (default 1),
        optionally ``pos_weight`` (default 1) and ``multi_label``.
      multi_label: BCE task loss instead of CE; default ``weights.multi_label`` (False).

    Returns:
      ``(loss, terms)``; ``terms`` holds ``loss`` (total), the unweighted values ``loss_ce`` (task
      loss; plus ``loss_verb``, ``loss_noun`` for EPIC), ``loss_ego``, ``loss_object`` (``T^2 * KL``),
      ``loss_hand``, ``loss_object_map``, the weighted ones ``weighted_*`` and the number of valid
      examples ``count_ego``, ``count_object``, ``count_interaction`` (enabled terms only).
    """
    if multi_label is None:
        multi_label = bool(_get(weights, "multi_label", False))
    label_mask = batch.get("label_mask")
    terms: Dict[str, Array] = {}
    logits = outputs["logits"]
    if isinstance(logits, (tuple, list)):
        verb_logits, noun_logits = logits
        loss_verb = cross_entropy(verb_logits, batch["verb"], label_mask)
        loss_noun = cross_entropy(noun_logits, batch["noun"], label_mask)
        terms["loss_verb"], terms["loss_noun"] = loss_verb, loss_noun
        task = loss_verb + loss_noun
    elif multi_label:
        task = multilabel_bce(logits, batch["label"], label_mask)
    else:
        task = cross_entropy(logits, batch["label"], label_mask)
    ce_weight = _get(weights, "ce", 1.0)
    terms["loss_ce"] = task
    loss = ce_weight * task
    terms["weighted_ce"] = loss

    def _mask_and_count(name: str, b: int):
        mask = batch.get(name)
        count = jnp.sum(jnp.asarray(mask, jnp.float32)) if mask is not None else jnp.asarray(b, jnp.float32)
        return mask, count

    for kind, temp_name in (("ego", "ego_temperature"), ("object", "object_temperature")):
        w = _get(weights, kind, 0.0)
        target = batch.get(f"{kind}_target")
        if not w or target is None:
            continue
        student = outputs[f"{kind}_logits"]
        mask, count = _mask_and_count(f"{kind}_mask", student.shape[0])
        value = kd_loss(student, target, 1.0, _get(weights, temp_name, 1.0), mask)
        terms[f"loss_{kind}"] = value
        terms[f"weighted_{kind}"] = w * value
        terms[f"count_{kind}"] = count
        loss = loss + w * value

    hand_w = _get(weights, "hand", 0.0)
    obj_w = _get(weights, "object_map", 0.0)
    target = batch.get("interaction_target")
    if (hand_w or obj_w) and target is not None:
        student = outputs["interaction_logits"]
        mask, count = _mask_and_count("interaction_mask", student.shape[0])
        hand, obj = interaction_map_bce(student, target, _get(weights, "pos_weight", 1.0), mask)
        terms["count_interaction"] = count
        if hand_w:
            terms["loss_hand"], terms["weighted_hand"] = hand, hand_w * hand
            loss = loss + hand_w * hand
        if obj_w:
            terms["loss_object_map"], terms["weighted_object_map"] = obj, obj_w * obj
            loss = loss + obj_w * obj
    terms["loss"] = loss
    return loss, terms
