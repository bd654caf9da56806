"""Metrics against independent numpy computations and on the real EPIC-100 validation annotations."""

import numpy as np
import pytest

from egoexo_jax import metrics
from egoexo_jax.data import epic_kitchens

EPIC = "epic100"


# ------------------------------------------------------------------------------ top-k, views


def test_topk_accuracy_vs_argsort():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(500, 40))
    labels = rng.integers(0, 40, size=500)
    order = np.argsort(-scores, axis=1)
    expected = {f"top{k}": 100.0 * np.mean([labels[i] in order[i, :k] for i in range(500)]) for k in (1, 5, 40)}
    assert metrics.topk_accuracy(scores, labels, ks=(1, 5, 40)) == pytest.approx(expected)
    assert metrics.topk_accuracy(scores, labels, ks=(40,))["top40"] == 100.0


def test_topk_accuracy_hand_made_and_ties():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    # Row 1: label 0 wins the tie (lower index first); row 2: label 1 is second.
    res = metrics.topk_accuracy(scores, np.array([1, 0, 1]), ks=(1, 2))
    assert res == pytest.approx({"top1": 200 / 3, "top2": 100.0})


def test_ensemble_views():
    v = np.arange(24, dtype=float).reshape(2, 3, 4)
    np.testing.assert_array_equal(metrics.ensemble_views(v, "sum"), v.sum(1))
    np.testing.assert_array_equal(metrics.ensemble_views(v, "max"), v[:, 2])
    with pytest.raises(ValueError):
        metrics.ensemble_views(v, "mean")


# ------------------------------------------------------------------------------ Charades mAP


def _ap_by_thresholds(scores, labels):
    """Independent AP: walk the distinct thresholds from high to low, P(t) * (R(t) - R(prev))."""
    pos = labels > 0
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        selected = scores >= t
        tp = np.sum(selected & pos)
        recall = tp / pos.sum()
        ap += (recall - prev_recall) * (tp / selected.sum())
        prev_recall = recall
    return ap


