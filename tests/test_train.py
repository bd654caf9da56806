"""Training system: schedules, optimiser, sharding invariance, NaN stop, resume, multi-process, CLI."""

import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from egoexo_jax import (
    config_schema,
    optim,
    precise_bn,
    sharding,
    storage,
    train,
    train_loop,
    train_loop_utils,
    train_setup,
)
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data import train_pipeline
from egoexo_jax.models import norm

import fake_media
import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fake_media.write_kinetics_dataset(root, [40] * tiny_config.NUM_CLASSES, height=48, width=64)
    return str(root)


# ---------------------------------------------------------------------------------------------
# Schedules and optimiser, against independent computations.


def _cfg(**schedule):
    c = config_schema.base_config()
    c.optimizer.base_lr = 0.8
    c.num_epochs = 200.0
    c.schedule.update(schedule)
    return c


def test_cosine_with_warmup_matches_pyslowfast_formula():
    c = _cfg(policy="cosine", warmup_epochs=34.0, warmup_start_lr=0.08)
    cos = lambda e: 0.8 * 0.5 * (1 + math.cos(math.pi * e / 200))  # noqa: E731
    for e in (0.0, 1.5, 17.0, 33.99, 34.0, 100.0, 199.5, 200.0):
        want = 0.08 + e * (cos(34.0) - 0.08) / 34.0 if e < 34 else cos(e)
        assert optim.lr_at_epoch(e, c.optimizer, c.schedule, 200.0) == pytest.approx(want, rel=1e-12)
    # The per-step schedule uses the fractional epoch step / steps_per_epoch.
    sched = optim.make_schedule(c, steps_per_epoch=10)
    assert float(sched(175)) == pytest.approx(0.08 + 17.5 * (cos(34.0) - 0.08) / 34.0, rel=1e-6)
    assert float(sched(2000)) == pytest.approx(0.0, abs=1e-7)


def test_steps_with_relative_lrs_matches_epic_recipe():
    c = _cfg(policy="steps_with_relative_lrs", steps=(0, 20, 25), lrs=(1.0, 0.1, 0.01))
    c.optimizer.base_lr = 0.02
    c.num_epochs = 30.0
    for e, want in ((0, 0.02), (19.99, 0.02), (20, 0.002), (24.5, 0.002), (25, 0.0002), (29.9, 0.0002)):
        assert optim.lr_at_epoch(e, c.optimizer, c.schedule, 30.0) == pytest.approx(want)
        assert float(optim.make_schedule(c, 4)(int(e * 4))) == pytest.approx(
            optim.lr_at_epoch(int(e * 4) / 4, c.optimizer, c.schedule, 30.0), rel=1e-6
        )


