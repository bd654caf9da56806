"""Training, resuming and evaluating with the workdir and the data on a Cloud Storage server.

The same tiny run goes once to local disk and once to the local Cloud Storage server (data list,
videos and workdir all ``gs://``), the latter killed with SIGKILL after a checkpoint and resumed:
both end with the same ``metrics.jsonl`` bytes and the same parameters bit for bit.
"""

import io
import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from egoexo_jax import evaluate, storage, train_loop
from egoexo_jax.checkpoint import pretrained
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.storage import events

import fake_media
import tiny_config

REPO = tiny_config.REPO
# One step per epoch: validation (best-checkpoint tracking) after every step, checkpoints every 2.
OVERRIDES = ("--config.num_epochs=8", "--config.checkpoint.every_steps=2", "--config.eval_every_epochs=1")


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fake_media.write_kinetics_dataset(root, [40] * tiny_config.NUM_CLASSES, height=48, width=64)
    return str(root)


@pytest.fixture(scope="module")
def gcs_data(gcs, kin_root):
    """The same dataset copied to a bucket: ``gs://.../data``."""
    url = gcs.new_bucket() + "/data"
    storage.copy_tree(kin_root, url)
    return url


def _run(data_root, workdir, cwd, *overrides):
    return subprocess.run(
        tiny_config.main_command(data_root, workdir, *OVERRIDES, *overrides),
        env=tiny_config.main_env(),
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(kin_root, gcs_data, gcs, tmp_path_factory):
    """``(local workdir, gs:// workdir, the gs run's working directory)``: the same run straight on
    local disk, and on the server killed with SIGKILL once its checkpoint 4 was committed, then
    resumed."""
    local = str(tmp_path_factory.mktemp("local") / "wd")
    _run(kin_root, local, REPO)
    remote = gcs.new_bucket() + "/run"
    cwd = tmp_path_factory.mktemp("cwd")
    proc = subprocess.Popen(
        tiny_config.main_command(gcs_data, remote, *OVERRIDES),
        env=tiny_config.main_env(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = f"{remote}/checkpoints/4/commit_success.txt"  # orbax's marker of a complete save on GCS
    deadline = time.time() + 300
    while not storage.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt_lib.read_meta(remote)[0] < 8
    _run(gcs_data, remote, cwd)
    return local, remote, cwd


@pytest.mark.slow
def test_gcs_run_killed_and_resumed_equals_the_local_run_bitwise(runs, gcs_data):
    local, remote, cwd = runs
    with open(os.path.join(local, "metrics.jsonl"), "rb") as f:
        assert storage.read_bytes(f"{remote}/metrics.jsonl") == f.read()
    _, a, step_a = ckpt_lib.load_workdir_variables(local)
    _, b, step_b = ckpt_lib.load_workdir_variables(remote)
    assert step_a == step_b == 8
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert ckpt_lib.read_meta(remote, best=True) == ckpt_lib.read_meta(local, best=True)
    assert ckpt_lib.BestCheckpoints(remote).steps() == ckpt_lib.BestCheckpoints(local).steps()
    assert json.loads(storage.read_text(f"{remote}/config.json"))["data"]["path_to_data_dir"] == gcs_data
    # Nothing local: no folder named gs: (or anything else) where the run was started.
    assert os.listdir(cwd) == [] and not os.path.exists(os.path.join(REPO, "gs:"))


@pytest.mark.slow
def test_tensorboard_events_on_gcs_hold_the_logged_scalars(runs):
    _, remote, _ = runs
    from tensorboard.compat.proto import event_pb2  # noqa: PLC0415

    losses, starts = {}, []
    for name in storage.listdir(remote):
        if "tfevents" in name:
            for payload in events.read_records(storage.read_bytes(f"{remote}/{name}")):
                event = event_pb2.Event.FromString(payload)
                if event.HasField("session_log"):
                    starts.append(event.step)
                for value in event.summary.value:
                    if value.tag == "loss":
                        losses[event.step] = value.simple_value
    lines = [json.loads(x) for x in storage.read_text(f"{remote}/metrics.jsonl").splitlines()]
    expected = {r["step"]: r["loss"] for r in lines if "loss" in r}
    assert losses == pytest.approx(expected) and sorted(expected) == list(range(1, 9))
    assert len(starts) == 2 and 0 < starts[1] < 8  # the first run's start, then the resume's


def _config(data_root, **changes):
    c = tiny_config.get_config(data_root)
    c.num_epochs = 8.0
    c.eval_every_epochs = 1.0
    for key, value in changes.items():
        parent, _, name = key.rpartition(".")
        (c[parent] if parent else c)[name] = value
    return c


@pytest.mark.slow
def test_evaluate_mode_tests_the_best_checkpoint_of_a_gcs_workdir(runs, kin_root, gcs_data, gcs):
    local, remote, _ = runs
    copy = gcs.new_bucket() + "/run"
    storage.copy_tree(remote, copy)  # the run's own workdir stays as it ended
    values = evaluate.evaluate_only(_config(gcs_data, mode="evaluate", **{"evaluate.checkpoint": "best"}), copy)
    want = evaluate.evaluate_only(_config(kin_root, mode="evaluate", **{"evaluate.checkpoint": "best"}), local)
    assert values == want
    best_step = ckpt_lib.read_meta(copy, best=True)[0]
    results = [n for n in gcs.objects(copy) if "/results/test_" in n]
    assert sorted(n.rsplit("/", 1)[-1] for n in results) == [
        f"test_step{best_step}.md",
        f"test_step{best_step}_scores.npz",
    ]
    scores = np.load(io.BytesIO(storage.read_bytes(f"{copy}/results/test_step{best_step}_scores.npz")))
    assert scores["scores_0"].shape == (tiny_config.NUM_CLASSES, tiny_config.NUM_CLASSES)


@pytest.mark.slow
def test_damaged_newest_gcs_checkpoint_is_copied_aside_and_the_previous_one_resumed(runs, gcs_data, gcs, capsys):
    _, remote, _ = runs
    copy = gcs.new_bucket() + "/run"
    storage.copy_tree(remote, copy)
    newest = f"{copy}/checkpoints/8"
    damaged = [n for n in gcs.objects(copy) if n.startswith("run/checkpoints/8/state/") and "/d/" in n]
    assert damaged
    for name in damaged:  # every array chunk cut to 8 bytes
        url = f"{copy[: copy.index('/run')]}/{name}"
        storage.write_bytes(url, storage.read_bytes(url)[:8])
    capsys.readouterr()
    train_loop.train_and_evaluate(_config(gcs_data, num_epochs=9.0, **{"checkpoint.every_steps": 2}), copy)
    out = capsys.readouterr().out
    assert f"checkpoint {newest} cannot be read (" in out and "resumed from step 6" in out
    names = gcs.objects(copy)
    assert any(n.startswith("run/checkpoints_damaged/8/state/") for n in names)
    lines = [json.loads(x) for x in storage.read_text(f"{copy}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 10))
    assert ckpt_lib.read_meta(copy)[0] == 9


@pytest.mark.slow
def test_init_from_a_gcs_workdir_loads_its_newest_checkpoint(runs, gcs_data, gcs):
    local, remote, _ = runs
    _, from_gcs, what = pretrained.load_pretrained(remote)
    _, from_disk, _ = pretrained.load_pretrained(local)
    assert what == f"training workdir {remote} (step 8)"
    for x, y in zip(jax.tree.leaves(from_gcs), jax.tree.leaves(from_disk)):
        np.testing.assert_array_equal(x, y)
    # A run that stops before its first step saves the state it started from: the transferred one.
    finetune = gcs.new_bucket() + "/finetune"
    train_loop.train_and_evaluate(_config(gcs_data, init_from=remote), finetune, stop_after=0)
    _, started, step = ckpt_lib.load_workdir_variables(finetune)
    assert step == 0
    for x, y in zip(jax.tree.leaves(started), jax.tree.leaves(from_disk)):
        np.testing.assert_array_equal(x, y)
