r"""``python -m egoexo_jax.precompute_teachers``: run the online teachers once over a dataset and
write the official offline teacher files.

    python -m egoexo_jax.precompute_teachers --config=configs/pretrain.py:online --output=DIR \
        [--config.teachers.ego.checkpoint=WORKDIR_OR_PYTH] \
        [--config.teachers.object.weights=resnet50-0676ba61.pth] \
        [--split=train] [--chunk_size=512] [--batch_size=16] [--merge]

The teachers are the ones ``config.teachers.{ego,object}`` sets to ``source="online"``
(:func:`egoexo_jax.teacher_loading.from_config`: a 2-way ego/exo video classifier and a 2D
ImageNet ResNet); the videos are those of the config's ``data.{train,val,test}_list`` (``--split``,
default ``train``), read with the training data readers (``egoexo_jax.data.sources``).

Output, in ``DIR``:

- ``k400_ego_predicts.pkl``: ``{csv relative path: [2] float32 logits}`` (index 1 = egocentric),
  when the ego teacher is online;
- ``k400_IN_predicts.pkl``: ``{csv relative path: [num_classes] float32 logits}`` (1000 for the
  ImageNet teacher), when the object teacher is online. Both are the official formats
  (docs/formats.md#teacher-score-pickles), written by ``teacher_scores.write_score_pickle``, keyed
  by the first field of the list lines exactly (``Item.key``; for Charades-Ego / EPIC lists the
  video id / narration id), so ``--config.teachers.ego.file=DIR/k400_ego_predicts.pkl`` (``source="file"``)
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
finished chunk is written atomically (temporary file + rename) to ``parts/part-c.npz``; a restart
with the same settings skips the chunks already there (a manifest written with other settings is an
error, not a silent mix). The pickles are merged from the parts in list order, so an interrupted and
restarted run writes byte-identical files to an uninterrupted one.

**Several hosts.** Process ``p`` of ``P`` (``jax.process_index()`` / ``jax.process_count()``,
after ``jax.distributed`` is initialised from the environment as in ``egoexo_jax.main``) computes
the chunks ``c`` with ``c % P == p`` on its first local device. Then all processes meet at a
barrier and process 0 merges, which needs ``DIR`` on a shared file system; otherwise copy every
host's ``parts/`` into one ``DIR`` and run the same command with ``--merge`` (merge only; it names
the missing chunks if any). For several accelerators on one host, launch one process per device.

Progress: a tqdm bar (videos) on stderr. Errors (a config key that is missing, teacher weights that
do not exist, a manifest of another run) are one line on stderr, exit status 2.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from egoexo_jax import cli
from egoexo_jax.atomic_write import atomic_write
from egoexo_jax.cli import UserError

EGO_FILE = "k400_ego_predicts.pkl"
OBJECT_FILE = "k400_IN_predicts.pkl"
BAD_INPUTS = "bad_inputs.txt"
PARTS = "parts"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SIGNALS = ("ego", "object")
OUTPUT_FILES = {"ego": EGO_FILE, "object": OBJECT_FILE}

# Config keys read here (and by the teacher loaders / data readers), with what they should hold.
REQUIRED_KEYS = {
    "seed": "int (random-init seed of a weightless object teacher)",
    "model.dtype": "compute dtype of the teachers, e.g. 'float32'",
    "model.object_classes": "Object-Score classes (0 = 1000)",
    "data.dataset": "'kinetics' | 'charades_ego' | 'epic100' | 'epic55'",
    "data.source": "'files' | 'tfds'",
    "data.path_to_data_dir": "folder of the split lists",
    "data.path_prefix": "folder the list paths are relative to",
    "data.train_list": "file name of the training list",
    "data.num_frames": "frames per clip (the student's)",
    "data.sampling_rate": "frame stride of the clip",
    "data.target_fps": "frame rate the stride refers to",
    "data.train_jitter_scales": "(min, max) short side of training; the teachers see min",
    "data.train_crop_size": "crop size the teachers see",
    "data.mean": "input normalisation mean", "data.std": "input normalisation std",
    "data.bgr": "channel order (None = dataset default)",
    "data.arch": "pathway packing ('slowfast' | 'slow' | 'mvit')", "data.alpha": "slow/fast ratio",
    "data.num_threads": "decoding threads",
    "teachers.ego.source": "'none' | 'file' | 'online'",
    "teachers.ego.checkpoint": "2-way ego/exo classifier: workdir, converted dir or .pyth",
    "teachers.object.source": "'none' | 'file' | 'online'",
    "teachers.object.weights": "torchvision ImageNet ResNet .pth",
    "teachers.object.depth": "ResNet depth", "teachers.object.width": "ResNet width",
    "teachers.object.num_frames": "frames per clip the object teacher averages",
}


class PrecomputeError(UserError, ValueError):
    """A config, teacher or output folder this run cannot use (the message names it)."""


# ----------------------------------------------------------------------------------------------
# Config checks.


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise KeyError(dotted) from None
    return node


def check_config(config, where: str = "config", check_files: bool = True) -> List[str]:
    """The online signals of ``config`` (``["ego", "object"]`` or a subset), after checks.

    ``check_files=False`` skips the existence check of the teacher checkpoint (a merge needs none).

    Raises:
      PrecomputeError: a missing key (named, with what it should hold), no online teacher, an
        empty / non-existent teacher checkpoint or weights file.
    """
    for key, what in REQUIRED_KEYS.items():
        try:
            _get(config, key)
        except KeyError:
            raise PrecomputeError(f"{where}: missing key '{key}' (expected {what})") from None
    online = [s for s in SIGNALS if config.teachers[s].source == "online"]
    if not online:
        raise PrecomputeError(
            f"{where}: config.teachers.ego.source={config.teachers.ego.source!r} and "
            f"config.teachers.object.source={config.teachers.object.source!r}; at least one must be "
            "'online' (e.g. --config=configs/pretrain.py:online)")
    if "ego" in online and check_files:
        path = config.teachers.ego.checkpoint
        if not path:
            raise PrecomputeError(f"{where}: config.teachers.ego.checkpoint is empty; expected a 2-way "
                                  "ego/exo classifier (training workdir, converted directory or .pyth)")
        if not os.path.exists(path):
            raise PrecomputeError(f"{where}: config.teachers.ego.checkpoint={path}: no such file or "
                                  "directory (expected a training workdir, converted directory or .pyth)")
    return online


def _check_object_weights(config, where: str, allow_random: bool) -> None:
    weights = config.teachers.object.weights
    if weights and not os.path.isfile(weights):
        raise PrecomputeError(f"{where}: config.teachers.object.weights={weights}: no such file "
                              "(expected torchvision's ImageNet ResNet .pth, e.g. resnet50-0676ba61.pth)")
    if not weights and not allow_random:
        raise PrecomputeError(
            f"{where}: config.teachers.object.weights is empty: the object teacher would be randomly "
            "initialised and its file meaningless; set it to torchvision's ImageNet ResNet .pth "
            "(or pass --allow_random_object_teacher for a smoke test)")


# ----------------------------------------------------------------------------------------------
# The teacher view of one video.


@dataclasses.dataclass(frozen=True)
class TeacherView:
    """How a video becomes the teachers' input (see the module docstring).

    Attributes:
      opts: the student's sample options with the centre clip's test-clip count.
      scale: short side the frames are resized to; crop: centre crop size.
    """

    opts: Any
    scale: int
    crop: int

    @classmethod
    def from_config(cls, data_cfg) -> "TeacherView":
        from egoexo_jax.data import samples  # pylint: disable=import-outside-toplevel

        opts = samples.SampleOptions.from_config(data_cfg)
        # Test clip 1 of 2 starts at (N - span) / 2 for videos; frame lists spread K clips with
        # step free / (K - 1), so their middle clip is 1 of 3.
        opts = dataclasses.replace(opts, num_ensemble_views=2 if data_cfg.dataset == "kinetics" else 3)
        return cls(opts, int(data_cfg.train_jitter_scales[0]), int(data_cfg.train_crop_size))

    def pathways(self, item) -> Dict[str, np.ndarray]:
        """``{"pathway0": [T_0, S, S, 3] float32, ...}`` of ``item`` (``S`` = crop).

        Raises:
          egoexo_jax.data.video.DecodeError: missing, empty or corrupt media.
        """
        from egoexo_jax.data import samples, transforms  # pylint: disable=import-outside-toplevel

        clip = samples.decode_clip(item, samples.View("test", 1, 1), None, self.opts)
        _, h, w, _ = clip.frames.shape
        params = transforms.test_spatial(h, w, spatial_idx=1, scale=self.scale, crop_size=self.crop)
        return samples.pathways(clip.frames, params, self.opts)


def _load(view: TeacherView, item) -> Tuple[Optional[Dict[str, np.ndarray]], str]:
    """(pathways, "") or (None, reason) for an unreadable video."""
    from egoexo_jax.data.video import DecodeError  # pylint: disable=import-outside-toplevel

    try:
        return view.pathways(item), ""
    except (DecodeError, OSError, EOFError, ValueError) as e:
        return None, " ".join(str(e).split()) or type(e).__name__


def _bounded_map(executor, fn: Callable, items: Sequence, lookahead: int) -> Iterator:
    """``map(fn, items)`` in order on ``executor``, at most ``lookahead`` results in flight."""
    futures: List[concurrent.futures.Future] = []
    it = iter(items)
    for item in it:
        futures.append(executor.submit(fn, item))
        if len(futures) >= lookahead:
            break
    while futures:
        result = futures.pop(0).result()
        for item in it:
            futures.append(executor.submit(fn, item))
            break
        yield result


# ----------------------------------------------------------------------------------------------
# Parts.


def part_path(output: str, chunk: int) -> str:
    return os.path.join(output, PARTS, f"part-{chunk:06d}.npz")


def write_part(path: str, *, chunk: int, start: int, stop: int, keys: Sequence[str],
               scores: Dict[str, np.ndarray], bad: Sequence[Tuple[str, str]]) -> None:
    """One chunk's results, atomically: ``keys [k] str``, ``{signal} [k, C] float32`` per online
    signal, ``bad_paths`` / ``bad_reasons [m] str`` and the chunk's ``[chunk, start, stop]``."""
    arrays = {"chunk": np.asarray([chunk, start, stop], np.int64),
              "keys": np.asarray(list(keys), dtype=str),
              "bad_paths": np.asarray([p for p, _ in bad], dtype=str),
              "bad_reasons": np.asarray([r for _, r in bad], dtype=str)}
    for signal, values in scores.items():
        arrays[signal] = np.asarray(values, np.float32)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_part(path: str, chunk: int, signals: Sequence[str]) -> Dict[str, np.ndarray]:
    """The arrays of ``write_part``; ``PrecomputeError`` naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise PrecomputeError(f"{path}: unreadable part file ({e}); delete it and run again") from None
    missing = [k for k in ("chunk", "keys", "bad_paths", "bad_reasons", *signals) if k not in data]
    if missing or int(data["chunk"][0]) != chunk:
        raise PrecomputeError(f"{path}: not the part of chunk {chunk} with {list(signals)} "
                              f"(missing {missing}); delete it and run again")
    for s in signals:
        if data[s].shape[0] != len(data["keys"]):
            raise PrecomputeError(f"{path}: {len(data['keys'])} keys but {data[s].shape[0]} {s} rows")
    return data


def _manifest(config, split: str, source, online: Sequence[str], chunk_size: int, batch_size: int,
              view: TeacherView) -> dict:
    keys = [source.item(i).key for i in range(len(source))]
    tcfg = config.teachers
    teachers = {}
    if "ego" in online:
        teachers["ego"] = {"checkpoint": os.path.abspath(tcfg.ego.checkpoint),
                           **{k: tcfg.ego.get(k) for k in ("input_mean", "input_std", "input_bgr")}}
    if "object" in online:
        teachers["object"] = {"weights": os.path.abspath(tcfg.object.weights) if tcfg.object.weights else "",
                              "depth": int(tcfg.object.depth), "width": int(tcfg.object.width),
                              "num_frames": int(tcfg.object.num_frames),
                              "classes": int(config.model.object_classes) or 1000}
    clip = dataclasses.asdict(view.opts)
    clip.update(scale=view.scale, crop=view.crop)
    return json.loads(json.dumps({
        "format": FORMAT_VERSION, "split": split, "num_items": len(keys),
        "keys_sha256": hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest(),
        "chunk_size": int(chunk_size), "batch_size": int(batch_size), "signals": list(online),
        "dtype": str(config.model.dtype), "seed": int(config.seed), "teachers": teachers, "clip": clip,
    }))


def _check_or_write_manifest(output: str, manifest: dict) -> None:
    path = os.path.join(output, PARTS, MANIFEST)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            try:
                old = json.load(f)
            except ValueError:
                old = None
        if old != manifest:
            diff = ([k for k in sorted(set(manifest) | set(old)) if old.get(k) != manifest.get(k)]
                    if isinstance(old, dict) else ["(unreadable)"])
            raise PrecomputeError(
                f"{path}: the parts in {os.path.dirname(path)} were made with other settings "
                f"(differing: {', '.join(diff)}); use another --output or delete that folder")
        return
    atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")))


# ----------------------------------------------------------------------------------------------
# Running.


def chunks_of_process(num_chunks: int, process_index: int, process_count: int) -> List[int]:
    """Chunks ``c`` with ``c % process_count == process_index``."""
    return list(range(process_index, num_chunks, process_count))


def _chunk_range(chunk: int, chunk_size: int, num_items: int) -> Tuple[int, int]:
    return chunk * chunk_size, min(num_items, (chunk + 1) * chunk_size)


@functools.lru_cache(maxsize=None)
def _jitted_targets():
    import jax  # pylint: disable=import-outside-toplevel
    from egoexo_jax.models import teachers  # pylint: disable=import-outside-toplevel

    return jax.jit(teachers.online_teacher_targets, static_argnums=(0,),
                   static_argnames=("input_mean", "input_std", "input_bgr"))


def teacher_function(teacher_fn: functools.partial) -> Callable:
    """``(variables, pathways) -> {"ego_target", "object_target"}``, jitted, for the
    ``functools.partial`` of :func:`egoexo_jax.teacher_loading.from_config`.

    The teacher spec is a static argument of one module-level jitted function, so runs with the
    same teachers in one process (a restart, several splits) compile once.
    """
    (spec,) = teacher_fn.args
    norm = dict(teacher_fn.keywords)
    return lambda variables, pathways: _jitted_targets()(spec, variables, pathways, **norm)


def _run_chunk(chunk: int, start: int, stop: int, source, view: TeacherView, teacher_fn, variables,
               signals: Sequence[str], batch_size: int, executor, bar) -> Tuple[List[str], Dict, List]:
    keys: List[str] = []
    bad: List[Tuple[str, str]] = []
    scores: Dict[str, List[np.ndarray]] = {s: [] for s in signals}
    items = [source.item(i) for i in range(start, stop)]
    batch: List[Dict[str, np.ndarray]] = []

    def flush():
        if not batch:
            return
        names = sorted(batch[0])
        pathways = []
        for name in names:
            x = np.stack([b[name] for b in batch])
            pad = np.zeros((batch_size - len(batch),) + x.shape[1:], x.dtype)  # one compiled shape
            pathways.append(np.concatenate([x, pad]))
        out = teacher_fn(variables, pathways)
        for s in signals:
            scores[s].append(np.asarray(out[f"{s}_target"], np.float32)[:len(batch)])
        batch.clear()

    lookahead = max(2 * batch_size, 4)
    for item, (sample, reason) in zip(items, _bounded_map(executor, lambda it: _load(view, it), items, lookahead)):
        if sample is None:
            bad.append((item.describe(), reason))
            bar.write(f"precompute_teachers: skipped {item.describe()}: {reason}", file=sys.stderr)
        else:
            keys.append(item.key)
            batch.append(sample)
            if len(batch) == batch_size:
                flush()
        bar.update(1)
    flush()
    stacked = {s: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for s, v in scores.items()}
    return keys, stacked, bad


def merge(output: str, *, num_chunks: int, signals: Sequence[str]) -> Dict[str, str]:
    """Merges ``parts/part-*.npz`` (chunk order) into the final pickles and ``bad_inputs.txt``.

    Returns ``{signal: pickle path}``. Raises ``PrecomputeError`` naming missing chunks.
    """
    from egoexo_jax.data import teacher_scores  # pylint: disable=import-outside-toplevel

    missing = [c for c in range(num_chunks) if not os.path.exists(part_path(output, c))]
    if missing:
        shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise PrecomputeError(f"{os.path.join(output, PARTS)}: {len(missing)} of {num_chunks} chunks missing "
                              f"({shown}); run the remaining hosts (or copy their parts/ here) first")
    scores: Dict[str, Dict[str, np.ndarray]] = {s: {} for s in signals}
    bad_lines = []
    for c in range(num_chunks):
        data = read_part(part_path(output, c), c, signals)
        for i, key in enumerate(data["keys"].tolist()):
            for s in signals:
                scores[s][key] = data[s][i]
        bad_lines += [f"{p}\t{r}\n" for p, r in zip(data["bad_paths"].tolist(), data["bad_reasons"].tolist())]
    written = {}
    for s in signals:
        written[s] = os.path.join(output, OUTPUT_FILES[s])
        teacher_scores.write_score_pickle(written[s], scores[s])
    atomic_write(os.path.join(output, BAD_INPUTS), lambda f: f.write("".join(bad_lines).encode("utf-8")))
    return written


@dataclasses.dataclass
class Result:
    """What :func:`precompute` did.

    Attributes:
      files: ``{signal: pickle path}`` when merged here, else ``{}``.
      chunks_done: chunks this process computed now (not counting those found on disk).
      num_chunks: chunks of the whole list; complete: every part exists and the pickles are merged.
    """

    files: Dict[str, str]
    chunks_done: int
    num_chunks: int
    complete: bool


def precompute(config, output: str, *, split: str = "train", chunk_size: int = 512, batch_size: int = 16,
               merge_only: bool = False, allow_random_object_teacher: bool = False,
               max_chunks: Optional[int] = None, process_index: Optional[int] = None,
               process_count: Optional[int] = None, where: str = "config") -> Result:
    """Runs the online teachers of ``config`` over ``split`` and writes the offline files to ``output``.

    Args:
      config: an experiment config (``configs/pretrain.py:online``-style: see ``REQUIRED_KEYS``).
      output: output folder (created).
      split: 'train' | 'val' | 'test' (which list of ``config.data``).
      chunk_size: list entries per part file; batch_size: clips per teacher call.
      merge_only: only merge existing parts (the ``--merge`` step).
      allow_random_object_teacher: accept an empty ``teachers.object.weights`` (tests, smoke runs).
      max_chunks: stop after computing this many chunks (no merge; the run resumes later).
      process_index, process_count: this process and how many share the work (default: jax's).
      where: name of the config in error messages.
    Raises:
      PrecomputeError: see :func:`check_config`, a manifest of other settings, missing parts.
    """
    import jax  # pylint: disable=import-outside-toplevel
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from egoexo_jax import teacher_loading  # pylint: disable=import-outside-toplevel
    from egoexo_jax.data import sources  # pylint: disable=import-outside-toplevel
    from egoexo_jax.models import teachers  # pylint: disable=import-outside-toplevel

    if chunk_size < 1 or batch_size < 1:
        raise PrecomputeError(f"--chunk_size={chunk_size} and --batch_size={batch_size} must be positive")
    if split not in ("train", "val", "test"):
        raise PrecomputeError(f"--split={split!r}; expected 'train', 'val' or 'test'")
    online = check_config(config, where, check_files=not merge_only)
    if "object" in online and not merge_only:
        _check_object_weights(config, where, allow_random_object_teacher)
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    output = os.path.abspath(output)
    try:
        source = sources.build_source(config.data, split)
    except (OSError, ValueError) as e:
        raise PrecomputeError(f"{where}: cannot read the {split} list of config.data: {e}") from None
    view = TeacherView.from_config(config.data)
    num_items = len(source)
    num_chunks = math.ceil(num_items / chunk_size)
    manifest = _manifest(config, split, source, online, chunk_size, batch_size, view)
    _check_or_write_manifest(output, manifest)
    if merge_only:
        return Result(merge(output, num_chunks=num_chunks, signals=online), 0, num_chunks, True)

    mine = chunks_of_process(num_chunks, process_index, process_count)
    todo = [c for c in mine if not os.path.exists(part_path(output, c))]
    sizes = {c: _chunk_range(c, chunk_size, num_items)[1] - _chunk_range(c, chunk_size, num_items)[0] for c in mine}
    done_items = sum(sizes[c] for c in mine if c not in todo)
    computed = 0
    if todo and (max_chunks is None or max_chunks > 0):
        try:
            teacher_fn, variables = teacher_loading.from_config(config, config.model)
        except teachers.TeacherError as e:
            raise PrecomputeError(f"{where}: {e}") from None
        variables = jax.device_put(variables)
        fn = teacher_function(teacher_fn)
        bar = tqdm(total=sum(sizes.values()), initial=done_items, unit="video", file=sys.stderr,
                   desc=f"teachers {'+'.join(online)}" + (f" (process {process_index}/{process_count})"
                                                          if process_count > 1 else ""))
        threads = max(1, int(config.data.num_threads))
        with concurrent.futures.ThreadPoolExecutor(threads) as executor:
            for c in todo:
                if max_chunks is not None and computed >= max_chunks:
                    break
                start, stop = _chunk_range(c, chunk_size, num_items)
                keys, scores, bad = _run_chunk(c, start, stop, source, view, fn, variables, online,
                                               batch_size, executor, bar)
                write_part(part_path(output, c), chunk=c, start=start, stop=stop, keys=keys,
                           scores=scores, bad=bad)
                computed += 1
        bar.close()
    if max_chunks is not None and computed < len(todo):
        return Result({}, computed, num_chunks, False)
    if process_count > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        multihost_utils.sync_global_devices("egoexo_precompute_teachers")
    if process_index != 0:
        return Result({}, computed, num_chunks, False)
    return Result(merge(output, num_chunks=num_chunks, signals=online), computed, num_chunks, True)


# ----------------------------------------------------------------------------------------------
# Command line.


def _flag_values(argv: Sequence[str]):
    from absl import flags  # pylint: disable=import-outside-toplevel
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    fv = flags.FlagValues()  # private: no clash with egoexo_jax.main's --config in one process
    config_flags.DEFINE_config_file("config", None, "Recipe file, optionally file.py:variant "
                                    "(e.g. configs/pretrain.py:online).", flag_values=fv, lock_config=True,
                                    sys_argv=["precompute_teachers"] + list(argv))
    flags.DEFINE_string("output", None, "Output folder.", flag_values=fv)
    flags.DEFINE_enum("split", "train", ["train", "val", "test"], "Which list of config.data.", flag_values=fv)
    flags.DEFINE_integer("chunk_size", 512, "List entries per part file (the unit of resumption).",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Clips per teacher call.", flag_values=fv)
    flags.DEFINE_bool("merge", False, "Only merge OUTPUT/parts into the pickles.", flag_values=fv)
    flags.DEFINE_bool("allow_random_object_teacher", False,
                      "Accept an empty config.teachers.object.weights (random init: smoke tests only).",
                      flag_values=fv)
    flags.DEFINE_bool("debug", False, "Print the traceback of user errors too.", flag_values=fv)
    return fv


def main(argv: Optional[Sequence[str]] = None) -> int:
    from absl import flags  # pylint: disable=import-outside-toplevel

    from egoexo_jax import main as main_lib  # pylint: disable=import-outside-toplevel

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        main_lib.check_config_file(argv)  # a missing recipe file: one line
        main_lib.check_overrides(argv)  # a mistyped --config.key names the closest existing key
    except SystemExit as e:  # the error line is printed already
        return int(e.code) if isinstance(e.code, int) else cli.EXIT_USER_ERROR
    fv = _flag_values(argv)
    try:
        fv(["precompute_teachers"] + argv)
    except (flags.Error, KeyError, AttributeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if fv.config is None or not fv.output:
        print("error: --config and --output are required", file=sys.stderr)
        return 2
    from egoexo_jax import sharding  # pylint: disable=import-outside-toplevel

    sharding.maybe_initialize_distributed()
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "--config")
    try:
        result = precompute(fv.config, fv.output, split=fv.split, chunk_size=fv.chunk_size,
                            batch_size=fv.batch_size, merge_only=fv.merge,
                            allow_random_object_teacher=fv.allow_random_object_teacher, where=spec)
    except Exception as e:  # pylint: disable=broad-except
        if not cli.handles(e):
            raise  # a bug: keep the traceback
        return cli.report(e, debug=fv.debug, where=fv.output)
    if result.complete:
        bad = os.path.join(os.path.abspath(fv.output), BAD_INPUTS)
        with open(bad, encoding="utf-8") as f:
            num_bad = sum(1 for line in f if line.strip())
        for signal, path in result.files.items():
            print(f"{signal} teacher: {path}")
        print(f"{num_bad} unreadable videos listed in {bad}")
    else:
        print(f"computed {result.chunks_done} chunks; process 0 merges")
    return 0


if __name__ == "__main__":
    from egoexo_jax import hostenv

    hostenv.prepare_process()
    sys.exit(main())
