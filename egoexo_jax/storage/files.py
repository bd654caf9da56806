"""File and object I/O for local paths and ``gs://`` URLs alike: the one place that touches either.

Local paths use the operating system; URLs use fsspec's ``gcsfs`` (see
:mod:`egoexo_jax.storage.paths` for why that client). Object-store semantics are not dressed up as
POSIX ones:

- a write is one object upload, which Cloud Storage makes visible all at once, so
  :func:`atomic_write` needs no temporary object and rename there (locally it writes a temporary
  file and renames it);
- there is no append: callers keep what they add and rewrite the whole object
  (:func:`append_bytes` and :func:`locked_append` are for local files only);
- there are no folders: :func:`makedirs` is a no-op on URLs and :func:`isdir` means "some object
  has this prefix";
- there is no rename: :func:`move_tree` copies, then deletes the source;
- :func:`free_bytes` is ``None`` (a bucket has no free-space figure).

Errors: a missing object is a ``FileNotFoundError`` and a refused one a ``PermissionError``, both
with the errno and the URL as ``filename`` (what :mod:`egoexo_jax.cli` reports in one line).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import stat
import tempfile
from typing import IO, BinaryIO, Callable, Iterator, Sequence

from egoexo_jax.cli import InputError
from egoexo_jax.storage.paths import is_url, join


class NotRegularFileError(InputError, OSError):
    """A local path to read is a FIFO, socket or device: reading it could block forever or never end."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _open_local(path: str) -> BinaryIO:
    """``open(path, 'rb')`` of a regular file only: opened non-blocking (a FIFO without a writer
    would block the open) and checked with ``fstat`` before a byte is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise NotRegularFileError(f"{path}: is {kind}, not a regular file; expected a regular file to read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def gcs():
    """This process's ``gcsfs`` file system (fsspec caches one per process)."""
    import fsspec  # pylint: disable=import-outside-toplevel

    return fsspec.filesystem("gcs")


@contextlib.contextmanager
def _errors(path: str) -> Iterator[None]:
    """Re-raises gcsfs's bare errors as ``OSError`` s with an errno and the URL."""
    try:
        yield
    except FileNotFoundError as e:
        if e.errno is not None and e.filename:
            raise
        raise FileNotFoundError(errno.ENOENT, "No such object", path) from None
    except OSError as e:
        if e.errno is None and str(e).startswith("Forbidden"):
            raise PermissionError(errno.EACCES, "Permission denied (HTTP 403)", path) from None
        raise
    except Exception as e:  # gcsfs.retry.HttpError carries the HTTP status as .code
        if getattr(e, "code", None) == 401:
            raise PermissionError(errno.EACCES, "Not authorised (HTTP 401: no valid credentials)", path) from None
        raise


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    with _errors(path):
        return gcs().exists(path)


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    with _errors(path):
        return gcs().isfile(path)


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix that at least one object lies under."""
    if not is_url(path):
        return os.path.isdir(path)
    with _errors(path):
        return gcs().isdir(path)


def listdir(path: str) -> list[str]:
    """Sorted names of the entries directly inside ``path`` (objects and sub-prefixes)."""
    if not is_url(path):
        return sorted(os.listdir(path))
    with _errors(path):
        entries = gcs().ls(path, detail=False)
    base = path.rstrip("/")
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base[len("gs://") :]}
    return sorted(n for n in names if n)


def size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    with _errors(path):
        return int(gcs().size(path))


def makedirs(path: str) -> None:
    """Creates a local folder (and its parents); nothing for a URL (objects need no folders)."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def read_bytes(path: str, *, start: int | None = None, end: int | None = None) -> bytes:
    """The bytes of ``path`` (or of ``[start, end)``, shorter at the end of the file): one request
    for an object; a local path must be a regular file (:class:`NotRegularFileError` otherwise)."""
    if not is_url(path):
        with _open_local(path) as f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(end - (start or 0))
    try:
        with _errors(path):
            return gcs().cat_file(path, start=start, end=end)
    except Exception as e:  # HTTP 416: a range that starts at or past the end (e.g. an empty object)
        if getattr(e, "code", None) == 416:
            return b""
        raise


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def read_many(paths: Sequence[str]) -> list[bytes | Exception]:
    """The bytes of every path, objects fetched concurrently; a path that cannot be read gives
    its exception in its place (an ``OSError`` naming it)."""
    urls = [p for p in paths if is_url(p)]
    fetched: dict[str, bytes | Exception] = {}
    if urls:
        got = gcs().cat(list(dict.fromkeys(urls)), on_error="return")
        got = got if isinstance(got, dict) else {urls[0]: got}
        for url, value in got.items():
            key = url if url.startswith("gs://") else "gs://" + url
            if isinstance(value, FileNotFoundError):
                value = FileNotFoundError(errno.ENOENT, "No such object", key)
            fetched[key] = value
    out: list[bytes | Exception] = []
    for p in paths:
        if is_url(p):
            out.append(fetched.get(p, FileNotFoundError(errno.ENOENT, "No such object", p)))
            continue
        try:
            out.append(read_bytes(p))
        except OSError as e:
            out.append(e)
    return out


