"""Training and evaluating with the workdir and the data on the local Cloud Storage server.

One tiny run (data list, videos and workdir all ``gs://``) feeds the tests of what it leaves in the
bucket, evaluation of its best checkpoint, the damaged-newest fallback and ``init_from``. Its twin
killed with SIGKILL and resumed, bitwise equal to a local-disk run, is in ``test_train.py``; the
two-process run on the server is there too.
"""

import io
import json
import os
import subprocess

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
def gcs_run(gcs_data, gcs, tmp_path_factory):
    """``(gs:// workdir, the folder it was started in)`` of the tiny run, data and workdir on the
    server (its kill-and-resume twin is ``test_train.test_resume_after_sigkill_reproduces_uninterrupted_run``)."""
    remote = gcs.new_bucket() + "/run"
    cwd = tmp_path_factory.mktemp("cwd")
    _run(gcs_data, remote, cwd)
    return remote, cwd


@pytest.mark.slow
def test_a_gcs_run_leaves_its_files_in_the_bucket_and_nothing_local(gcs_run, gcs_data, gcs):
    remote, cwd = gcs_run
    names = gcs.objects(remote)
    prefix = remote[len("gs://") :].split("/", 1)[1] + "/"
    top = {n[len(prefix) :].split("/")[0] for n in names}
    assert {"checkpoints", "checkpoints_best", "config.json", "metrics.jsonl", "results"} <= top
    assert any(t.startswith("events.out.tfevents.") for t in top)
    assert ckpt_lib.read_meta(remote)[0] == 8
    assert json.loads(storage.read_text(f"{remote}/config.json"))["data"]["path_to_data_dir"] == gcs_data
    # Nothing local: no folder named gs: (or anything else) where the run was started.
    assert os.listdir(cwd) == [] and not os.path.exists(os.path.join(REPO, "gs:"))


@pytest.mark.slow
def test_tensorboard_events_on_gcs_hold_the_logged_scalars(gcs_run):
    remote, _ = gcs_run
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
    assert starts == [0]


def _config(data_root, **changes):
    c = tiny_config.get_config(data_root)
    c.num_epochs = 8.0
    c.eval_every_epochs = 1.0
    for key, value in changes.items():
        parent, _, name = key.rpartition(".")
        (c[parent] if parent else c)[name] = value
    return c


@pytest.mark.slow
def test_evaluate_mode_tests_the_best_checkpoint_of_a_gcs_workdir(gcs_run, gcs_data, gcs, capsys):
    remote, _ = gcs_run
    copy = gcs.new_bucket() + "/run"
    storage.copy_tree(remote, copy)  # the run's own workdir stays as it ended
    capsys.readouterr()
    values = evaluate.evaluate_only(_config(gcs_data, mode="evaluate", **{"evaluate.checkpoint": "best"}), copy)
    best_step = ckpt_lib.read_meta(copy, best=True)[0]
    assert f"evaluating best-validation checkpoint of {copy} (step {best_step})" in capsys.readouterr().out
    results = [n for n in gcs.objects(copy) if "/results/test_" in n]
    assert sorted(n.rsplit("/", 1)[-1] for n in results) == [
        f"test_step{best_step}.md",
        f"test_step{best_step}_scores.npz",
    ]
    table = storage.read_text(f"{copy}/results/test_step{best_step}.md")
    assert f"| top1            | {values['top1']:6.2f} |" in table
    scores = np.load(io.BytesIO(storage.read_bytes(f"{copy}/results/test_step{best_step}_scores.npz")))
    assert scores["scores_0"].shape == (tiny_config.NUM_CLASSES, tiny_config.NUM_CLASSES)
    last = json.loads(storage.read_text(f"{copy}/metrics.jsonl").splitlines()[-1])
    assert last == {"step": best_step, **{f"test/{k}": v for k, v in values.items()}}


@pytest.mark.slow
def test_damaged_newest_gcs_checkpoint_is_copied_aside_and_the_previous_one_resumed(gcs_run, gcs_data, gcs, capsys):
    """A whole run's fallback (the local one: test_checkpoint_restore's damaged-newest variants)."""
    remote, _ = gcs_run
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
def test_init_from_a_gcs_workdir_starts_from_its_newest_checkpoint(gcs_run, gcs_data, gcs):
    remote, _ = gcs_run
    _, saved, step = ckpt_lib.load_workdir_variables(remote)
    _, loaded, what = pretrained.load_pretrained(remote)
    assert what == f"training workdir {remote} (step {step})"
    # A run that stops before its first step saves the state it started from: the transferred one.
    finetune = gcs.new_bucket() + "/finetune"
    train_loop.train_and_evaluate(_config(gcs_data, init_from=remote), finetune, stop_after=0)
    _, started, first = ckpt_lib.load_workdir_variables(finetune)
    assert first == 0
    for x, y, z in zip(jax.tree.leaves(started), jax.tree.leaves(loaded), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
