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
arrays (contiguous copies with the checkpoint's shape and dtype).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

__all__ = ["CheckpointReadError", "load_torch_file"]


class CheckpointReadError(ValueError):
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
    """A storage's raw bytes, filled lazily for the legacy layout."""

    def __init__(self, dtype, data: bytes | None = None):
        self.dtype = dtype
        self.data = data

    def array(self) -> np.ndarray:
        if self.data is None:
            raise CheckpointReadError("tensor storage referenced but never written in the file")
        if self.dtype == "bfloat16":
            # bfloat16 is the top half of a float32.
            raw = np.frombuffer(self.data, dtype="<u2").astype(np.uint32) << 16
            return raw.view(np.float32)
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))


class _PendingTensor:
    """A legacy-layout tensor whose storage bytes follow the pickle; built by :func:`_materialise`."""

    def __init__(self, storage: _Storage, offset, size, stride):
        self.args = (storage, offset, size, stride)


def _materialise(obj: Any) -> Any:
    """Replaces every :class:`_PendingTensor` in plain containers by its array."""
    if isinstance(obj, _PendingTensor):
        return _tensor(*obj.args)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _materialise(obj[k])
        return obj
    if isinstance(obj, list):
        return [_materialise(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(x) for x in obj)
    return obj


def _rebuild_tensor(storage: _Storage, offset, size, stride, *unused):
    if storage.data is None:  # legacy layout: the bytes come after the pickle
        return _PendingTensor(storage, offset, size, stride)
    return _tensor(storage, offset, size, stride)


def _tensor(storage: _Storage, offset, size, stride) -> np.ndarray:
    flat = storage.array()
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if not size:
        return np.array(flat[offset], dtype=flat.dtype)
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, dtype=flat.dtype)
    if needed > flat.size:
        raise CheckpointReadError(
            f"tensor of shape {size} needs {needed} elements but its storage has {flat.size}")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride))
    return np.ascontiguousarray(view).astype(flat.dtype.newbyteorder("="), copy=False)


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
            "tensors, storages and plain containers")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointReadError(f"unknown persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointReadError(f"unsupported storage type {storage_type!r}")
        return self._storage_fn(key, storage_type.dtype)


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointReadError(f"{path}: zip archive without a single data.pkl")
        root = pkl[0][: -len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise CheckpointReadError(f"{path}: big-endian checkpoints are not supported")
        cache: dict[str, _Storage] = {}

        def storage(key, dtype):
            if key not in cache:
                member = f"{root}data/{key}"
                if member not in names:
                    raise CheckpointReadError(f"{path}: storage '{member}' missing from the archive")
                cache[key] = _Storage(dtype, zf.read(member))
            return cache[key]

        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storage).load()


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        def plain():
            return _RestrictedUnpickler(f, _no_storage).load()

        if plain() != _LEGACY_MAGIC:
            raise CheckpointReadError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        plain()  # protocol version
        plain()  # system info
        storages: dict[str, _Storage] = {}

        def storage(key, dtype):
            return storages.setdefault(key, _Storage(dtype))

        obj = _RestrictedUnpickler(f, storage).load()
        for key in plain():
            (numel,) = struct.unpack("<q", f.read(8))
            st = storages[str(key)]
            itemsize = 2 if st.dtype == "bfloat16" else np.dtype(st.dtype).itemsize
            data = f.read(numel * itemsize)
            if len(data) != numel * itemsize:
                raise CheckpointReadError(f"{path}: file ends inside storage {key}")
            st.data = data
        return _materialise(obj)


def _no_storage(key, dtype):
    raise CheckpointReadError("storage reference outside the checkpoint object")


def load_torch_file(path: str) -> Any:
    """Unpickles a ``torch.save`` file into plain Python objects and numpy arrays.

    Args:
      path: a ``.pyth``/``.pth`` file (zip or legacy layout).
    Returns:
      The saved object; every tensor is a numpy array of its dtype (bfloat16 -> float32).
    Raises:
      CheckpointReadError: unreadable, truncated or unsafe file; the message names it.
    """
    path = str(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except CheckpointReadError:
        raise
    except FileNotFoundError:
        raise CheckpointReadError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, KeyError,
            ValueError, TypeError, IndexError, AttributeError, OSError) as e:
        raise CheckpointReadError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: "
            f"{type(e).__name__}: {e})") from None
