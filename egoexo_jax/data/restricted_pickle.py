"""Safe loading of the pickled teacher files (score ``.pkl`` and hand-object ``.npy``).

The official auxiliary files are Python pickles: the Ego-/Object-Score files are a pickled
``dict`` and the hand-object detection files are ``.npy`` files holding an *object* array,
which ``numpy.load(allow_pickle=True)`` unpickles.  A pickle can name any importable callable
(``os.system``, ``subprocess.Popen`` ...) and have it called while loading, so loading a
downloaded file with the plain unpickler runs whatever it asks for.

This module loads the same files with an unpickler that resolves only an explicit allow-list
of globals, all of them constructors of numpy arrays, dtypes and scalars (plus
``collections.OrderedDict`` for dict containers and ``_codecs.encode``, which protocol-2 pickles
use to store byte strings, and the ``bytes`` / ``bytearray`` constructors).  Containers (``dict``,
``list``, ``tuple``), ``None``, numbers, strings and bytes need no globals at all.  Anything else raises
:class:`UnsafePickleError` *before* the requested object is called.

Public functions:

* :func:`loads` / :func:`load` — restricted ``pickle.loads`` / ``pickle.load``, after
  :func:`check_bounds` walked the opcodes (no object built) and refused memo indices beyond the
  opcodes read (``LONG_BINPUT 2**30`` makes the C unpickler allocate 16 GiB), nesting deeper than
  :data:`MAX_NESTING` and payload lengths past the end of the data (:class:`PickleLimitError`).
* :func:`load_npy` — ``numpy.load(path, allow_pickle=True)`` semantics (``.npy`` header, object
  arrays unpickled, and the raw-pickle fallback that ``numpy.load`` has) with the restricted
  unpickler; ``path`` may be a ``gs://`` URL.
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import os
import pickle
import pickletools
import struct
from typing import Any, BinaryIO, Dict, Tuple

import numpy as np

from egoexo_jax import storage

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore
    from numpy.core import numeric as _numeric  # type: ignore


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    table: Dict[Tuple[str, str], Any] = {}
    # numpy 1.x pickles name ``numpy.core.*``, numpy 2.x names ``numpy._core.*``. Both map to the
    # objects of the numpy that is installed here; we never import the module named in the file.
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        if hasattr(_numeric, "_frombuffer"):  # protocol-5 pickles of contiguous arrays
            table[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("collections", "OrderedDict")] = collections.OrderedDict
    # Protocol <= 2 pickles written by Python 3 store ``bytes`` (e.g. array buffers) as
    # ``_codecs.encode(text, 'latin1')``; encoding a string is harmless.
    table[("_codecs", "encode")] = codecs.encode
    for builtins_name in ("builtins", "__builtin__"):  # protocol 2 writes Python-2 module names
        table[(builtins_name, "bytes")] = bytes
        table[(builtins_name, "bytearray")] = bytearray
    return table


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves the allow-listed numpy globals."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name!s}: only numpy array/dtype/scalar "
                "reconstruction is allowed in teacher files"
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - never produced by our writers
        raise UnsafePickleError("persistent ids are not allowed in teacher files")


def load(fp: BinaryIO, *, encoding: str = "latin1") -> Any:
    """Restricted ``pickle.load``, after :func:`check_bounds` has walked the pickle (memo and
    nesting bounds; raises :class:`PickleLimitError`).

    ``encoding='latin1'`` lets Python-2 pickles of numpy arrays load (their byte strings are
    ``str``); Python-3 pickles are unaffected by it.
    """
    check_bounds(fp)
    return RestrictedUnpickler(fp, encoding=encoding).load()


def loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """Restricted ``pickle.loads`` (see :func:`load`)."""
    return load(io.BytesIO(data), encoding=encoding)


def load_npy(path: str | os.PathLike) -> Any:
    """Load a ``.npy`` file like ``numpy.load(path, allow_pickle=True)``, but safely.

    Returns an ``np.ndarray`` for ``.npy`` files (object arrays are unpickled with
    :class:`RestrictedUnpickler`), or the unpickled object when the file is a bare pickle
    (``numpy.load`` falls back to ``pickle.load`` for such files).  ``.npz`` archives are not
    teacher files and are rejected.
    """
    path = os.fspath(path)
    # An object (a detection file: one per video, small) is fetched in one request.
    with io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else storage.open_read(path) as fp:
        magic = fp.read(6)
        fp.seek(0)
        if magic == b"\x93NUMPY":
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:  # pragma: no cover - future formats
                raise ValueError(f"{path}: unsupported .npy format version {version}")
            if dtype.hasobject:
                array = load(fp)
                if not isinstance(array, np.ndarray):
                    raise ValueError(f"{path}: object .npy payload is {type(array).__name__}, not an array")
                return array
            count = math.prod(shape)
            here = fp.tell()
            left = fp.seek(0, io.SEEK_END) - here
            fp.seek(here)
            if count * dtype.itemsize > left:
                raise ValueError(
                    f"{path}: header declares {shape} {dtype} ({count * dtype.itemsize} bytes) but only "
                    f"{left} bytes follow it; truncated or corrupt"
                )
            data = np.frombuffer(fp.read(count * dtype.itemsize), dtype=dtype, count=count)
            if fortran:
                return data.reshape(shape[::-1]).transpose().copy()
            return data.reshape(shape).copy()
        if magic[:2] == b"PK":
            raise ValueError(f"{path}: .npz archives are not teacher detection files")
        return load(fp)


# ----------------------------------------------------------------------------------------------
# Bounds checked before unpickling.

# A memo index (PUT/BINPUT/LONG_BINPUT) may exceed the opcodes read so far by at most this much:
# the C unpickler sizes its memo table by the largest index, so `LONG_BINPUT 2**30` in a 441-byte
# file would ask for 16 GiB. Pickles written by Python number their memo entries from 0 upwards.
MEMO_SLACK = 1024
# Containers nested deeper than this (or more open MARKs) are refused: no file this project reads
# nests beyond a handful of levels, and readers of the result recurse over it.
MAX_NESTING = 1000
_SCAN_CHUNK = 1 << 20
_OPS = {op.code.encode("latin1"): op for op in pickletools.opcodes}
_CONTAINER_UPDATES = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_KEEP_DEPTH = {"DUP", "MEMOIZE", "READONLY_BUFFER"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


class PickleLimitError(pickle.UnpicklingError):
    """A pickle whose memo indices, nesting or payload lengths exceed what its size justifies."""


class _Chunks:
    """Forward reader over ``fp[start:end]`` in 1 MiB chunks that can skip payloads by seeking."""

    def __init__(self, fp: BinaryIO, start: int, end: int):
        self.fp, self.end, self.base, self.buf, self.pos = fp, end, start, b"", 0

    def offset(self) -> int:
        return self.base + self.pos

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self.fp.seek(self.base + self.pos)
            self.base += self.pos
            self.buf = self.fp.read(max(n, min(_SCAN_CHUNK, self.end - self.base)))
            self.pos = 0
        out = self.buf[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readline(self) -> bytes:
        parts, total = [], 0
        while True:
            stop = self.buf.find(b"\n", self.pos)
            if stop >= 0:
                parts.append(self.buf[self.pos : stop + 1])
                self.pos = stop + 1
                return b"".join(parts)
            parts.append(self.buf[self.pos :])
            total += len(self.buf) - self.pos
            self.base, self.buf, self.pos = self.base + len(self.buf), b"", 0
            if total > _SCAN_CHUNK:
                return b"".join(parts)  # an over-long line: the unpickler reports it
            self.fp.seek(self.base)
            self.buf = self.fp.read(min(_SCAN_CHUNK, self.end - self.base))
            if not self.buf:
                return b"".join(parts)

    def skip(self, n: int) -> None:
        if self.offset() + n > self.end:
            raise PickleLimitError(
                f"a payload of {n} bytes at byte {self.offset()} runs past the end of the data "
                f"({self.end} bytes); truncated or corrupt"
            )
        if self.pos + n <= len(self.buf):
            self.pos += n
        else:
            self.base, self.buf, self.pos = self.offset() + n, b"", 0


_LENGTH_FORMATS = {-2: "<B", -3: "<i", -4: "<I", -5: "<Q"}


def check_bounds(fp: BinaryIO, *, max_nesting: int = MAX_NESTING) -> None:
    """Walks one pickle's opcodes from ``fp``'s position (left there after) without building
    anything, refusing memo indices, nesting and payload lengths the file cannot justify."""
    start = fp.tell()
    end = fp.seek(0, io.SEEK_END)
    fp.seek(start)
    data = _Chunks(fp, start, end)
    depths: list[int] = []  # nesting depth of every stack item (0: a scalar)
    marks: list[int] = []
    count = 0
    try:
        while True:
            code = data.read(1)
            op = _OPS.get(code)
            if op is None:
                return  # end of data or an unknown opcode: the unpickler reports it
            count += 1
            arg = None
            if op.arg is not None:
                n = op.arg.n
                if n >= 0:
                    raw = data.read(n)
                    if op.name in ("BINPUT", "LONG_BINPUT") and len(raw) == n:
                        arg = int.from_bytes(raw, "little")
                elif n == -1:
                    raw = data.readline()
                    if op.name == "PUT":
                        arg = int(raw) if raw.strip().isdigit() else None
                    elif op.arg.name.endswith("_pair"):
                        data.readline()
                else:
                    fmt = _LENGTH_FORMATS[n]
                    raw = data.read(struct.calcsize(fmt))
                    if len(raw) != struct.calcsize(fmt):
                        return
                    length = struct.unpack(fmt, raw)[0]
                    if length < 0:
                        return
                    data.skip(length)
            if op.name in _MEMO_PUTS and arg is not None and arg > 2 * count + MEMO_SLACK:
                raise PickleLimitError(
                    f"memo index {arg} at byte {data.offset()} after only {count} opcodes (the unpickler "
                    f"would allocate {16 * arg} bytes for it); corrupt or hostile pickle"
                )
            if op.name == "STOP":
                return
            _simulate(op, depths, marks)
            if len(marks) > max_nesting or (depths and depths[-1] > max_nesting):
                raise PickleLimitError(
                    f"objects nested more than {max_nesting} levels deep at byte {data.offset()}; "
                    "expected plain containers a few levels deep"
                )
    finally:
        fp.seek(start)


def _simulate(op, depths: list, marks: list) -> None:
    """Applies ``op``'s stack effect to ``depths`` (container nesting of each stack item)."""
    before = [s.name for s in op.stack_before]
    after = len(op.stack_after)
    if op.name == "MARK":
        marks.append(len(depths))
        return
    if "mark" in before:
        at = before.index("mark")
        mark = marks.pop() if marks else len(depths)
        inner = depths[mark:]
        under = depths[max(mark - at, 0) : mark]
        del depths[max(mark - at, 0) :]
    else:
        k = min(len(before), len(depths))
        under, inner = depths[len(depths) - k :], []
        del depths[len(depths) - k :]
    if not after:
        return
    consumed = under + inner
    if op.name in _KEEP_DEPTH:
        depths.extend(consumed[:1] * after)
    elif op.name in _CONTAINER_UPDATES and consumed:
        depths.append(max([consumed[0]] + [d + 1 for d in consumed[1:]]))
    else:
        depths.extend([max(consumed) + 1 if consumed else 0] * after)
