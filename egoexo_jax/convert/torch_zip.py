"""Read PyTorch ``torch.save`` checkpoints without torch.

A ``.pyth`` file written by PySlowFast is a pickle of plain containers whose tensors
point at raw storages. Two on-disk layouts exist:

- the zip layout (torch >= 1.6): ``<root>/data.pkl`` plus one file per storage under
  ``<root>/data/<key>``;
- the legacy layout: a stream of pickles (magic number, protocol, system info, the
  object, the storage keys) followed by the raw storages.

The unpickler here resolves only the handful of globals a checkpoint needs (tensor
rebuild, storage types, ``OrderedDict``) and refuses every other global, so a file that
asks for, say, ``os.system`` fails before anything runs. Tensors come back as numpy
arrays (contiguous copies with the checkpoint's shape and dtype), each built only after its
offset, size and stride were checked against its storage (:func:`check_geometry`).

The file may be a local path or a ``gs://`` URL: it is read through
:func:`egoexo_jax.storage.open_read` (seekable, ranged reads), never loaded whole.
"""

from __future__ import annotations

import collections
import io
import math
import operator
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Tuple

import numpy as np

from egoexo_jax import storage
from egoexo_jax.cli import UserError
from egoexo_jax.data import restricted_pickle

__all__ = ["CheckpointReadError", "check_geometry", "load_torch_file"]


class CheckpointReadError(UserError, ValueError):
    """The file is not a readable PyTorch checkpoint (or asks for something unsafe)."""


# torch storage class name -> numpy dtype.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage's raw bytes (filled after the pickle for the legacy layout) and its name."""

    def __init__(self, dtype, key: str, data: bytes | None = None):
        self.dtype = dtype
        self.key = key
        self.data = data
        self._array = None

    def array(self) -> np.ndarray:
        """The storage as a flat little-endian array (bfloat16 widened to float32), built once."""
        if self._array is None:
            if self.data is None:
                raise CheckpointReadError(f"storage {self.key} is referenced but never written in the file")
            if self.dtype == "bfloat16":
                # bfloat16 is the top half of a float32.
                raw = np.frombuffer(self.data, dtype="<u2").astype(np.uint32) << 16
                self._array = raw.view(np.float32)
            else:
                self._array = np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))
        return self._array


def _itemsize(dtype) -> int:
    """Bytes per element of a storage in the file."""
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


# ``data.pkl`` of a real checkpoint is kilobytes to a few MiB (names and tensor metadata only).
MAX_PICKLE_BYTES = 64 * 2**20
# All tensors together may take this much more than the storages in the file (views that overlap,
# e.g. ``expand``): stride-0 or overlapping views cannot multiply memory beyond the file's data.
TENSOR_SLACK_BYTES = 16 * 2**20


class _Budget:
    """Bytes that the tensors built from one file may still take (storage bytes + slack)."""

    def __init__(self, storage_bytes: int):
        self.limit = int(storage_bytes) + TENSOR_SLACK_BYTES
        self.left = self.limit

    def take(self, nbytes: int, where: str) -> None:
        if nbytes > self.left:
            raise CheckpointReadError(
                f"{where}: {nbytes} more bytes would make the tensors take more than the file's "
                f"storages plus {TENSOR_SLACK_BYTES} bytes ({self.limit} bytes in all); expected "
                "tensors that are views of the stored data, not expansions of it"
            )
        self.left -= nbytes


class _PendingTensor:
    """A tensor as the pickle describes it; built by :func:`_materialise` once every storage's
    bytes are known and the tensor's name in the saved object is (so errors can name it)."""

    def __init__(self, storage: _Storage, offset, size, stride):
        self.args = (storage, offset, size, stride)


def _materialise(obj: Any, name: str, max_bytes: int, budget: _Budget, built: dict | None = None) -> Any:
    """Replaces every :class:`_PendingTensor` in plain containers by its array; ``name`` is the
    container path so far (``model_state/s1.conv.weight``). Every array built is charged to
    ``budget``; one pickled tensor referenced twice is built (and charged) once."""
    built = {} if built is None else built
    if isinstance(obj, _PendingTensor):
        if id(obj) not in built:
            built[id(obj)] = (obj, _tensor(*obj.args, name=name or "<root>", max_bytes=max_bytes, budget=budget))
        return built[id(obj)][1]
    join = (lambda k: f"{name}/{k}") if name else str
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _materialise(obj[k], join(k), max_bytes, budget, built)
        return obj
    if isinstance(obj, list):
        return [_materialise(x, join(i), max_bytes, budget, built) for i, x in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_materialise(x, join(i), max_bytes, budget, built) for i, x in enumerate(obj))
    return obj


def _rebuild_tensor(storage: _Storage, offset, size, stride, *unused):
    return _PendingTensor(storage, offset, size, stride)


