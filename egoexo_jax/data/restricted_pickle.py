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

* :func:`loads` / :func:`load` — restricted ``pickle.loads`` / ``pickle.load``.
* :func:`load_npy` — ``numpy.load(path, allow_pickle=True)`` semantics (``.npy`` header, object
  arrays unpickled, and the raw-pickle fallback that ``numpy.load`` has) with the restricted
  unpickler; ``path`` may be a ``gs://`` URL.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
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
    """Restricted ``pickle.load``.

    ``encoding='latin1'`` lets Python-2 pickles of numpy arrays load (their byte strings are
    ``str``); Python-3 pickles are unaffected by it.
    """
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
            count = int(np.prod(shape, dtype=np.int64))
            data = np.frombuffer(fp.read(count * dtype.itemsize), dtype=dtype, count=count)
            if fortran:
                return data.reshape(shape[::-1]).transpose().copy()
            return data.reshape(shape).copy()
        if magic[:2] == b"PK":
            raise ValueError(f"{path}: .npz archives are not teacher detection files")
        return load(fp)