def test_sgd_equals_pytorch_nesterov_with_coupled_l2_and_bn_excluded():
    params = {
        "s1": {
            "pathway0_stem": {
                "conv": {"kernel": np.ones((1, 3, 3, 3, 4), np.float32)},
                "bn": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)},
            }
        },
        "head": {"projection": {"kernel": np.full((4, 2), 0.5, np.float32), "bias": np.ones(2, np.float32)}},
    }
    mask = optim.decay_mask(params, "bn")
    assert mask["s1"]["pathway0_stem"]["bn"] == {"scale": False, "bias": False}
    assert mask["head"]["projection"] == {"kernel": True, "bias": True}  # biases keep weight decay
    c = _cfg(policy="cosine")
    c.num_epochs = 1.0
    c.optimizer.base_lr = 0.1
    tx = optim.make_optimizer(c, steps_per_epoch=4, params=params)
    state = tx.init(params)
    p_jax = jax.tree.map(jnp.asarray, params)
    p_ref = jax.tree.map(np.array, params)
    buf = jax.tree.map(np.zeros_like, params)
    rng = np.random.default_rng(0)
    flat_mask = jax.tree.leaves(mask)
    for step in range(3):
        grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, p_jax)
        p_jax = optax.apply_updates(p_jax, updates)
        lr = 0.1 * 0.5 * (1 + math.cos(math.pi * step / 4))
        leaves_p, tdef = jax.tree.flatten(p_ref)
        leaves = []
        for i, (p, g, b) in enumerate(zip(leaves_p, jax.tree.leaves(grads), jax.tree.leaves(buf))):
            d = g + (1e-4 * p if flat_mask[i] else 0.0)  # torch: d_p = grad + wd * p
            b[...] = 0.9 * b + d  # buf = momentum * buf + d_p (dampening 0; first buf = d_p)
            leaves.append(p - lr * (d + 0.9 * b))  # nesterov: d_p + momentum * buf
        p_ref = jax.tree.unflatten(tdef, leaves)
    for a, b in zip(jax.tree.leaves(p_jax), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The train step on meshes of different sizes; NaN stop.


def _steps(config, mesh, batches, workdir):
    run = train_setup.setup(config, workdir, mesh)
    run.train_iter.close()
    state, _ = train.create_train_state(config, run.model, run.tx, mesh)
    step = train.make_config_train_step(config, mesh, model=run.model, tx=run.tx, schedule=run.schedule)
    losses = []
    for b in batches:
        state, m = step(state, sharding.global_batch(b, mesh), run.teacher_variables)
        losses.append(float(m["loss"]))
    return jax.device_get(state.params), jax.device_get(state.batch_stats), losses


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["xla", "cpu", "xla-rewrites"])
def test_three_steps_on_8_devices_equal_1_device(kin_root, tmp_path, kernels):
    """``xla-rewrites``: model.rewrites=on (space-to-depth stems fed the pipeline's host fold,
    one-pass BatchNorm statistics)."""
    assert jax.device_count() == 8
    c = tiny_config.get_config(kin_root)
    c.model.dropout_rate = 0.0
    c.model.kernels, c.model.rewrites = ("xla", "on") if kernels == "xla-rewrites" else (kernels, "off")
    fold = train.folds_input(c)
    assert fold == (kernels == "xla-rewrites")
    with train_pipeline.make_train_iterator(c.data, global_batch_size=8, seed=0, space_to_depth=fold) as it:
        batches = [next(it) for _ in range(3)]
    assert batches[0]["pathway1"].shape[-1] == (12 if fold else 3)
    p8, s8, l8 = _steps(c, sharding.make_mesh(8), batches, str(tmp_path / "a"))
    p1, s1, l1 = _steps(c, sharding.make_mesh(1), batches, str(tmp_path / "b"))
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    assert l8[2] != l8[0]  # parameters really changed between steps
    for a, b in zip(jax.tree.leaves((p8, s8)), jax.tree.leaves((p1, s1))):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_host_fold_is_decided_by_the_rewritten_stems():
    """train.folds_input: the pipelines fold exactly when the ResNet stems run space-to-depth (xla
    kernels, model.rewrites on; never cpu kernels or MViT) and no online teacher reads the frames
    in the step (a step with an online teacher refuses a folded batch); train.input_shapes follows it."""
    c = tiny_config.get_config("")
    c.model.kernels, c.model.rewrites = "xla", "on"
    assert train.folds_input(c)
    assert train.input_shapes(c, 2, 63) == [(2, 2, 32, 32, 12), (2, 8, 32, 32, 12)]
    c.model.rewrites = "off"
    assert not train.folds_input(c)
    assert train.input_shapes(c, 2, 63) == [(2, 2, 63, 63, 3), (2, 8, 63, 63, 3)]
    c.model.kernels, c.model.rewrites = "cpu", "on"
    assert not train.folds_input(c)
    c.model.kernels = "xla"
    c.teachers.object.source = "online"
    assert not train.folds_input(c)
    folded = {"pathway0": np.zeros((1, 2, 4, 4, 12), np.float32), "pathway1": np.zeros((1, 8, 4, 4, 12), np.float32)}
    with pytest.raises(ValueError, match=r"online teachers read the frames.*\(1, 8, 4, 4, 12\)"):
        train.train_step(
            None, folded, {}, model=None, tx=None, schedule=None, loss_weights={}, arch="slowfast", teacher_fn=dict
        )
    c.teachers.object.source = "none"
    c.model.arch = "mvit"
    assert not train.folds_input(c)


