"""The whole training update against two steps of the official Ego-Exo trainer
(tests/fixtures/pyslowfast_train): loss terms, step-1 gradients, parameters and BatchNorm running
statistics after each step, with either kernel set (egoexo_jax.ops)."""

import functools
import pathlib

import jax
import numpy as np
import pytest

from egoexo_jax import config_schema, ops, optim, sharding, train
from egoexo_jax.convert import pyslowfast
from egoexo_jax.data import interaction_maps
from egoexo_jax.models import naming
from egoexo_jax.ops import space_to_depth

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "pyslowfast_train" / "egoexo_k400_slow_r50_w8_2steps"
# Official weighted loss terms -> (our unweighted term, weight).
LOSS_TERMS = {
    "ce_loss": ("loss_ce", 0.5),
    "kd_loss_0": ("loss_ego", 0.1),
    "kd_loss_1": ("loss_object", 0.5),
    "hand_loss": ("loss_hand", 1.0),
    "obj_loss": ("loss_object_map", 1.0),
}


def _config(model_cfg):
    """The fixture's recipe: Ego-Exo K400 losses, SGD (Nesterov, coupled L2 without BN) at a constant 0.01."""
    c = config_schema.base_config()
    c.model = model_cfg
    c.optimizer.update(name="sgd", base_lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, no_decay="bn")
    c.schedule.update(policy="steps_with_relative_lrs", steps=(0,), lrs=(1.0,), warmup_epochs=0.0)
    c.loss.update(
        ce=0.5,
        ego=0.1,
        object=0.5,
        hand=1.0,
        object_map=1.0,
        ego_temperature=1.0,
        object_temperature=1.0,
        pos_weight=1.0,
    )
    return c


def _batch(inputs, s, fold=False):
    """The official step-``s`` batch in our layout, with the map targets our data pipeline builds;
    ``fold``: the clips as their host space-to-depth fold (what a run with model.rewrites=on gets)."""
    meta = [
        interaction_maps.build_targets(inputs[f"meta_hands_{s}_{i}"], inputs[f"meta_objs_{s}_{i}"], 8, 2)
        for i in range(4)
    ]
    clips = np.ascontiguousarray(inputs[f"pathway0_{s}"].transpose(0, 2, 3, 4, 1))
    return {
        "pathway0": space_to_depth.fold(clips) if fold else clips,
        "label": inputs[f"labels_{s}"].astype(np.int32),
        "ego_target": inputs[f"teacher_logits_0_{s}"],
        "object_target": inputs[f"teacher_logits_1_{s}"],
        "interaction_target": np.stack(meta),
    }


@functools.lru_cache(maxsize=None)
def _reference():
    return dict(np.load(FIXTURE / "inputs.npz")), dict(np.load(FIXTURE / "outputs.npz"))


def _as_variables(module, shapes, ref, prefix, checkpoint_state):
    """Fixture tensors ``{prefix}__KEY`` (PyTorch keys and layouts) as our variable tree; keys the
    group lacks (e.g. running statistics next to gradients) come from the checkpoint."""
    state = dict(checkpoint_state)
    state.update({k[len(prefix) + 2 :]: v for k, v in ref.items() if k.startswith(prefix + "__")})
    return pyslowfast.variables_from_state_dict(module, state, shapes)[0]


def _check_tree(got, want, errors, group, factor):
    """Every leaf within ``factor`` x the official float32-vs-float64 error of that tensor, plus a
    floor of 1e-6 of its largest value (tensors the official run computes exactly)."""
    flat_got = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    worst = 0.0
    for path, value in flat_got:
        names = tuple(p.key for p in path)
        key = naming.flax_to_torch_key(names[0], names[1:]) if names[0] in ("params", "batch_stats") else None
        ref = np.asarray(flat_want[path])
        f32err = float(errors[f"f32err__{group}__{key}"])
        diff = float(np.abs(np.asarray(value) - ref).max())
        bound = factor * f32err + 1e-7 * float(np.abs(ref).max()) + 1e-12
        assert diff <= bound, f"{group} {key}: |ours - official| = {diff:.3g} > {bound:.3g} (f32err {f32err:.3g})"
        worst = max(worst, diff / max(f32err, 1e-12))
    return worst


