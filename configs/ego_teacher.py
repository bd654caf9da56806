r"""The Ego-Score teacher: a 2-way video classifier, exocentric (0) vs egocentric (1), on Charades-Ego.

Ego-Exo distils from a binary ego-vs-exo classifier trained on Charades-Ego, whose scenes were
filmed both in first and in third person (docs/method.md#ego-score; class 1 = egocentric). The original
repository ships only that teacher's predictions on Kinetics (``k400_ego_predicts.pkl``), not its
recipe, so the recipe here is our choice: the student architecture initialised from Kinetics, the
Charades-Ego fine-tuning schedule (SGD, base LR 0.25 at a global batch of 64, cosine over 60
epochs, head dropout 0.5), plain cross-entropy, summed softmax over 10 x 3 test views (top-1).
Use the result as ``configs/pretrain.py:online``'s ``--config.teachers.ego.checkpoint=WORKDIR``.

Command::

    python -m egoexo_jax.main --config=configs/ego_teacher.py[:variant] \
        --workdir=workdirs/ego_teacher --config.init_from=CONVERTED_K400_CHECKPOINT

Variants: ``slow_r50`` (default; Slow 8x8 R50, the cheaper teacher to run online) and
``slowfast_r50`` (SlowFast 8x8 R50). ``init_from`` is empty by default: pass a Kinetics-400
checkpoint of the same architecture (a converted PySlowFast model-zoo ``SLOW_8x8_R50`` /
``SLOWFAST_8x8_R50`` or a ``configs/pretrain_baseline.py`` workdir); the 400-way head is
re-initialised as a 2-way one.

Data. The Charades-Ego frame pipeline only produces the 157 action classes of the first-person
videos, so this recipe reads the Charades-Ego **videos** (``CharadesEgo_v1_480``: ``{id}.mp4``,
both views) through the Kinetics reader, which takes any ``relative/path label`` list. Make the
lists from the official annotations (``CharadesEgo_v1_{train,test}.csv``; label = the
``egocentric`` column)::

    python configs/ego_teacher.py make_lists data/charades_ego/CharadesEgo \
        data/charades_ego/ego_exo

which writes ``train.csv`` and ``test.csv`` (``005BUEGO.mp4 1``). Set
``--config.data.path_to_data_dir`` (default ``data/charades_ego/ego_exo``) and
``--config.data.path_prefix`` (default ``data/charades_ego/videos``, the unpacked
``CharadesEgo_v1_480``). As in the Charades-Ego recipe, validation runs on the test list. See
``data/charades_ego/README.md`` for the dataset. Frames are decoded as RGB, like the Kinetics
students that consume the teacher, so no ``teachers.ego.input_*`` override is needed.

Run time (an estimate, not a measurement): on 8 GPUs, ~6k training videos at batch 64 are ~95
steps per epoch, ~5.7k steps in all: a few hours for Slow R50, somewhat more for SlowFast R50.

Other batch sizes: ``optimizer.base_lr`` is the LR for ``optimizer.reference_batch_size`` (64)
clips. With another ``--config.batch_size=B`` the trainer scales it by B/64 (and prints it), e.g.
B=16: 0.0625; ``--config.batch_from_devices=True`` (the launchers' default) sets B to 8 clips per
device.
"""

import csv
import os
import sys

from egoexo_jax import config_schema, recipe
from egoexo_jax.models import presets

common = recipe.load_module(os.path.join(os.path.dirname(__file__), "common.py"))
DEFAULT = "slow_r50"
MODELS = {"slow_r50": lambda: presets.slow(50), "slowfast_r50": lambda: presets.slowfast(50)}


def get_config(arg=None):
    c = config_schema.base_config()
    c.model = common.variant(MODELS, arg, DEFAULT, "configs/ego_teacher.py")()
    c.model.update(num_classes=(2,), head_name="head", dropout_rate=0.5)
    c.data.update(
        path_to_data_dir="data/charades_ego/ego_exo",
        path_prefix="data/charades_ego/videos",
        train_list="train.csv",
        val_list="test.csv",
        test_list="test.csv",
        num_classes=2,
    )
    common.student_clips(c, c.model, common.kinetics_sampling(c.model))
    c.loss.multi_label = False
    common.global_batch(c, per_device=8, devices=8)
    c.num_epochs = 60.0
    common.sgd(c, base_lr=0.25)
    c.schedule.update(policy="cosine", warmup_epochs=0.0, cosine_end_lr=0.0)
    c.precise_bn.enabled = False
    c.eval_every_epochs = 2.0
    c.checkpoint.every_epochs = 10.0
    c.evaluate.ensemble = "sum"
    c.init_from = ""  # a Kinetics-400 checkpoint of the same architecture
    return c


def make_lists(annotations_dir: str, out_dir: str) -> None:
    """``CharadesEgo_v1_{train,test}.csv`` -> ``out_dir/{train,test}.csv`` of ``{id}.mp4 {0|1}``."""
    os.makedirs(out_dir, exist_ok=True)
    for split in ("train", "test"):
        with open(os.path.join(annotations_dir, f"CharadesEgo_v1_{split}.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"id", "egocentric"} <= set(rows[0]):
            raise ValueError(f"CharadesEgo_v1_{split}.csv needs the columns 'id' and 'egocentric'")
        with open(os.path.join(out_dir, f"{split}.csv"), "w", encoding="utf-8") as f:
            for r in rows:
                ego = r["egocentric"].strip().lower() in ("yes", "true", "1")
                f.write(f"{r['id'].strip()}.mp4 {int(ego)}\n")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "make_lists":
        raise SystemExit("usage: python configs/ego_teacher.py make_lists ANNOTATIONS_DIR OUT_DIR")
    make_lists(sys.argv[2], sys.argv[3])