def test_average_precision_known_values():
    # sklearn documentation example: 0.8333...
    assert metrics.average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 6)
    # One tied threshold containing both positives and a negative: precision 2/3 at recall 1.
    assert metrics.average_precision(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(2 / 3)
    assert metrics.average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
    assert np.isnan(metrics.average_precision(np.array([1.0, 2.0]), np.array([0, 0])))


def test_charades_map_vs_threshold_implementation_with_ties():
    rng = np.random.default_rng(1)
    n, c = 120, 15
    scores = np.round(rng.uniform(size=(n, c)), 1)  # many ties
    labels = (rng.uniform(size=(n, c)) > 0.8).astype(np.float32)
    labels[:, 3] = 0  # class without a positive: skipped
    for j in range(c):
        if j != 3:
            assert metrics.average_precision(scores[:, j], labels[:, j]) == pytest.approx(
                _ap_by_thresholds(scores[:, j], labels[:, j]), abs=1e-12
            )
    expected = 100 * np.mean([_ap_by_thresholds(scores[:, j], labels[:, j]) for j in range(c) if j != 3])
    assert metrics.charades_map(scores, labels) == pytest.approx(expected, abs=1e-10)
    # Perfect scores -> 100; adding an all-negative class changes nothing.
    assert metrics.charades_map(labels + 0.0, labels) == pytest.approx(100.0)


# ------------------------------------------------------------------------------ EPIC-100


@pytest.fixture(scope="module")
def epic_val(fixtures_dir):
    """The validation segments' labels and participants as arrays (the data reader's segments)."""
    segments = epic_kitchens.read_epic_annotations(fixtures_dir / EPIC / "EPIC_100_validation.csv")
    return {
        "verb_class": np.array([s.verb for s in segments], np.int64),
        "noun_class": np.array([s.noun for s in segments], np.int64),
        "participant_id": np.array([s.participant_id for s in segments], object),
    }


def test_read_epic_tail_and_unseen(fixtures_dir):
    tail_v = metrics.read_epic_tail_classes(fixtures_dir / EPIC / "EPIC_100_tail_verbs.csv")
    tail_n = metrics.read_epic_tail_classes(fixtures_dir / EPIC / "EPIC_100_tail_nouns.csv")
    unseen = metrics.read_epic_unseen_participants(
        fixtures_dir / EPIC / "EPIC_100_unseen_participant_ids_validation.csv"
    )
    assert len(tail_v) == 86 and tail_v[0] == 10 and len(tail_n) == 228 and tail_n[0] == 56
    assert list(unseen) == ["P18", "P32"]


def test_read_epic_lists_with_a_bom(tmp_path):
    """A UTF-8 BOM (a spreadsheet's export) is not part of the header."""
    (tmp_path / "tail.csv").write_bytes(b"\xef\xbb\xbfverb\n10\n12\n")
    (tmp_path / "unseen.csv").write_bytes(b"\xef\xbb\xbfparticipant_id\nP18\n")
    assert list(metrics.read_epic_tail_classes(tmp_path / "tail.csv")) == [10, 12]
    assert list(metrics.read_epic_unseen_participants(tmp_path / "unseen.csv")) == ["P18"]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _brute_force_action_hits(verb_scores, noun_scores, verb_labels, noun_labels, ks):
    """Full 97 x 300 grid of softmax products, ranked with a stable sort (ties: lower pair id)."""
    pv, pn = _softmax(verb_scores), _softmax(noun_scores)
    hits = {k: [] for k in ks}
    for i in range(len(verb_labels)):
        grid = (pv[i][:, None] * pn[i][None, :]).reshape(-1)
        ranking = np.argsort(-grid, kind="stable")[: max(ks)]
        true_id = verb_labels[i] * noun_scores.shape[1] + noun_labels[i]
        for k in ks:
            hits[k].append(true_id in ranking[:k])
    return {k: np.array(v) for k, v in hits.items()}


def test_epic_action_matches_full_grid(epic_val):
    rng = np.random.default_rng(2)
    n = 300
    vl, nl = epic_val["verb_class"][:n], epic_val["noun_class"][:n]
    # Make the task non-trivial: labels boosted so that accuracies are neither 0 nor 100.
    vs = rng.normal(size=(n, 97)) * 2
    ns = rng.normal(size=(n, 300)) * 2
    vs[np.arange(n), vl] += rng.uniform(0, 5, size=n)
    ns[np.arange(n), nl] += rng.uniform(0, 5, size=n)
    ks = (1, 2, 5, 10)
    fast = metrics.epic_action_correct(vs, ns, vl, nl, ks)
    brute = _brute_force_action_hits(vs, ns, vl, nl, ks)
    for k in ks:
        np.testing.assert_array_equal(fast[k], brute[k])
    assert 0 < fast[1].mean() < fast[5].mean() < 1
    res = metrics.epic_accuracy(vs, ns, vl, nl)
    assert res["action_top5"] == pytest.approx(100 * brute[5].mean())
    # The official ranking only depends on the score sums: probabilities in -> same as their logs.
    again = metrics.epic_action_correct(np.log(_softmax(vs)), np.log(_softmax(ns)), vl, nl, ks)
    for k in ks:
        np.testing.assert_array_equal(again[k], fast[k])


def test_epic_accuracy_real_validation_set(epic_val):
    vl, nl = epic_val["verb_class"], epic_val["noun_class"]
    n = len(vl)
    perfect_v = np.eye(97)[vl] * 10
    perfect_n = np.eye(300)[nl] * 10
    res = metrics.epic_accuracy(perfect_v, perfect_n, vl, nl)
    assert res == {f"{t}_top{k}": 100.0 for t in ("verb", "noun", "action") for k in (1, 5)}
    rng = np.random.default_rng(3)
    vs, ns = rng.normal(size=(n, 97)), rng.normal(size=(n, 300))
    res = metrics.epic_accuracy(vs, ns, vl, nl)
    # Random scores: chance level (binomial std ~0.15 % for verb top-1 over 9,668 segments).
    assert res["verb_top1"] == pytest.approx(100 / 97, abs=0.6)
    assert res["verb_top5"] == pytest.approx(500 / 97, abs=1.2)
    assert res["noun_top1"] == pytest.approx(100 / 300, abs=0.35)
    assert res["noun_top5"] == pytest.approx(500 / 300, abs=0.7)
    assert res["action_top1"] < 0.1 and res["action_top5"] < 0.2
    # Verb/noun accuracies equal an independent argsort computation.
    v_order = np.argsort(-vs, axis=1)[:, :5]
    assert res["verb_top5"] == pytest.approx(100 * np.mean((v_order == vl[:, None]).any(1)))
    # PySlowFast's validation rule: identical at k=1, never below the official one at k=5.
    psf = metrics.epic_accuracy(vs, ns, vl, nl, action="pyslowfast")
    assert psf["action_top1"] == res["action_top1"] and psf["action_top5"] >= res["action_top5"]


def test_epic_accuracy_subsets_official_rules(fixtures_dir, epic_val):
    tail_v = metrics.read_epic_tail_classes(fixtures_dir / EPIC / "EPIC_100_tail_verbs.csv")
    tail_n = metrics.read_epic_tail_classes(fixtures_dir / EPIC / "EPIC_100_tail_nouns.csv")
    unseen = metrics.read_epic_unseen_participants(
        fixtures_dir / EPIC / "EPIC_100_unseen_participant_ids_validation.csv"
    )
    vl, nl, pid = epic_val["verb_class"], epic_val["noun_class"], epic_val["participant_id"]
    n = len(vl)
    rng = np.random.default_rng(4)
    vs, ns = rng.normal(size=(n, 97)), rng.normal(size=(n, 300))
    vs[np.arange(n), vl] += rng.uniform(0, 4, size=n)
    ns[np.arange(n), nl] += rng.uniform(0, 4, size=n)
    res = metrics.epic_accuracy_subsets(vs, ns, vl, nl, pid, tail_v, tail_n, unseen)
    assert set(res) == {"all", "tail", "unseen"}
    assert res["all"] == pytest.approx(metrics.epic_accuracy(vs, ns, vl, nl))
    assert set(res["tail"]) == {"verb_top1", "noun_top1", "action_top1"}

    # Independent per-segment hits.
    v_hit = vs.argmax(1) == vl
    n_hit = ns.argmax(1) == nl
    a_hit = metrics.epic_action_correct(vs, ns, vl, nl, (1,))[1]
    tail_v_set, tail_n_set = set(tail_v.tolist()), set(tail_n.tolist())
    is_tail_v = np.array([v in tail_v_set for v in vl])
    is_tail_n = np.array([x in tail_n_set for x in nl])
    is_unseen = np.array([p in ("P18", "P32") for p in pid])
    assert 0 < is_unseen.sum() < n and 0 < is_tail_v.sum() < n and 0 < is_tail_n.sum() < n
    assert res["tail"]["verb_top1"] == pytest.approx(100 * v_hit[is_tail_v].mean())
    assert res["tail"]["noun_top1"] == pytest.approx(100 * n_hit[is_tail_n].mean())
    assert res["tail"]["action_top1"] == pytest.approx(100 * a_hit[is_tail_v | is_tail_n].mean())
    assert res["unseen"]["verb_top1"] == pytest.approx(100 * v_hit[is_unseen].mean())
    assert res["unseen"]["action_top1"] == pytest.approx(100 * a_hit[is_unseen].mean())

    # No unseen participant among the segments: the split is dropped (with a warning), as officially.
    seen = ~is_unseen
    with pytest.warns(UserWarning):
        res = metrics.epic_accuracy_subsets(vs[seen], ns[seen], vl[seen], nl[seen], pid[seen], tail_v, tail_n, unseen)
    assert "unseen" not in res
