"""The output folder of ``precompute_teachers``: one part file per chunk of the list, the manifest
of the settings they were made with, and the merge of the parts into the official pickles.

``OUTPUT/parts/part-NNNNNN.npz`` holds chunk ``N``'s keys, scores per online signal and unreadable
videos, written atomically (a temporary file, then a rename; on ``gs://`` one object upload), so a
part that exists is complete. ``OUTPUT`` may be a local folder or a ``gs://`` prefix.
``OUTPUT/parts/manifest.json`` records the run's settings; parts made with other settings are
refused, never mixed. :func:`merge` joins the parts in list order, so a resumed run writes the
same bytes as an uninterrupted one.

A part that cannot be read back (truncated by a copy, damaged on disk) is set aside as
``part-NNNNNN.npz.damaged`` with one warning line and its chunk is computed again
(:func:`set_aside_damaged`): a rerun checks this process's parts cheaply (the zip directory), the
merge reads them whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import zipfile
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
from absl import logging

from egoexo_jax import storage
from egoexo_jax.cli import UserError
from egoexo_jax.data import teacher_scores

EGO_FILE = "k400_ego_predicts.pkl"
OBJECT_FILE = "k400_IN_predicts.pkl"
BAD_INPUTS = "bad_inputs.txt"
PARTS = "parts"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SIGNALS = ("ego", "object")
OUTPUT_FILES = {"ego": EGO_FILE, "object": OBJECT_FILE}
DAMAGED_SUFFIX = ".damaged"
_PART_NAME = re.compile(r"part-(\d{6})\.npz")
_PART_KEYS = ("chunk", "keys", "bad_paths", "bad_reasons")


class PrecomputeError(UserError, ValueError):
    """A config, teacher or output folder this run cannot use (the message names it)."""


class DamagedPartError(PrecomputeError):
    """A part file that exists but cannot be read back as its chunk's results."""


def part_path(output: str, chunk: int) -> str:
    """``OUTPUT/parts/part-NNNNNN.npz`` of ``chunk``."""
    return storage.join(output, PARTS, f"part-{chunk:06d}.npz")


def finished_chunks(output: str) -> Set[int]:
    """Chunks whose part file exists in ``OUTPUT/parts`` (one listing, not one request per chunk)."""
    folder = storage.join(output, PARTS)
    if not storage.isdir(folder):
        return set()
    return {int(m.group(1)) for m in map(_PART_NAME.fullmatch, storage.listdir(folder)) if m}


def write_part(
    path: str,
    *,
    chunk: int,
    start: int,
    stop: int,
    keys: Sequence[str],
    scores: Dict[str, np.ndarray],
    bad: Sequence[Tuple[str, str]],
) -> None:
    """One chunk's results, atomically: ``keys [k] str``, ``{signal} [k, C] float32`` per online
    signal, ``bad_paths`` / ``bad_reasons [m] str`` and the chunk's ``[chunk, start, stop]``."""
    arrays = {
        "chunk": np.asarray([chunk, start, stop], np.int64),
        "keys": np.asarray(list(keys), dtype=str),
        "bad_paths": np.asarray([p for p, _ in bad], dtype=str),
        "bad_reasons": np.asarray([r for _, r in bad], dtype=str),
    }
    for signal, values in scores.items():
        arrays[signal] = np.asarray(values, np.float32)
    storage.atomic_write(path, lambda f: np.savez(f, **arrays))


def read_part(path: str, chunk: int, signals: Sequence[str]) -> Dict[str, np.ndarray]:
    """The arrays of ``write_part``; :class:`DamagedPartError` naming the file when it is not one."""
    raw = storage.read_bytes(path)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DamagedPartError(f"{path}: unreadable part file ({type(e).__name__}: {e})") from None
    missing = [k for k in (*_PART_KEYS, *signals) if k not in data]
    if missing or data["chunk"].shape != (3,) or int(data["chunk"][0]) != chunk:
        raise DamagedPartError(f"{path}: not the part of chunk {chunk} with {list(signals)} (missing {missing})")
    for s in signals:
        if data[s].shape[0] != len(data["keys"]):
            raise DamagedPartError(f"{path}: {len(data['keys'])} keys but {data[s].shape[0]} {s} rows")
    return data


def _directory_problem(path: str, signals: Sequence[str]) -> str | None:
    """Why the part's zip directory is unreadable or lacks an array (cheap: only the end of the
    file is read); ``None`` when it looks complete."""
    try:
        with storage.open_read(path) as f, zipfile.ZipFile(f) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"unreadable part file ({type(e).__name__}: {e})"
    missing = [k for k in (*_PART_KEYS, *signals) if f"{k}.npy" not in names]
    return f"arrays {missing} missing" if missing else None


def _set_aside(path: str, chunk: int, problem: str) -> None:
    """Renames the part to ``part-NNNNNN.npz.damaged`` (copy and delete on ``gs://``), one warning line."""
    aside = path + DAMAGED_SUFFIX
    storage.write_bytes(aside, storage.read_bytes(path))
    storage.remove(path)
    logging.warning("%s: %s; set aside as %s, chunk %d is computed again", path, problem, aside, chunk)