@pytest.mark.slow
def test_one_step_is_the_same_with_either_kernel_set(kin_root, tmp_path):
    """model.kernels=cpu (XLA:CPU routes) and =xla (plain XLA ops) give the same train step."""
    c = tiny_config.get_config(kin_root)
    c.model.dropout_rate = 0.0
    with train_pipeline.make_train_iterator(c.data, global_batch_size=8, seed=0) as it:
        batches = [next(it)]
    results = {}
    for kernels in ("xla", "cpu"):
        c.model.kernels = kernels
        results[kernels] = _steps(c, sharding.make_mesh(8), batches, str(tmp_path / kernels))
    (px, sx, lx), (pc, sc, lc) = results["xla"], results["cpu"]
    np.testing.assert_allclose(lx, lc, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((px, sx)), jax.tree.leaves((pc, sc))):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_rematerialised_step_is_the_same_step(kin_root, tmp_path):
    """model.remat=dots (keep conv / matmul outputs and BN statistics, recompute the rest in the
    backward pass) changes what is stored, not the numbers."""
    c = tiny_config.get_config(kin_root)
    c.model.dropout_rate = 0.0
    c.model.kernels = "xla"
    with train_pipeline.make_train_iterator(c.data, global_batch_size=8, seed=0) as it:
        batches = [next(it)]
    results = {}
    for remat in ("none", "dots"):
        c.model.remat = remat
        results[remat] = _steps(c, sharding.make_mesh(8), batches, str(tmp_path / remat))
    for a, b in zip(jax.tree.leaves(results["none"]), jax.tree.leaves(results["dots"])):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(kin_root, tmp_path, monkeypatch):
    c = tiny_config.get_config(kin_root)
    c.num_epochs = 8.0
    original = train_pipeline.TrainIterator.__next__

    def poisoned(self):
        batch = original(self)
        if self.get_state()["batches"] == 6:  # the batch of step 6
            batch["pathway0"] = batch["pathway0"].copy()
            batch["pathway0"][0, 0, 0, 0, 0] = np.nan
        return batch

    monkeypatch.setattr(train_pipeline.TrainIterator, "__next__", poisoned)
    workdir = str(tmp_path / "run")
    with pytest.raises(train_loop_utils.NonFiniteLossError, match=r"step 6: .*loss_ce=nan"):
        train_loop.train_and_evaluate(c, workdir)
    step, _ = ckpt_lib.read_meta(workdir)
    assert step == 4
    _, variables, _ = ckpt_lib.load_workdir_variables(workdir)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# Precise BN and the best checkpoint.


class _TwoBN(nn.Module):
    """conv -> BN -> relu -> BN with the students' group BatchNorm (groups of 4 clips)."""

    bn_momentum: float = 0.1

    @nn.compact
    def __call__(self, pathways, train):
        x = nn.Conv(4, (1, 3, 3))(pathways[0])
        x = norm.BatchNorm(group_size=4, momentum=self.bn_momentum)(x, train)
        x = norm.BatchNorm(group_size=4, momentum=self.bn_momentum)(nn.relu(x), train)
        return {"logits": x.mean((1, 2, 3))}


