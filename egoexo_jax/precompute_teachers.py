r"""``python -m egoexo_jax.precompute_teachers``: run the online teachers once over a dataset and
write the official offline teacher files.

    python -m egoexo_jax.precompute_teachers --config=configs/pretrain.py:online --output=DIR \
        [--config.teachers.ego.checkpoint=WORKDIR_OR_PYTH] \
        [--config.teachers.object.weights=resnet50-0676ba61.pth] \
        [--split=train] [--chunk_size=512] [--batch_size=16] [--merge]

(``egoexo-precompute`` takes the same flags once the package is installed.)

The teachers are the ones ``config.teachers.{ego,object}`` sets to ``source="online"``
(:func:`egoexo_jax.teacher_loading.from_config`: a 2-way ego/exo video classifier and a 2D
ImageNet ResNet); the videos are those of the config's ``data.{train,val,test}_list`` (``--split``,
default ``train``), read with the training data readers (``egoexo_jax.data.sources``).

Output, in ``DIR`` (a local folder or a ``gs://`` prefix):

- ``k400_ego_predicts.pkl``: ``{csv relative path: [2] float32 logits}`` (index 1 = egocentric),
  when the ego teacher is online;
- ``k400_IN_predicts.pkl``: ``{csv relative path: [num_classes] float32 logits}`` (1000 for the
  ImageNet teacher), when the object teacher is online. Both are the official formats
  (docs/formats.md#teacher-score-pickles), written by ``teacher_scores.write_score_pickle``, keyed
  by the first field of the list lines exactly (``Item.key``; for Charades-Ego / EPIC lists the video id /
  narration id), so ``--config.teachers.ego.file=DIR/k400_ego_predicts.pkl`` (``source="file"``)
  reads them;
- ``bad_inputs.txt``: ``path<TAB>reason`` of every video that could not be decoded (missing,
  empty, corrupt). Such videos are left out of the pickles (the training reader then gives them a
  zero teacher mask) and never stop the run;
- ``parts/``: ``manifest.json`` (the settings the parts were made with) and one
  ``part-NNNNNN.npz`` per chunk of ``--chunk_size`` consecutive list entries.

**Which clip the teachers see.** One deterministic clip per video: the student's temporal
sampling (``data.num_frames`` frames every ``data.sampling_rate`` frames at ``data.target_fps``)
placed at the centre of the video (start = (N - span) / 2, PySlowFast's test clip 1 of 2; the
middle of the three test clips for frame-list datasets), every frame resized to short side
``data.train_jitter_scales[0]`` and centre-cropped to ``data.train_crop_size`` (at the K400
settings 256 / 224: the standard ImageNet evaluation view and the centre of the student's training
augmentation), no flip, normalised and packed into pathways exactly like the student's input.
The targets are then computed by :func:`egoexo_jax.models.teachers.online_teacher_targets`, the
function the online path runs inside the train step, so a file made here and the online teachers
agree on that clip (ego teacher: its frames taken from the fast pathway; object teacher: the mean
logits of ``teachers.object.num_frames`` frames). Online, the targets follow the student's random
clip; the official files hold one vector per video, and the centre view is the deterministic
stand-in.

**Resumable.** Chunk ``c`` holds list entries ``[c * chunk_size, (c + 1) * chunk_size)``. Each
finished chunk is written atomically (temporary file + rename; on ``gs://`` one object upload) to
``parts/part-c.npz``; a restart with the same settings skips the chunks already there (a manifest
written with other settings is an error, not a silent mix). The pickles are merged from the parts
in list order, so an interrupted and restarted run writes byte-identical files to an uninterrupted
one.

**Several hosts.** Process ``p`` of ``P`` (``jax.process_index()`` / ``jax.process_count()``,
after ``jax.distributed`` is initialised from the environment as in ``egoexo_jax.main``) computes
the chunks ``c`` with ``c % P == p`` on its first local device. Then all processes meet at a
barrier and process 0 merges, which needs ``DIR`` on a shared file system or a ``gs://`` bucket;
otherwise copy every host's ``parts/`` into one ``DIR`` and run the same command with ``--merge``
(merge only; it names the missing chunks if any). For several accelerators on one host, launch one
process per device.

Progress: a tqdm bar (videos) on stderr. Errors (a config key that is missing, teacher weights that
do not exist, a manifest of another run) are one line on stderr, exit status 2 (``--debug`` adds
the traceback). The work is done by :mod:`egoexo_jax.precompute_run`; the part files and the
merge are :mod:`egoexo_jax.precompute_parts`.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from absl import flags
from ml_collections import config_flags

from egoexo_jax import cli, hostenv, recipe, storage
from egoexo_jax.precompute_parts import BAD_INPUTS

PROG = "python -m egoexo_jax.precompute_teachers"


def _define_flags(fv: flags.FlagValues, argv: List[str]) -> None:
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Recipe file, optionally file.py:variant (e.g. configs/pretrain.py:online).",
        flag_values=fv,
        lock_config=True,
        sys_argv=[PROG] + argv,
    )
    flags.DEFINE_string("output", None, "Output folder.", flag_values=fv)
    flags.DEFINE_enum("split", "train", ["train", "val", "test"], "Which list of config.data.", flag_values=fv)
    flags.DEFINE_integer("chunk_size", 512, "List entries per part file (the unit of resumption).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Clips per teacher call.", flag_values=fv)
    flags.DEFINE_bool("merge", False, "Only merge OUTPUT/parts into the pickles.", flag_values=fv)
    flags.DEFINE_bool(
        "allow_random_object_teacher",
        False,
        "Accept an empty config.teachers.object.weights (random init: smoke tests only).",
        flag_values=fv,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def precompute(fv: flags.FlagValues) -> int:
        # Imported here: --help and flag errors answer without loading JAX and the models.
        from egoexo_jax import precompute_run, sharding  # pylint: disable=import-outside-toplevel

        sharding.maybe_initialize_distributed()
        result = precompute_run.precompute(
            fv.config,
            fv.output,
            split=fv.split,
            chunk_size=fv.chunk_size,
            batch_size=fv.batch_size,
            merge_only=fv.merge,
            allow_random_object_teacher=fv.allow_random_object_teacher,
            where=recipe.config_spec(argv) or "--config",
        )
        if result.complete:
            bad = storage.join(storage.absolute(fv.output), BAD_INPUTS)
            num_bad = sum(1 for line in storage.read_text(bad).splitlines() if line.strip())
            for signal, path in result.files.items():
                print(f"{signal} teacher: {path}")
            print(f"{num_bad} unreadable videos listed in {bad}")
        else:
            print(f"computed {result.chunks_done} chunks; process 0 merges")
        return 0

    return cli.run_command(
        PROG,
        __doc__,
        _define_flags,
        precompute,
        argv,
        required=("config", "output"),
        check_argv=recipe.check_argv,
        where_flag="output",
    )


def run() -> None:
    """``egoexo-precompute`` and ``python -m egoexo_jax.precompute_teachers``."""
    hostenv.prepare_process()
    sys.exit(main())


if __name__ == "__main__":
    run()
