"""Evaluation metrics (numpy): top-k accuracy, Charades-Ego mAP, EPIC-Kitchens-100 accuracies.

Conventions (docs/method.md#metrics):

* All accuracies are in percent.
* Ties in a ranking are broken towards the lower class index (a deterministic stand-in for the
  unspecified tie order of ``torch.topk`` / ``numpy.argsort``); with real-valued scores ties are
  practically absent.
* :func:`charades_map` is ``sklearn.metrics.average_precision_score`` per class (non-interpolated:
  sum over distinct score thresholds of precision * recall increase; tied scores form one
  threshold), classes without a positive dropped, plain mean, times 100 — PySlowFast's
  ``get_map``.
* :func:`epic_accuracy` action accuracy follows the official EPIC-Kitchens-100 scorer
  (``epic-kitchens/C1-Action-Recognition``: ``evaluate.py``, ``utils/scoring.py``,
  ``utils/metrics.py``), see the function's docstring.
"""

from __future__ import annotations

import csv
import os
import warnings
from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

from egoexo_jax import storage
from egoexo_jax.cli import InputError

__all__ = [
    "topk_correct",
    "topk_accuracy",
    "average_precision",
    "charades_map",
    "epic_action_correct",
    "epic_accuracy",
    "epic_accuracy_subsets",
    "ensemble_views",
    "read_epic_tail_classes",
    "read_epic_unseen_participants",
]


