"""Path strings: local paths and ``gs://BUCKET/OBJECT`` URLs, told apart, checked and joined.

Every path the project reads or writes (workdir, checkpoints, data lists, media, teacher files,
outputs) is a string that is either a local path or a Cloud Storage URL. This module only looks
at the strings; :mod:`egoexo_jax.storage.files` does the I/O. A URL of any other scheme, and a
local path that starts with ``gs:/`` (a URL whose ``//`` a path normalisation collapsed, which
would otherwise become a local folder named ``gs:``), is a :class:`PathError`.

Clients. orbax and TFDS reach storage through ``etils.epath``, which picks TensorFlow's file
system for ``gs://`` when TensorFlow is installed, unless ``EPATH_USE_TF`` says otherwise. The
project's own I/O goes through fsspec's ``gcsfs``, so this module sets ``EPATH_USE_TF=false``
(when it is unset) on import: orbax, TFDS and the project then share one GCS client (gcsfs,
which honours ``STORAGE_EMULATOR_HOST``), and TensorFlow's file-status cache never hides another
host's or an earlier run's objects. Listings are never cached (another host may have written
since), and gcsfs's experimental zonal-bucket support (a gRPC probe per bucket) stays off unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` asks for it.
"""

from __future__ import annotations

import os
import posixpath
import re

from egoexo_jax.cli import InputError

GCS_PREFIX = "gs://"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def _configure_clients() -> None:
    os.environ.setdefault("EPATH_USE_TF", "false")
    # gcsfs's experimental zonal / hierarchical-namespace support probes every bucket over gRPC
    # first; plain buckets, which is what the project writes to, need none of it.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec.config  # pylint: disable=import-outside-toplevel

    gcs = fsspec.config.conf.setdefault("gcs", {})
    gcs.setdefault("use_listings_cache", False)


_configure_clients()


class PathError(InputError):
    """A path string that is neither a local path nor a ``gs://BUCKET/...`` URL."""


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``gs://`` URL (an object-store path)."""
    return os.fspath(path).startswith(GCS_PREFIX)


def check(path: str | os.PathLike, where: str = "") -> str:
    """``path`` as a string, after checking that this layer understands it.

    Raises:
      PathError: another URL scheme (``s3://``, ``http://``, ``gcs://`` ...), a ``gs://`` URL
        without a valid bucket, or a local path beginning ``gs:/`` (a collapsed URL). ``where``
        names the flag or config key in the message.
    """
    text = os.fspath(path)
    if not isinstance(text, str):
        raise PathError(f"path {text!r} is bytes{_at(where)}, expected a string")
    if text.startswith(GCS_PREFIX):
        bucket = text[len(GCS_PREFIX) :].split("/", 1)[0]
        if not _BUCKET.match(bucket):
            raise PathError(
                f"no valid bucket in {text}{_at(where)}, expected gs://BUCKET/PATH "
                "(bucket names: 3-222 lower-case letters, digits, '.', '_', '-')"
            )
        return text
    match = _SCHEME.match(text)
    if match or text.startswith("gs:"):
        scheme = match.group(1) if match else "gs"
        raise PathError(
            f"unsupported path {text}{_at(where)} (scheme {scheme!r}), expected a local path or gs://BUCKET/PATH"
        )
    return text


def _at(where: str) -> str:
    return f" ({where})" if where else ""


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...``: ``posixpath.join`` for URLs, ``os.path.join`` for local paths."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def absolute(path: str | os.PathLike) -> str:
    """A URL unchanged (with no trailing slash), a local path made absolute."""
    path = check(path)
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def dirname(path: str | os.PathLike) -> str:
    """The folder part (``gs://b/x/y`` -> ``gs://b/x``; a bucket's root stays ``gs://b``)."""
    path = os.fspath(path).rstrip("/") if is_url(path) else os.fspath(path)
    if is_url(path):
        head = posixpath.dirname(path)
        return head if len(head) > len(GCS_PREFIX) else path
    return os.path.dirname(path)


def basename(path: str | os.PathLike) -> str:
    """The last component of ``path`` (``posixpath`` rules for URLs)."""
    path = os.fspath(path)
    return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def split_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``('bucket', 'a/b')``."""
    rest = check(url)[len(GCS_PREFIX) :]
    bucket, _, key = rest.partition("/")
    return bucket, key
