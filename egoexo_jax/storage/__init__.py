"""The one path layer: every path the project reads or writes is a local path or a ``gs://`` URL.

:mod:`~egoexo_jax.storage.paths` tells the two apart and checks them (an unknown scheme is a
one-line error); :mod:`~egoexo_jax.storage.files` reads, writes, lists, copies and deletes with
object-store semantics where the path is a URL. Nothing else in the package opens, renames or
lists a workdir, data or output path itself. :mod:`~egoexo_jax.storage.lock` keeps one run per
workdir (:class:`WorkdirLock`). Why fsspec / gcsfs, and the environment variables
that point every client at a local Cloud Storage server: docs/storage.md#clients.
"""

from egoexo_jax.storage.files import (
    append_bytes,
    atomic_write,
    copy_tree,
    exists,
    free_bytes,
    gcs,
    isdir,
    isfile,
    listdir,
    locked_append,
    makedirs,
    move_tree,
    open_read,
    open_text,
    read_bytes,
    read_many,
    read_text,
    remove,
    remove_tree,
    size,
    tree_bytes,
    write_bytes,
    write_text,
)
from egoexo_jax.storage.lock import WorkdirLock, WorkdirLockedError
from egoexo_jax.storage.paths import PathError, absolute, basename, check, dirname, is_url, join, split_url

__all__ = [
    "PathError",
    "WorkdirLock",
    "WorkdirLockedError",
    "absolute",
    "append_bytes",
    "atomic_write",
    "basename",
    "check",
    "copy_tree",
    "dirname",
    "exists",
    "free_bytes",
    "gcs",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "locked_append",
    "makedirs",
    "move_tree",
    "open_read",
    "open_text",
    "read_bytes",
    "read_many",
    "read_text",
    "remove",
    "remove_tree",
    "size",
    "split_url",
    "tree_bytes",
    "write_bytes",
    "write_text",
]