def _label_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each row's label: #higher scores + #equal scores at a lower index."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = scores.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if np.any((labels < 0) | (labels >= c)):
        raise ValueError(f"labels outside [0, {c})")
    true = scores[np.arange(n), labels][:, None]
    lower = np.arange(c)[None, :] < labels[:, None]
    return np.sum(scores > true, axis=1) + np.sum((scores == true) & lower, axis=1)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``[N] bool``: label among the ``k`` highest of ``scores [N, C]`` (ties: lower index first)."""
    return _label_rank(scores, labels) < k


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracy in percent.

    Args:
      scores: ``[N, C]`` float (logits, probabilities or summed view scores).
      labels: ``[N]`` int.
      ks: the k values.

    Returns:
      ``{'top1': float, 'top5': float, ...}`` (percent).
    """
    rank = _label_rank(scores, labels)
    return {f"top{k}": float(np.mean(rank < k) * 100.0) for k in ks}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP of one class, as ``sklearn.metrics.average_precision_score``.

    Args:
      scores: ``[N]`` float.
      labels: ``[N]`` binary (anything > 0 counts as positive).

    Returns:
      AP in ``[0, 1]``; NaN when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(labels).reshape(-1) > 0
    num_pos = int(positive.sum())
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    # Last position of every run of equal scores = one threshold of the PR curve.
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[ends].astype(np.float64)
    precision = tp / (ends + 1)
    recall = tp / num_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def charades_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """Charades-Ego mean average precision in percent.

    Args:
      scores: ``[N, C]`` float video-level scores (sigmoid, max over views).
      labels: ``[N, C]`` multi-hot video-level labels.

    Returns:
      mean over classes with at least one positive of :func:`average_precision`, times 100.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be [N, C]")
    keep = np.flatnonzero(np.any(labels > 0, axis=0))
    if keep.size == 0:
        raise ValueError("no class has a positive example")
    aps = [average_precision(scores[:, c], labels[:, c]) for c in keep]
    return float(np.mean(aps) * 100.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - np.max(x, axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def _top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` class indices in rank order (descending score, ties: lower index first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def epic_action_correct(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
) -> Dict[int, np.ndarray]:
    """Per-segment action top-k hits of the official EPIC-100 scorer.

    Official definition (``utils/scoring.py: compute_action_scores`` + ``utils/metrics.py:
    topk_accuracy`` on ``action_id = verb * 1000 + noun``): take the top-100 verbs and top-100
    nouns of each segment, soft-max the scores, score every (verb, noun) pair by the product of
    the two probabilities, rank the pairs, keep the best 100 and check the true pair among the
    first k.

    Here: per-segment log-softmax of verb and of noun scores, pair score = sum of the two
    log-probabilities (= log of the product), ranked over the pair grid.  Equivalences and
    choices:

    * Only the top ``K = max(ks)`` verbs and nouns can form one of the top-``K`` pairs (a pair
      whose verb is outranked by ``K`` other verbs is outranked by ``K`` pairs), so ranking the
      ``K x K`` grid gives exactly the same top-k hits as the full 97 x 300 grid and as the
      official top-100 x top-100 grid truncated to 100 pairs (for every ``k <= 100``).
    * The official code calls ``scipy.special.softmax`` without ``axis``, i.e. over the whole
      ``[N, 100]`` array; that divides every probability by one global constant and does not
      change any segment's pair order (but can underflow to 0 for low-scoring segments —
      per-segment log-probabilities avoid that).
    * Because only the pair order matters, ranking by ``p_verb * p_noun`` is ranking by
      ``verb_score + noun_score``: if the inputs are already probabilities (e.g. summed softmax
      over views) the official scorer still soft-maxes them again; so does this function.
    * Ties: verbs, nouns, then pairs (by ``verb * 300 + noun``) with equal score are ordered by
      the lower index.

    Returns:
      ``{k: [N] bool}``.
    """
    verb_scores = np.asarray(verb_scores)
    noun_scores = np.asarray(noun_scores)
    verb_labels = np.asarray(verb_labels, dtype=np.int64)
    noun_labels = np.asarray(noun_labels, dtype=np.int64)
    n, num_nouns = noun_scores.shape
    kmax = max(ks)
    kv, kn = min(kmax, verb_scores.shape[1]), min(kmax, num_nouns)
    log_pv = _log_softmax(verb_scores)
    log_pn = _log_softmax(noun_scores)
    top_v = _top_indices(log_pv, kv)  # [N, kv]
    top_n = _top_indices(log_pn, kn)  # [N, kn]
    rows = np.arange(n)[:, None]
    pair_scores = (log_pv[rows, top_v][:, :, None] + log_pn[rows, top_n][:, None, :]).reshape(n, -1)
    pair_ids = (top_v[:, :, None] * num_nouns + top_n[:, None, :]).reshape(n, -1)
    true_id = verb_labels * num_nouns + noun_labels
    in_grid = np.any(pair_ids == true_id[:, None], axis=1)
    true_score = log_pv[np.arange(n), verb_labels] + log_pn[np.arange(n), noun_labels]
    rank = np.sum(pair_scores > true_score[:, None], axis=1) + np.sum(
        (pair_scores == true_score[:, None]) & (pair_ids < true_id[:, None]), axis=1
    )
    return {k: in_grid & (rank < k) for k in ks}


def epic_accuracy(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    action: str = "official",
) -> Dict[str, float]:
    """EPIC-Kitchens verb / noun / action top-k accuracy in percent.

    Args:
      verb_scores: ``[N, 97]`` float; noun_scores: ``[N, 300]`` float.
      verb_labels, noun_labels: ``[N]`` int.
      ks: the k values.
      action: ``'official'`` — the EPIC-100 scorer's pair ranking (:func:`epic_action_correct`);
        ``'pyslowfast'`` — PySlowFast's per-epoch validation meter: a segment counts if its verb
        is in the verb top-k **and** its noun in the noun top-k (same as official for k = 1 up to
        ties, larger for k > 1).

    Returns:
      ``verb_top{k}``, ``noun_top{k}``, ``action_top{k}`` for every k.
    """
    hits = _epic_hits(verb_scores, noun_scores, verb_labels, noun_labels, ks, action)
    return {name: float(np.mean(hit) * 100.0) for name, hit in hits.items()}


def _epic_hits(verb_scores, noun_scores, verb_labels, noun_labels, ks, action) -> Dict[str, np.ndarray]:
    verb_scores = np.asarray(verb_scores)
    noun_scores = np.asarray(noun_scores)
    n = len(verb_labels)
    if verb_scores.shape[0] != n or noun_scores.shape[0] != n or len(noun_labels) != n:
        raise ValueError("scores and labels must have the same number of segments")
    if n == 0:
        raise ValueError("need at least one segment")
    v_rank = _label_rank(verb_scores, verb_labels)
    n_rank = _label_rank(noun_scores, noun_labels)
    if action == "official":
        action_hits = epic_action_correct(verb_scores, noun_scores, verb_labels, noun_labels, ks)
    elif action == "pyslowfast":
        action_hits = {k: (v_rank < k) & (n_rank < k) for k in ks}
    else:
        raise ValueError(f"action must be 'official' or 'pyslowfast', got {action!r}")
    hits = {}
    for k in ks:
        hits[f"verb_top{k}"] = v_rank < k
        hits[f"noun_top{k}"] = n_rank < k
        hits[f"action_top{k}"] = action_hits[k]
    return hits


def epic_accuracy_subsets(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    participant_ids: Sequence[str],
    tail_verbs: Iterable[int],
    tail_nouns: Iterable[int],
    unseen_participants: Iterable[str],
    ks: Sequence[int] = (1, 5),
    subset_ks: Sequence[int] = (1,),
) -> Dict[str, Dict[str, float]]:
    """The official EPIC-100 validation table: "all", "tail" and "unseen" accuracies (percent).

    Rules of the official ``compute_metrics`` (``utils/metrics.py``):

    * ``all``: every segment; verb/noun/action top-1 and top-5 (``ks``).
    * ``tail``: verb accuracy over segments whose **verb** is a tail verb, noun accuracy over
      segments whose **noun** is a tail noun, action accuracy over segments whose verb is a tail
      verb **or** whose noun is a tail noun; top-1 only (``subset_ks``).
    * ``unseen``: segments of participants listed in the unseen-participants csv; top-1 only.
      Omitted (with a warning) when no segment belongs to an unseen participant, as officially.
      ``tail`` entries whose subset is empty are omitted too (the official code would raise).

    Args:
      verb_scores ``[N, 97]``, noun_scores ``[N, 300]``, verb_labels / noun_labels ``[N]`` int,
      participant_ids ``[N]`` str (e.g. ``'P01'``), tail_verbs / tail_nouns class ids,
      unseen_participants participant ids (see the ``read_epic_*`` readers).

    Returns:
      ``{'all': {...}, 'tail': {...}, 'unseen': {...}}`` with the :func:`epic_accuracy` keys.
    """
    all_ks = tuple(sorted(set(ks) | set(subset_ks)))
    hits = _epic_hits(verb_scores, noun_scores, verb_labels, noun_labels, all_ks, "official")
    verb_labels = np.asarray(verb_labels)
    noun_labels = np.asarray(noun_labels)
    tail_v = np.isin(verb_labels, np.asarray(list(tail_verbs), dtype=np.int64))
    tail_n = np.isin(noun_labels, np.asarray(list(tail_nouns), dtype=np.int64))
    unseen_set = {str(p) for p in unseen_participants}
    unseen = np.array([str(p) in unseen_set for p in participant_ids], dtype=bool)
    if unseen.shape != verb_labels.shape:
        raise ValueError("participant_ids must have one entry per segment")

    def table(selection: Mapping[str, np.ndarray], k_values) -> Dict[str, float]:
        out = {}
        for task in ("verb", "noun", "action"):
            sel = selection[task]
            if not np.any(sel):
                continue
            for k in k_values:
                out[f"{task}_top{k}"] = float(np.mean(hits[f"{task}_top{k}"][sel]) * 100.0)
        return out

    everything = np.ones(len(verb_labels), bool)
    result = {
        "all": table({"verb": everything, "noun": everything, "action": everything}, ks),
        "tail": table({"verb": tail_v, "noun": tail_n, "action": tail_v | tail_n}, subset_ks),
    }
    if np.any(unseen):
        result["unseen"] = table({"verb": unseen, "noun": unseen, "action": unseen}, subset_ks)
    else:
        warnings.warn("There are no unseen segments to evaluate", stacklevel=2)
    return result


def ensemble_views(view_scores: np.ndarray, method: str = "sum") -> np.ndarray:
    """Combine test views: ``[N, V, C]`` -> ``[N, C]`` by ``'sum'`` (Kinetics, EPIC) or ``'max'``
    (Charades-Ego)."""
    view_scores = np.asarray(view_scores)
    if view_scores.ndim != 3:
        raise ValueError(f"expected [N, V, C], got {view_scores.shape}")
    if method == "sum":
        return view_scores.sum(axis=1)
    if method == "max":
        return view_scores.max(axis=1)
    raise ValueError(f"method must be 'sum' or 'max', got {method!r}")


# ---------------------------------------------------------------------------------------------
# Readers of the EPIC-KITCHENS-100 scoring lists (csv module; the annotation tables themselves
# are read by egoexo_jax.data.epic_kitchens).
# ---------------------------------------------------------------------------------------------


def read_epic_tail_classes(path: str | os.PathLike) -> np.ndarray:
    """Read ``EPIC_100_tail_verbs.csv`` / ``EPIC_100_tail_nouns.csv`` (header ``verb`` / ``noun``)
    -> ``[K] int64`` class ids."""
    with storage.open_text(os.fspath(path), encoding="utf-8-sig", newline="") as fp:
        reader = csv.reader(fp)
        header = next(reader)
        if len(header) != 1 or header[0] not in ("verb", "noun"):
            raise InputError(f"{path}: expected a single 'verb' or 'noun' column, got {header}")
        return np.asarray([int(row[0]) for row in reader if row], dtype=np.int64)


def read_epic_unseen_participants(path: str | os.PathLike) -> np.ndarray:
    """Read ``EPIC_100_unseen_participant_ids_{validation,test}.csv`` -> participant ids (str)."""
    with storage.open_text(os.fspath(path), encoding="utf-8-sig", newline="") as fp:
        reader = csv.reader(fp)
        header = next(reader)
        if not header or header[0] != "participant_id":
            raise InputError(f"{path}: expected a 'participant_id' column, got {header}")
        return np.asarray([row[0] for row in reader if row], dtype=object)