def open_read(path: str, *, block_size: int = 8 * 2**20) -> BinaryIO:
    """A seekable binary file; for an object, reads are ranged requests of ``block_size`` with
    read-ahead (for readers that seek, e.g. a zip archive or a long video). A local path must be a
    regular file (:class:`NotRegularFileError` otherwise)."""
    if not is_url(path):
        return _open_local(path)
    with _errors(path):
        return gcs().open(path, "rb", block_size=block_size, cache_type="readahead")


def open_text(path: str, encoding: str = "utf-8", newline: str | None = None) -> IO[str]:
    """A text file to iterate over (an object is read whole: lists and annotations are small)."""
    if not is_url(path):
        return open(path, encoding=encoding, newline=newline)
    return io.TextIOWrapper(io.BytesIO(read_bytes(path)), encoding=encoding, newline=newline)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through ``write_fn(binary file)`` so that a reader sees the previous
    content or the complete new one, never a torn one.

    Local: a temporary ``.tmp-*-{name}`` file in the same folder (created if needed), flushed to
    disk and renamed over ``path``. URL: ``write_fn`` fills a memory buffer that is uploaded as one
    object (Cloud Storage shows an object only once its upload completed). On any error (also
    KeyboardInterrupt) nothing is left behind and ``path`` is unchanged.
    """
    path = os.fspath(path)
    if is_url(path):
        buffer = io.BytesIO()
        write_fn(buffer)
        write_bytes(path, buffer.getvalue())
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str, data: bytes) -> None:
    """``path`` replaced by ``data`` in one step (see :func:`atomic_write`)."""
    if not is_url(path):
        atomic_write(path, lambda f: f.write(data))
        return
    with _errors(path):
        gcs().pipe_file(path, bytes(data))


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def append_bytes(path: str, data: bytes) -> None:
    """Appends ``data`` to a local file with one ``write`` (O_APPEND: lines written by several
    processes never interleave). A URL is a ``ValueError``: objects cannot be appended to."""
    if is_url(path):
        raise ValueError(f"{path}: Cloud Storage objects cannot be appended to; rewrite the object")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def locked_append(path: str, decide: Callable[[bytes], bytes | None]) -> None:
    """Under an exclusive ``flock`` on a local file (created with its folder if needed), appends
    ``decide(current content)`` unless that is ``None``: a check-then-append no other process
    interleaves with. A URL is a ``ValueError``."""
    if is_url(path):
        raise ValueError(f"{path}: Cloud Storage objects cannot be appended to; rewrite the object")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as existing:
            data = decide(existing.read())
        if data:
            os.write(fd, data)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove(path: str) -> None:
    """Deletes one file or object (missing: ``FileNotFoundError``)."""
    if not is_url(path):
        os.remove(path)
        return
    with _errors(path):
        gcs().rm_file(path)


def remove_tree(path: str) -> None:
    """Deletes a folder / every object under a prefix (nothing there: no error)."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with _errors(path):
        if gcs().exists(path):
            gcs().rm(path, recursive=True)


def _walk_files(path: str) -> list[str]:
    """Relative paths of every file / object under ``path``."""
    if not is_url(path):
        return [os.path.relpath(os.path.join(root, name), path) for root, _, names in os.walk(path) for name in names]
    base = path.rstrip("/")
    with _errors(path):
        found = gcs().find(base)
    strip = len(base) - len("gs://") + 1
    return [f[strip:] for f in found]


def tree_bytes(path: str) -> int:
    """Total size of the files / objects under ``path``."""
    if not is_url(path):
        return sum(os.path.getsize(os.path.join(path, rel)) for rel in _walk_files(path))
    base = path.rstrip("/")
    with _errors(path):
        return int(sum(info["size"] for info in gcs().find(base, detail=True).values()))


def copy_tree(src: str, dst: str) -> None:
    """Copies every file / object under ``src`` to the same relative path under ``dst`` (either
    may be local or a URL; objects are copied concurrently, bucket to bucket without a download)."""
    rels = _walk_files(src)
    sources = [join(src, rel) for rel in rels]
    targets = [join(dst, *rel.split("/")) for rel in rels]
    if not sources:
        return
    if not is_url(dst):
        for target in targets:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if not is_url(src) and not is_url(dst):
        for source, target in zip(sources, targets):
            shutil.copyfile(source, target)
        return
    fs = gcs()
    with _errors(src if is_url(src) else dst):
        if is_url(src) and is_url(dst):
            fs.copy(sources, targets)
        elif is_url(dst):
            fs.put(sources, targets)
        else:
            fs.get(sources, targets)


def move_tree(src: str, dst: str) -> None:
    """Moves a folder: a rename on local disk (same file system), else copy then delete."""
    if not is_url(src) and not is_url(dst):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        shutil.move(src, dst)
        return
    copy_tree(src, dst)
    remove_tree(src)


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent); ``None``
    for a URL, where the figure has no meaning."""
    if is_url(path):
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free