@pytest.mark.parametrize(
    "kernels",
    ["xla", pytest.param("cpu", marks=pytest.mark.slow), pytest.param("xla-rewrites", marks=pytest.mark.slow)],
)
def test_two_official_training_steps(kernels):
    """``xla-rewrites``: the xla kernels with model.rewrites=on (one-pass BatchNorm statistics,
    space-to-depth stem fed the host-folded clips)."""
    inputs, ref = _reference()
    conversion = pyslowfast.convert_checkpoint(str(FIXTURE / "checkpoint.pyth"))
    model_cfg = conversion.model_config
    model_cfg.kernels, model_cfg.rewrites = ("xla", "on") if kernels == "xla-rewrites" else (kernels, "off")
    config = _config(model_cfg)
    fold = train.folds_input(config)
    assert fold == (kernels == "xla-rewrites")
    module = conversion.module.clone(kernels=ops.select(model_cfg.kernels, rewrites=model_cfg.rewrites))
    shapes = [(1, 8, 64, 64, 3)]
    checkpoint_state = pyslowfast.normalise_state_keys(pyslowfast.read_checkpoint(str(FIXTURE / "checkpoint.pyth"))[0])

    mesh = sharding.make_mesh(4)  # one BN group of 4 clips, split over 4 devices
    variables = conversion.variables
    tx = optim.make_optimizer(config, 2, variables["params"])
    state = sharding.replicate(
        train.TrainState(
            step=np.zeros((), np.int32),
            params=variables["params"],
            batch_stats=variables["batch_stats"],
            opt_state=tx.init(variables["params"]),
            rng=jax.random.PRNGKey(0),
        ),
        mesh,
    )
    weights = train.loss_weights(config)
    step = train.make_train_step(
        mesh, model=module, tx=tx, schedule=optim.make_schedule(config, 2), loss_weights=weights, arch="slow"
    )
    grads_fn = jax.jit(functools.partial(train.loss_and_grads, model=module, loss_weights=weights, arch="slow"))

    batch1 = sharding.global_batch(_batch(inputs, 1, fold), mesh)
    grads = jax.device_get(grads_fn(state, batch1)[0])
    worst = {
        "grads": _check_tree(
            {"params": grads}, _as_variables(module, shapes, ref, "grads", checkpoint_state), ref, "grads", factor=6
        )
    }
    for s in (1, 2):
        state, metrics = step(state, sharding.global_batch(_batch(inputs, s, fold), mesh) if s == 2 else batch1, {})
        metrics = jax.device_get(metrics)
        assert float(metrics["lr"]) == pytest.approx(float(ref[f"lr_{s}"]), rel=1e-7)
        for official, (ours, weight) in LOSS_TERMS.items():
            np.testing.assert_allclose(
                weight * metrics[ours], ref[f"loss_{s}__{official}"], rtol=2e-6, err_msg=f"step {s} {official}"
            )
        np.testing.assert_allclose(metrics["loss"], ref[f"loss_{s}__total"], rtol=2e-6)
        got = {"params": jax.device_get(state.params), "batch_stats": jax.device_get(state.batch_stats)}
        want = _as_variables(module, shapes, ref, f"params{s}", checkpoint_state)
        want_stats = _as_variables(module, shapes, ref, f"running{s}", checkpoint_state)
        worst[f"params{s}"] = _check_tree(
            {"params": got["params"]}, {"params": want["params"]}, ref, f"params{s}", factor=6
        )
        worst[f"running{s}"] = _check_tree(
            {"batch_stats": got["batch_stats"]},
            {"batch_stats": want_stats["batch_stats"]},
            ref,
            f"running{s}",
            factor=6,
        )
    print(kernels, "worst |ours - official| / official f32 error:", {k: round(v, 2) for k, v in worst.items()})