def _ints(value, what: str, where: str) -> tuple:
    try:
        return tuple(operator.index(v) for v in value)
    except TypeError:
        raise CheckpointReadError(f"{where}: {what} {value!r} is not a tuple of integers") from None


def check_geometry(
    where: str, storage_numel: int, itemsize: int, offset, size, stride, max_bytes: int
) -> Tuple[int, Tuple[int, ...], Tuple[int, ...]]:
    """Validates a tensor view ``(offset, size, stride)`` of a storage of ``storage_numel`` elements.

    Rules (those of ``torch.Tensor.set_``, plus a size bound): offset, sizes and strides are
    non-negative integers, at most 64 dimensions; a tensor with elements has its last element
    ``offset + sum((size - 1) * stride)`` inside the storage; its bytes (``numel * itemsize``) are
    at most ``max_bytes`` (the checkpoint file's size), so a stride-0 view cannot expand a small
    storage into an allocation larger than the file.

    Returns the validated ``(offset, size, stride)`` as Python ints; raises
    :class:`CheckpointReadError` starting with ``where`` (which names the tensor) otherwise.
    """
    try:
        offset = operator.index(offset)
    except TypeError:
        raise CheckpointReadError(f"{where}: storage offset {offset!r} is not an integer") from None
    size, stride = _ints(size, "size", where), _ints(stride, "stride", where)
    if len(size) != len(stride):
        raise CheckpointReadError(f"{where}: size {size} and stride {stride} have different lengths")
    if len(size) > 64:
        raise CheckpointReadError(f"{where}: {len(size)} dimensions (at most 64 are supported)")
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise CheckpointReadError(
            f"{where}: negative storage offset, size or stride (offset {offset}, size {size}, "
            f"stride {stride}); a PyTorch tensor has none"
        )
    numel = math.prod(size)
    if numel == 0:
        return offset, size, stride  # no element is read: torch accepts any offset here
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage_numel:
        raise CheckpointReadError(
            f"{where}: offset {offset}, size {size}, stride {stride} reach element {last} but "
            f"its storage has {storage_numel} elements"
        )
    if numel * itemsize > max_bytes:
        raise CheckpointReadError(
            f"{where}: size {size} is {numel * itemsize} bytes, more than the whole file ({max_bytes} bytes)"
        )
    return offset, size, stride


def _tensor(storage: _Storage, offset, size, stride, *, name: str, max_bytes: int, budget: _Budget) -> np.ndarray:
    """A contiguous copy of the (validated) view, charged to ``budget``; never reads outside the
    storage."""
    flat = storage.array()
    where = f"tensor '{name}' (storage {storage.key})"
    offset, size, stride = check_geometry(where, flat.size, _itemsize(storage.dtype), offset, size, stride, max_bytes)
    budget.take(math.prod(size) * flat.itemsize, where)
    out_dtype = flat.dtype.newbyteorder("=")
    if math.prod(size) == 0:
        return np.zeros(size, dtype=out_dtype)
    # A dimension of size 1 never steps: its stride is irrelevant (and may be huge), use 0.
    strides = tuple(0 if n == 1 else s * flat.itemsize for n, s in zip(size, stride))
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=strides, writeable=False)
    return np.array(view, dtype=out_dtype, order="C")


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only knows checkpoint globals; storages come from ``storage_fn``."""

    def __init__(self, stream, storage_fn):
        super().__init__(stream)
        self._storage_fn = storage_fn

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointReadError(
            f"refusing to load global '{module}.{name}': a PyTorch checkpoint only needs "
            "tensors, storages and plain containers"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointReadError(f"unknown persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointReadError(f"unsupported storage type {storage_type!r}")
        return self._storage_fn(key, storage_type.dtype)


def _unpickle(stream: BinaryIO, storage_fn) -> Any:
    """One pickle from ``stream``, after its memo indices and nesting were checked
    (:func:`egoexo_jax.data.restricted_pickle.check_bounds`)."""
    restricted_pickle.check_bounds(stream)
    return _RestrictedUnpickler(stream, storage_fn).load()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's bytes, never more than its declared size (a lying header cannot inflate more)."""
    with zf.open(info) as member:
        data = member.read(info.file_size)
    if len(data) != info.file_size:
        raise CheckpointReadError(f"entry '{info.filename}' has {len(data)} bytes, its header says {info.file_size}")
    return data


def _load_zip(f: BinaryIO, file_bytes: int) -> Any:
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointReadError("zip archive without a single data.pkl")
        root = pkl[0][: -len("data.pkl")]
        _check_declared_sizes(zf, root, file_bytes)
        byteorder = root + "byteorder"
        if byteorder in names and _read_member(zf, zf.getinfo(byteorder)).strip() != b"little":
            raise CheckpointReadError("big-endian checkpoints are not supported")
        cache: dict[str, _Storage] = {}

        def load_storage(key, dtype):
            if key not in cache:
                member = f"{root}data/{key}"
                if member not in names:
                    raise CheckpointReadError(f"storage '{member}' missing from the archive")
                cache[key] = _Storage(dtype, key, _read_member(zf, zf.getinfo(member)))
            return cache[key]

        obj = _unpickle(io.BytesIO(_read_member(zf, zf.getinfo(pkl[0]))), load_storage)
        storage_bytes = sum(len(st.data) for st in cache.values())
    return _materialise(obj, "", file_bytes, _Budget(storage_bytes))


