"""Class names of the datasets, in label-index order.

``load_class_names("kinetics400")`` (400), ``"charades_ego"`` (157), ``"epic100_verb"`` (97) and
``"epic100_noun"`` (300) read the files bundled with the package in ``egoexo_jax/class_names/``
(their sources are in ``egoexo_jax/class_names/SOURCES.md``); any other argument is taken as the
path (or ``gs://`` URL) of a text file with one class name per line. Index ``i`` of the returned list is the
name of label ``i``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from egoexo_jax import storage
from egoexo_jax.cli import InputError, MissingFileError

DATA_DIR = Path(__file__).resolve().parent / "class_names"  # package data: installed with the code

# name -> (file in DATA_DIR, number of classes)
BUILTIN = {
    "kinetics400": ("kinetics400_classes.txt", 400),
    "charades_ego": ("charades_ego_classes.txt", 157),
    "epic100_verb": ("epic100_verb_classes.txt", 97),
    "epic100_noun": ("epic100_noun_classes.txt", 300),
}

_CHARADES_LINE = re.compile(r"c(\d{3}) (\S.*)")


def _read_lines(path: str) -> list[str]:
    """Non-blank lines of ``path`` (surrounding whitespace removed); blank lines and duplicates are errors."""
    try:
        text = storage.read_text(path, encoding="utf-8-sig")  # a BOM is not part of the first name
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err})") from None
    lines = text.splitlines()
    if not lines:
        raise InputError(f"{path}: empty class-name file")
    seen: dict[str, int] = {}
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise InputError(f"{path}:{number}: blank line (one class name per line, no blank lines)")
        if name in seen:
            raise InputError(f"{path}:{number}: duplicate class name {name!r} (first on line {seen[name]})")
        seen[name] = number
        names.append(name)
    return names


def _strip_charades_ids(path: str, lines: list[str]) -> list[str]:
    descriptions = []
    for index, line in enumerate(lines):
        match = _CHARADES_LINE.fullmatch(line)
        if match is None or int(match.group(1)) != index:
            raise InputError(f"{path}:{index + 1}: expected 'c{index:03d} <description>', got {line!r}")
        descriptions.append(match.group(2))
    return descriptions


def load_class_names(name_or_path: str | os.PathLike, *, with_ids: bool = False) -> list[str]:
    """Class names in label order, for a bundled dataset name or a one-name-per-line text file.

    Args:
      name_or_path: ``kinetics400``, ``charades_ego``, ``epic100_verb``, ``epic100_noun``, or the path
        (or ``gs://`` URL) of a UTF-8 text file with one class name per line (no blank lines, no duplicates).
      with_ids: Charades-Ego only: keep the ``cNNN `` class id in front of each description
        (``"c000 Holding some clothes"``); by default only the description is returned.
    """
    key = os.fspath(name_or_path)
    if with_ids and key != "charades_ego":
        raise ValueError(f"with_ids=True applies only to 'charades_ego', not {key!r}")
    if key in BUILTIN:
        filename, expected = BUILTIN[key]
        path = os.fspath(DATA_DIR / filename)
        if not storage.isfile(path):
            raise MissingFileError(
                f"class-name file for {key!r} not found: {path} (it ships with the package, in "
                f"egoexo_jax/class_names/; expected an installation that includes it)"
            )
        names = _read_lines(path)
        if len(names) != expected:
            raise InputError(f"{path}: {len(names)} class names, expected {expected} for {key!r}")
        if key == "charades_ego":
            descriptions = _strip_charades_ids(path, names)
            return names if with_ids else descriptions
        return names
    path = storage.check(key)
    if not storage.isfile(path):
        raise MissingFileError(
            f"{key!r} is neither a known dataset ({', '.join(BUILTIN)}) nor an existing file "
            f"({storage.absolute(path)} not found)"
        )
    return _read_lines(path)