def set_aside_damaged(output: str, chunks: Sequence[int], signals: Sequence[str]) -> List[int]:
    """Sets aside each part of ``chunks`` whose zip directory is unreadable or incomplete (only the
    end of each file is read), so its chunk is computed again; returns those chunks."""
    damaged = []
    for chunk in chunks:
        path = part_path(output, chunk)
        problem = _directory_problem(path, signals)
        if problem is not None:
            _set_aside(path, chunk, problem)
            damaged.append(chunk)
    return damaged


def manifest(config, split: str, source, online: Sequence[str], chunk_size: int, batch_size: int, view) -> dict:
    """The settings a part depends on: the list (its keys' hash), chunking, teachers, the clip
    (``view``: a :class:`egoexo_jax.precompute_run.TeacherView`), dtype and seed."""
    keys = [source.item(i).key for i in range(len(source))]
    tcfg = config.teachers
    teachers = {}
    if "ego" in online:
        teachers["ego"] = {
            "checkpoint": storage.absolute(tcfg.ego.checkpoint),
            **{k: tcfg.ego.get(k) for k in ("input_mean", "input_std", "input_bgr")},
        }
    if "object" in online:
        teachers["object"] = {
            "weights": storage.absolute(tcfg.object.weights) if tcfg.object.weights else "",
            "depth": int(tcfg.object.depth),
            "width": int(tcfg.object.width),
            "num_frames": int(tcfg.object.num_frames),
            "classes": int(config.model.object_classes) or 1000,
        }
    clip = dataclasses.asdict(view.opts)
    clip.update(scale=view.scale, crop=view.crop)
    return json.loads(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "split": split,
                "num_items": len(keys),
                "keys_sha256": hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest(),
                "chunk_size": int(chunk_size),
                "batch_size": int(batch_size),
                "signals": list(online),
                "dtype": str(config.model.dtype),
                "seed": int(config.seed),
                "teachers": teachers,
                "clip": clip,
            }
        )
    )


def check_or_write_manifest(output: str, settings: dict) -> None:
    """Writes ``settings`` into a new parts folder; raises :class:`PrecomputeError` naming the
    differing settings when the folder was started with others."""
    path = storage.join(output, PARTS, MANIFEST)
    if storage.exists(path):
        try:
            old = json.loads(storage.read_text(path))
        except ValueError:
            old = None
        if old != settings:
            diff = (
                [k for k in sorted(set(settings) | set(old)) if old.get(k) != settings.get(k)]
                if isinstance(old, dict)
                else ["(unreadable)"]
            )
            raise PrecomputeError(
                f"{path}: the parts in {storage.dirname(path)} were made with other settings "
                f"(differing: {', '.join(diff)}); use another --output or delete that folder"
            )
        return
    storage.write_text(path, json.dumps(settings, indent=2, sort_keys=True))


def merge(output: str, *, num_chunks: int, signals: Sequence[str]) -> Dict[str, str]:
    """Merges ``parts/part-*.npz`` (chunk order) into the final pickles and ``bad_inputs.txt``.

    Returns ``{signal: pickle path}``. Raises ``PrecomputeError`` naming missing chunks, or the
    damaged ones, which it sets aside first (:func:`set_aside_damaged`) so a rerun computes them.
    """
    finished = finished_chunks(output)
    missing = [c for c in range(num_chunks) if c not in finished]
    if missing:
        shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise PrecomputeError(
            f"{storage.join(output, PARTS)}: {len(missing)} of {num_chunks} chunks missing "
            f"({shown}); run the remaining hosts (or copy their parts/ here) first"
        )
    scores: Dict[str, Dict[str, np.ndarray]] = {s: {} for s in signals}
    bad_lines = []
    damaged = []
    for c in range(num_chunks):
        path = part_path(output, c)
        try:
            data = read_part(path, c, signals)
        except DamagedPartError as e:
            _set_aside(path, c, str(e)[len(path) + 2 :])
            damaged.append(c)
            continue
        for i, key in enumerate(data["keys"].tolist()):
            for s in signals:
                scores[s][key] = data[s][i]
        bad_lines += [f"{p}\t{r}\n" for p, r in zip(data["bad_paths"].tolist(), data["bad_reasons"].tolist())]
    if damaged:
        shown = ", ".join(str(c) for c in damaged[:10]) + (" ..." if len(damaged) > 10 else "")
        raise PrecomputeError(
            f"{storage.join(output, PARTS)}: {len(damaged)} of {num_chunks} part files were unreadable "
            f"(chunks {shown}) and are set aside as *{DAMAGED_SUFFIX}; run again to compute them"
        )
    written = {}
    for s in signals:
        written[s] = storage.join(output, OUTPUT_FILES[s])
        teacher_scores.write_score_pickle(written[s], scores[s])
    storage.write_text(storage.join(output, BAD_INPUTS), "".join(bad_lines))
    return written