def _check_declared_sizes(zf: zipfile.ZipFile, root: str, file_bytes: int) -> None:
    """Refuses, before anything is inflated, an archive whose entries declare more bytes than a
    checkpoint of this size holds: ``data.pkl`` over :data:`MAX_PICKLE_BYTES`, an entry over the
    file's size, or the other entries together over twice the file's size (torch.save stores
    entries uncompressed, so they sum to about the file's size)."""
    total = 0
    for info in zf.infolist():
        is_pickle = info.filename == root + "data.pkl"
        limit = MAX_PICKLE_BYTES if is_pickle else file_bytes
        if info.file_size > limit:
            raise CheckpointReadError(
                f"entry '{info.filename}' declares {info.file_size} bytes unpacked, more than {limit} "
                f"bytes; expected a torch.save archive (stored entries no larger than the {file_bytes}-byte file)"
            )
        total += 0 if is_pickle else info.file_size
    if total > 2 * file_bytes:
        raise CheckpointReadError(
            f"entries declare {total} bytes unpacked in all, more than twice the file's {file_bytes} "
            "bytes; expected a torch.save archive (entries stored uncompressed)"
        )


def _load_legacy(f: BinaryIO, file_bytes: int) -> Any:
    def plain():
        return _unpickle(f, _no_storage)

    if plain() != _LEGACY_MAGIC:
        raise CheckpointReadError("not a PyTorch checkpoint (bad magic number)")
    plain()  # protocol version
    plain()  # system info
    storages: dict[str, _Storage] = {}

    def load_storage(key, dtype):
        return storages.setdefault(key, _Storage(dtype, key))

    obj = _unpickle(f, load_storage)
    keys = plain()
    if not isinstance(keys, (list, tuple)):
        raise CheckpointReadError(f"storage key list is a {type(keys).__name__}, not a list")
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        if str(key) not in storages:
            raise CheckpointReadError(f"storage {key} is listed but no tensor uses it")
        st = storages[str(key)]
        nbytes = numel * _itemsize(st.dtype)
        if numel < 0 or nbytes > file_bytes - f.tell():
            raise CheckpointReadError(
                f"storage {key} claims {numel} elements ({nbytes} bytes) but the file has "
                f"{file_bytes - f.tell()} bytes left: truncated or corrupt"
            )
        st.data = f.read(nbytes)
        if len(st.data) != nbytes:
            raise CheckpointReadError(f"file ends inside storage {key}")
    storage_bytes = sum(len(st.data) for st in storages.values() if st.data is not None)
    return _materialise(obj, "", file_bytes, _Budget(storage_bytes))


def _no_storage(key, dtype):
    raise CheckpointReadError("storage reference outside the checkpoint object")


def load_torch_file(path: str) -> Any:
    """Unpickles a ``torch.save`` file into plain Python objects and numpy arrays.

    Every tensor's geometry is checked against its storage before it is built
    (:func:`check_geometry`), so a damaged or hostile file can neither make this process read
    outside a storage nor allocate more than the file's size per tensor; all tensors together take
    at most the storages' bytes plus :data:`TENSOR_SLACK_BYTES`. Zip entries are checked against
    their declared sizes before they are inflated, and pickles against memo and nesting bounds.

    Args:
      path: a ``.pyth``/``.pth`` file (zip or legacy layout), local or ``gs://``.
    Returns:
      The saved object; every tensor is a numpy array of its dtype (bfloat16 -> float32).
    Raises:
      CheckpointReadError: unreadable, truncated or unsafe file; the message names the file and,
        for a bad tensor, its key.
      storage.PathError: ``path`` is a URL of another scheme.
    """
    path = storage.check(str(path))
    try:
        with storage.open_read(path) as f:
            file_bytes = storage.size(path)
            if zipfile.is_zipfile(f):
                f.seek(0)
                return _load_zip(f, file_bytes)
            f.seek(0)
            return _load_legacy(f, file_bytes)
    except CheckpointReadError as e:
        raise CheckpointReadError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise CheckpointReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointReadError(f"{path}: is a directory, not a checkpoint file") from None
    except (
        zipfile.BadZipFile,
        EOFError,
        pickle.UnpicklingError,
        struct.error,
        KeyError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
        OSError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as e:
        raise CheckpointReadError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: {type(e).__name__}: {e})"
        ) from None