def test_precise_bn_is_the_mean_of_per_group_statistics_on_any_mesh():
    """One group = one PySlowFast per-GPU batch: precise BN averages the groups' own statistics
    (mean, unbiased variance), weights the groups past num_groups in the last batch out, and gives
    the same numbers on 8 devices as on 1."""
    model = _TwoBN()
    rng = np.random.default_rng(0)
    x = lambda b: rng.normal(1.0, 2.0, size=(b, 2, 8, 8, 3)).astype(np.float32)  # noqa: E731
    variables = model.init(jax.random.PRNGKey(0), [jnp.zeros((4, 2, 8, 8, 3))], train=False)
    variables = {
        "params": variables["params"],  # running values that must not leak in
        "batch_stats": jax.tree.map(lambda v: v + 0.5, variables["batch_stats"]),
    }
    batches = [{"pathway0": x(8), "label": np.zeros(8, np.int32)}, {"pathway0": x(8)}]  # 2 groups each
    groups = [b["pathway0"][i : i + 4] for b in batches for i in (0, 4)]

    def group_stats(g):  # the statistics of one group on its own, as PyTorch BN computes them
        h = np.asarray(
            jax.lax.conv_general_dilated(
                jnp.asarray(g),
                variables["params"]["Conv_0"]["kernel"],
                (1, 1, 1),
                [(0, 0), (1, 1), (1, 1)],
                dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            )
        ) + np.asarray(variables["params"]["Conv_0"]["bias"])
        out = {}
        for name in ("BatchNorm_0", "BatchNorm_1"):
            mean, var = h.mean((0, 1, 2, 3)), h.var((0, 1, 2, 3))
            out[name] = {"mean": mean, "var": var * h[..., 0].size / (h[..., 0].size - 1)}
            p = variables["params"][name]
            h = np.maximum((h - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"], 0) if name == "BatchNorm_0" else h
        return out

    per_group = [group_stats(g) for g in groups]
    assert not np.allclose(per_group[0]["BatchNorm_1"]["var"], per_group[3]["BatchNorm_1"]["var"])
    want = jax.tree.map(lambda *g: np.mean(np.stack(g), 0), *per_group[:3])  # 3 of the 4 groups
    for n in (8, 1):
        mesh = sharding.make_mesh(n)
        got = precise_bn.precise_bn_stats(
            model, sharding.replicate(variables, mesh), iter(batches), "slow", num_groups=3, group_size=4, mesh=mesh
        )
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-5)


def test_best_tracker_and_best_checkpoints_survive_pruning_and_resume(tmp_path):
    # PySlowFast's rule: a new best must be strictly higher, starting from 0.
    best = train_loop_utils.BestTracker("top1")
    assert not best.update(1, {"top1": 0.0}) and best.state() is None
    assert best.update(2, {"top1": 12.5}) and not best.update(3, {"top1": 12.5})
    assert not best.update(4, {"mAP": 99.0})  # the metric is absent: no best (warned once)
    assert best.update(5, {"top1": 25.0}) and best.state() == {"metric": "top1", "value": 25.0, "step": 5}
    assert train_loop_utils.BestTracker("top1", best.state()).state() == best.state()

    workdir = str(tmp_path)
    periodic = ckpt_lib.Checkpointer(workdir, keep=1, async_save=False)
    bests = ckpt_lib.BestCheckpoints(workdir)
    tree = lambda v: {"w": np.full((3,), v, np.float32)}  # noqa: E731
    bests.save(2, tree(2), {"best": {"step": 2}})
    for step in (3, 4):
        periodic.save(step, tree(step), {})
    periodic.wait()
    bests.prune(periodic.latest_step())
    bests.save(5, tree(5), {"best": {"step": 5}})
    bests.prune(periodic.latest_step())  # 4: step 5 is not covered yet, so 2 stays
    assert bests.steps() == [2, 5]
    bests.save(7, tree(7), {"best": {"step": 7}})
    periodic.save(6, tree(6), {})
    periodic.wait()
    bests.prune(periodic.latest_step())  # 6 covers best 5: 2 goes, 5 and 7 stay
    assert bests.steps() == [5, 7] and periodic.manager.all_steps() == [6]
    # A run resuming from step 6 recomputes the best of step 7.
    bests.discard_after(6)
    assert bests.steps() == [5]
    assert ckpt_lib.read_meta(workdir, best=True) == (5, {"best": {"step": 5}})
    restored = ckpt_lib.restore_on_this_host(os.path.join(workdir, ckpt_lib.BEST_DIR, "5", "state"))
    np.testing.assert_array_equal(restored["w"], tree(5)["w"])
    periodic.close()
    bests.close()
    with pytest.raises(FileNotFoundError, match="best-validation checkpoint"):
        ckpt_lib.read_meta(str(tmp_path / "elsewhere"), best=True)


# ---------------------------------------------------------------------------------------------
# Through the command line: resume after SIGKILL, two processes, config errors.


def _records(workdir):
    return [json.loads(line) for line in storage.read_text(storage.join(workdir, "metrics.jsonl")).splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("kernels,killed_on", [("xla", "local"), ("cpu", "gcs")])
def test_resume_after_sigkill_reproduces_uninterrupted_run(kin_root, tmp_path, request, kernels, killed_on):
    """A run killed with SIGKILL and resumed ends with the same ``metrics.jsonl`` bytes, parameters
    and best checkpoint as an uninterrupted one on local disk; with ``killed_on="gcs"`` the killed
    run reads its data from and writes its workdir to the local Cloud Storage server."""
    # One step per epoch: validation (best-checkpoint tracking) and precise BN after every step,
    # periodic checkpoints every 2 steps, so a kill can fall between a best and its checkpoint.
    overrides = (
        "--config.num_epochs=10",
        "--config.checkpoint.every_steps=2",
        "--config.eval_every_epochs=1",
        "--config.precise_bn.enabled=True",
        "--config.precise_bn.num_batches=3",
        f"--config.model.kernels={kernels}",
    )
    straight, killed, data, cwd = str(tmp_path / "straight"), str(tmp_path / "killed"), kin_root, tmp_path / "cwd"
    if killed_on == "gcs":
        bucket = request.getfixturevalue("gcs").new_bucket()
        killed, data = f"{bucket}/run", f"{bucket}/data"
        storage.copy_tree(kin_root, data)
    cwd.mkdir()
    subprocess.run(
        tiny_config.main_command(kin_root, straight, *overrides),
        env=tiny_config.main_env(),
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    proc = subprocess.Popen(
        tiny_config.main_command(data, killed, *overrides),
        env=tiny_config.main_env(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # A complete save: orbax renames a local step folder into place, and on GCS writes its marker last.
    target = storage.join(killed, "checkpoints", "4", "commit_success.txt" if killed_on == "gcs" else "")
    deadline = time.time() + 300
    while not storage.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt_lib.read_meta(killed)[0] < 10
    subprocess.run(
        tiny_config.main_command(data, killed, *overrides),
        env=tiny_config.main_env(),
        check=True,
        cwd=cwd,
        capture_output=True,
    )
    with open(os.path.join(straight, "metrics.jsonl"), "rb") as f:
        assert storage.read_bytes(storage.join(killed, "metrics.jsonl")) == f.read()
    assert [r["step"] for r in _records(straight) if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in _records(straight) if "val/top1" in r] == list(range(1, 11))
    _, a, step_a = ckpt_lib.load_workdir_variables(straight)
    _, b, step_b = ckpt_lib.load_workdir_variables(killed)
    assert step_a == step_b == 10
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    # The same best state, the only one left in each run.
    best_step, best_meta = ckpt_lib.read_meta(straight, best=True)
    assert ckpt_lib.read_meta(killed, best=True) == (best_step, best_meta)
    assert ckpt_lib.BestCheckpoints(straight).steps() == ckpt_lib.BestCheckpoints(killed).steps() == [best_step]
    vals = [r["val/top1"] for r in _records(straight) if "val/top1" in r]
    assert best_meta["best"] == {"metric": "top1", "value": max(vals), "step": 1 + vals.index(max(vals))}
    _, a, _ = ckpt_lib.load_workdir_variables(straight, best=True)
    _, b, _ = ckpt_lib.load_workdir_variables(killed, best=True)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert os.listdir(cwd) == []  # nothing where the killed run was started (no folder named gs:)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(data_root, workdir, overrides, cwd=REPO):
    """The tiny config as two ``jax.distributed`` CPU processes of 2 devices each; their outputs."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            tiny_config.main_command(data_root, workdir, *overrides),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=tiny_config.main_env(
                XLA_FLAGS="--xla_force_host_platform_device_count=2",
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
                JAX_CPU_COLLECTIVES="gloo",
            ),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


@pytest.mark.slow
def test_two_processes_equal_one_process_and_run_on_gcs(kin_root, tmp_path, gcs):
    """Two processes give the one-process numbers (to float tolerance: another summation order),
    and bit for bit the same with data and workdir on the Cloud Storage server as on local disk."""
    overrides = ("--config.total_steps=3", "--config.checkpoint.every_steps=0", "--config.model.dropout_rate=0.0")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    flags4 = "--xla_force_host_platform_device_count=4"
    subprocess.run(
        tiny_config.main_command(kin_root, one, *overrides),
        env=tiny_config.main_env(XLA_FLAGS=flags4),
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    outs = _two_processes(kin_root, two, overrides)
    assert "4 devices" in outs[0]
    _, a, _ = ckpt_lib.load_workdir_variables(one)
    _, b, _ = ckpt_lib.load_workdir_variables(two)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)
    assert [r["loss"] for r in _records(one)] == pytest.approx([r["loss"] for r in _records(two)], rel=1e-5)
    bucket = gcs.new_bucket()
    storage.copy_tree(kin_root, f"{bucket}/data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _two_processes(f"{bucket}/data", f"{bucket}/run", overrides, cwd=cwd)
    with open(os.path.join(two, "metrics.jsonl"), "rb") as f:
        assert storage.read_bytes(f"{bucket}/run/metrics.jsonl") == f.read()
    _, c, step = ckpt_lib.load_workdir_variables(f"{bucket}/run")
    assert step == 3
    for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(c)):
        np.testing.assert_array_equal(x, y)
    assert os.listdir(cwd) == []


def test_unknown_override_suggests_closest_key(kin_root, tmp_path):
    out = subprocess.run(
        tiny_config.main_command(kin_root, str(tmp_path), "--config.optimizer.base_rl=0.1"),
        env=tiny_config.main_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "unknown config key 'optimizer.base_rl'; did you mean 'optimizer.base_lr'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_teacher_entry_stops_the_run_before_the_first_step(kin_root, tmp_path):
    """An Ego-Exo pre-training run whose score file lacks one training video stops in set-up,
    before any step or checkpoint, naming how many and which; the full path with
    teachers.allow_missing (it trains and logs the count) is in test_distillation."""
    from egoexo_jax.data import aux_targets, handobj, teacher_scores  # pylint: disable=import-outside-toplevel
    from egoexo_jax.models import presets  # pylint: disable=import-outside-toplevel

    c = tiny_config.get_config(kin_root)
    presets.egoexo_pretrain_heads(c.model)
    c.model.interaction_conv_dim = 16
    c.loss.update(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0)
    keys = [line.split()[0] for line in open(os.path.join(kin_root, "train.csv"))]
    teacher_scores.write_score_pickle(tmp_path / "ego.pkl", {k: [1.0, -1.0] for k in keys if k != "v3.mp4"})
    teacher_scores.write_score_pickle(tmp_path / "obj.pkl", {k: np.zeros(1000) for k in keys})
    (tmp_path / "dets").mkdir()
    for k in keys:
        handobj.write_detections(tmp_path / "dets" / k.replace(".mp4", ".npy"), [(None, None)] * 40)
    c.teachers.ego.update(source="file", file=str(tmp_path / "ego.pkl"))
    c.teachers.object.update(source="file", file=str(tmp_path / "obj.pkl"))
    c.teachers.interaction.update(source="file", detections=str(tmp_path / "dets"))
    config_schema.validate(c)
    workdir = tmp_path / "run"
    with pytest.raises(
        aux_targets.MissingTeacherEntriesError,
        match=r"1 of 8 training items have no Ego-Score entries in .*ego\.pkl: 'v3\.mp4'",
    ):
        train_loop.train_and_evaluate(c, str(workdir))
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
    os.remove(tmp_path / "dets" / "v5.npy")
    os.remove(tmp_path / "dets" / "v6.npy")
    with pytest.raises(
        aux_targets.MissingTeacherEntriesError,
        match=r"'v3\.mp4'.*2 of 8 training items have no hand-object detection files .*'v5\.mp4', 'v6\.mp4'",
    ):
        train_setup.check_teacher_files(c, train_setup.offline_aux_fn(c))
    c.teachers.allow_missing = True
    assert train_setup.check_teacher_files(c, train_setup.offline_aux_fn(c)) == {
        "ego": 1,
        "object": 0,
        "interaction": 2,
    }


def test_config_validation_names_the_key():
    c = tiny_config.get_config("")
    c.teachers.ego.source = "online-ish"
    with pytest.raises(ValueError, match="teachers.ego.source"):
        config_schema.validate(c)
    c = tiny_config.get_config("")
    c.loss.ego = 0.1
    with pytest.raises(ValueError, match="teachers.ego.source is 'none'"):
        config_schema.validate(c)
    assert config_schema.closest_key("batch_sise", config_schema.all_keys(c)) == "batch_size"
