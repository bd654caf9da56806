"""Losses: independent numpy references and the official PyTorch values of the debug fixture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax import losses

FIXTURE = "pyslowfast_debug/egoexo_k400_slowfast_r50_w8"

# Jitted once per shape: much faster on CPU than op-by-op dispatch, and checks jit-ability.
cross_entropy = jax.jit(losses.cross_entropy)
multilabel_bce = jax.jit(losses.multilabel_bce)
kd_loss = jax.jit(losses.kd_loss)
interaction_map_bce = jax.jit(losses.interaction_map_bce)


@pytest.fixture(scope="module")
def official(fixtures_dir):
    inputs = np.load(fixtures_dir / FIXTURE / "inputs.npz")
    outputs = np.load(fixtures_dir / FIXTURE / "outputs.npz")
    return dict(inputs), dict(outputs)


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_bce(x, y, pw=1.0):
    # Direct (naive but float64) formula: -[pw*y*log(sigmoid(x)) + (1-y)*log(1-sigmoid(x))].
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    sig = 1.0 / (1.0 + np.exp(-x))
    return -(pw * y * np.log(sig) + (1 - y) * np.log(1 - sig))


def test_cross_entropy_matches_numpy_and_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=6)
    ref = -_np_log_softmax(logits)[np.arange(6), labels]
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), ref.mean(), rtol=1e-6)
    mask = np.array([1, 0, 1, 1, 0, 0], np.float32)
    np.testing.assert_allclose(cross_entropy(logits, labels, mask), ref[mask > 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, labels, mask.astype(bool)), ref[mask > 0].mean(), rtol=1e-6)
    # No valid example: 0, not NaN.
    assert float(cross_entropy(logits, labels, np.zeros(6))) == 0.0


def test_multilabel_bce_stable_and_masked():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3, size=(4, 7)).astype(np.float32)
    targets = (rng.uniform(size=(4, 7)) > 0.6).astype(np.float32)
    np.testing.assert_allclose(multilabel_bce(logits, targets), _np_bce(logits, targets).mean(), rtol=1e-6)
    mask = np.array([0, 1, 1, 0])
    np.testing.assert_allclose(
        multilabel_bce(logits, targets, mask), _np_bce(logits, targets)[mask > 0].mean(), rtol=1e-6
    )
    # Huge logits stay finite and give the exact limits.
    big = jnp.array([[1e4, -1e4]], jnp.float32)
    value = multilabel_bce(big, jnp.array([[0.0, 1.0]]))
    assert np.isfinite(value) and np.isclose(value, 1e4)
    assert float(multilabel_bce(big, jnp.array([[1.0, 0.0]]))) == 0.0


def test_kd_loss_matches_numpy_and_temperature():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(5, 9)).astype(np.float32)
    t = rng.normal(scale=2, size=(5, 9)).astype(np.float32)
    for alpha, temp in [(0.1, 1.0), (0.5, 2.0), (1.0, 4.0)]:
        p = np.exp(_np_log_softmax(t / temp))
        kl = (p * (np.log(p) - _np_log_softmax(s / temp))).sum(-1)
        np.testing.assert_allclose(kd_loss(s, t, alpha, temp), alpha * temp**2 * kl.mean(), rtol=1e-6)
        mask = np.array([1, 1, 0, 1, 0], bool)
        np.testing.assert_allclose(kd_loss(s, t, alpha, temp, mask), alpha * temp**2 * kl[mask].mean(), rtol=1e-6)
    # Identical distributions -> 0; a teacher with an exactly-zero probability is fine.
    assert abs(float(kd_loss(s, s))) < 1e-6
    # ... and logits that agree up to a per-example constant are the same distribution.
    shift = rng.normal(scale=5, size=(5, 1)).astype(np.float32)
    assert abs(float(kd_loss(s, s + shift, 0.5, 2.0))) < 1e-5
    t_inf = t.copy()
    t_inf[:, 0] = -np.inf
    assert np.isfinite(float(kd_loss(s, t_inf)))


def test_kd_loss_matches_official(official):
    inputs, outputs = official
    for i, (student, alpha) in enumerate([("logits_kd_ego", 0.1), ("logits_kd_in", 0.5)]):
        value = kd_loss(jnp.asarray(outputs[student]), jnp.asarray(inputs[f"teacher_logits_{i}"]), alpha, 1.0)
        np.testing.assert_allclose(float(value), float(outputs[f"kd_loss_{i}"]), rtol=1e-5)


def test_interaction_map_bce_matches_official(official):
    _, outputs = official
    logits = np.transpose(outputs["handobj_score_map"], (0, 2, 3, 4, 1))  # [N,2,T,h,w] -> [N,T,h,w,2]
    targets = np.stack([outputs["hand_targets_slow"], outputs["obj_targets_slow"]], axis=-1)
    hand, obj = interaction_map_bce(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(hand), float(outputs["hand_loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(obj), float(outputs["obj_loss"]), rtol=1e-5)


def test_interaction_map_bce_pos_weight_and_mask():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 2, 4, 4, 2)).astype(np.float32)
    targets = rng.uniform(size=(3, 2, 4, 4, 2)).astype(np.float32) * (rng.uniform(size=(3, 2, 4, 4, 2)) > 0.5)
    ref = _np_bce(logits, targets, pw=2.5)
    hand, obj = interaction_map_bce(logits, targets, pos_weight=2.5)
    np.testing.assert_allclose([hand, obj], [ref[..., 0].mean(), ref[..., 1].mean()], rtol=1e-6)
    mask = np.array([1.0, 0.0, 1.0])
    hand, obj = interaction_map_bce(logits, targets, pos_weight=2.5, mask=mask)
    np.testing.assert_allclose([hand, obj], [ref[[0, 2], ..., 0].mean(), ref[[0, 2], ..., 1].mean()], rtol=1e-6)


PRETRAIN = dict(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0, ego_temperature=1.0, object_temperature=1.0)
total_pretrain = jax.jit(lambda o, b: losses.total(o, b, PRETRAIN))


def _pretrain_batch(rng, b=4, classes=10, k=12):
    outputs = {
        "logits": jnp.asarray(rng.normal(size=(b, classes)), jnp.float32),
        "ego_logits": jnp.asarray(rng.normal(size=(b, 2)), jnp.float32),
        "object_logits": jnp.asarray(rng.normal(size=(b, k)), jnp.float32),
        "interaction_logits": jnp.asarray(rng.normal(size=(b, 2, 3, 3, 2)), jnp.float32),
    }
    batch = {
        "label": jnp.asarray(rng.integers(0, classes, size=b)),
        "ego_target": jnp.asarray(rng.normal(size=(b, 2)), jnp.float32),
        "object_target": jnp.asarray(rng.normal(size=(b, k)), jnp.float32),
        "interaction_target": jnp.asarray(rng.uniform(size=(b, 2, 3, 3, 2)), jnp.float32),
    }
    return outputs, batch


def test_total_pretraining_objective():
    rng = np.random.default_rng(4)
    outputs, batch = _pretrain_batch(rng)
    loss, terms = total_pretrain(outputs, batch)
    ce = cross_entropy(outputs["logits"], batch["label"])
    ego = kd_loss(outputs["ego_logits"], batch["ego_target"])
    obj = kd_loss(outputs["object_logits"], batch["object_target"])
    hand, objmap = interaction_map_bce(outputs["interaction_logits"], batch["interaction_target"])
    expected = 0.5 * ce + 0.1 * ego + 0.5 * obj + hand + objmap
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], loss)
    for name, value in [
        ("loss_ce", ce),
        ("loss_ego", ego),
        ("loss_object", obj),
        ("loss_hand", hand),
        ("loss_object_map", objmap),
    ]:
        np.testing.assert_allclose(terms[name], value, rtol=1e-6)
    np.testing.assert_allclose(terms["weighted_ego"], 0.1 * ego, rtol=1e-6)
    assert float(terms["count_ego"]) == 4 and float(terms["count_interaction"]) == 4


def test_total_masks_missing_teachers():
    rng = np.random.default_rng(5)
    outputs, batch = _pretrain_batch(rng)
    batch = dict(
        batch,
        ego_mask=jnp.array([1, 0, 1, 0], jnp.float32),
        object_mask=jnp.array([0, 0, 0, 0]),
        interaction_mask=jnp.array([True, True, False, True]),
    )
    _, terms = total_pretrain(outputs, batch)
    keep = np.array([0, 2])
    np.testing.assert_allclose(
        terms["loss_ego"], kd_loss(outputs["ego_logits"][keep], batch["ego_target"][keep]), rtol=1e-6
    )
    assert float(terms["loss_object"]) == 0.0 and float(terms["count_object"]) == 0.0
    assert float(terms["count_ego"]) == 2 and float(terms["count_interaction"]) == 3
    # Changing a masked-out clip's teacher changes nothing.
    batch2 = dict(batch, ego_target=batch["ego_target"].at[1].set(100.0))
    np.testing.assert_array_equal(total_pretrain(outputs, batch2)[0], total_pretrain(outputs, batch)[0])


def test_total_without_aux_is_exactly_task_loss():
    rng = np.random.default_rng(6)
    outputs, batch = _pretrain_batch(rng)
    weights = dict(PRETRAIN, ego=0.0, object=0.0, hand=0.0, object_map=0.0, ce=1.0)
    loss, terms = losses.total(outputs, batch, weights)
    assert float(loss) == float(losses.cross_entropy(outputs["logits"], batch["label"]))
    assert not any(k.startswith("count_") for k in terms)
    # Targets absent from the batch: the terms are skipped even with non-zero weights.
    plain = {"label": batch["label"]}
    loss2, _ = losses.total({"logits": outputs["logits"]}, plain, PRETRAIN)
    assert float(loss2) == float(0.5 * losses.cross_entropy(outputs["logits"], batch["label"]))


def test_total_multilabel_and_epic_multitask():
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(size=(3, 157)), jnp.float32)
    labels = jnp.asarray(rng.uniform(size=(3, 157)) > 0.9, jnp.float32)
    loss, _ = losses.total({"logits": logits}, {"label": labels}, {"ce": 1.0, "multi_label": True})
    assert float(loss) == float(losses.multilabel_bce(logits, labels))
    # EPIC (+ Ego-Exo* map terms 3.0 / 3.0).
    verb = jnp.asarray(rng.normal(size=(3, 97)), jnp.float32)
    noun = jnp.asarray(rng.normal(size=(3, 300)), jnp.float32)
    maps = jnp.asarray(rng.normal(size=(3, 8, 7, 7, 2)), jnp.float32)
    batch = {
        "verb": jnp.array([1, 5, 96]),
        "noun": jnp.array([0, 299, 7]),
        "interaction_target": jnp.asarray(rng.uniform(size=(3, 8, 7, 7, 2)), jnp.float32),
    }
    total_epic = jax.jit(lambda o, b: losses.total(o, b, {"ce": 1.0, "hand": 3.0, "object_map": 3.0}))
    loss, terms = total_epic({"logits": (verb, noun), "interaction_logits": maps}, batch)
    task = cross_entropy(verb, batch["verb"]) + cross_entropy(noun, batch["noun"])
    hand, obj = interaction_map_bce(maps, batch["interaction_target"])
    np.testing.assert_allclose(loss, task + 3 * hand + 3 * obj, rtol=1e-6)
    np.testing.assert_allclose(terms["loss_verb"] + terms["loss_noun"], terms["loss_ce"], rtol=1e-6)
    assert "loss_ego" not in terms


def test_gradients_finite():
    rng = np.random.default_rng(8)
    outputs, batch = _pretrain_batch(rng)
    grads = jax.jit(jax.grad(lambda o: losses.total(o, batch, PRETRAIN)[0]))(outputs)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert math.isfinite(float(jnp.abs(grads["logits"]).sum()))
