"""TensorBoard scalar event files written through the path layer (local folders and ``gs://``).

TensorFlow's summary writer appends to one event file, which an object store cannot do (on
Cloud Storage TensorFlow re-uploads the whole file on every flush, through a client with Google's
endpoints compiled in). :class:`EventWriter` keeps the records of its current *part* in memory
and writes the part whole at each :meth:`~EventWriter.flush` (:func:`storage.atomic_write`). A
part grows to ``part_bytes`` at most; the next one gets the next number. TensorBoard reads every
``*tfevents*`` file of a folder in name order, and the names
``events.out.tfevents.{start time}.{host}.{pid}.{part:04d}`` sort in writing order.

A resumed run calls :meth:`~EventWriter.restart` with the step it resumed from: that writes a
``SessionLog.START`` event, on which TensorBoard drops the earlier run's events past that step,
so the curves read like an uninterrupted run's.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from egoexo_jax.storage.files import atomic_write
from egoexo_jax.storage.paths import join

PART_BYTES = 4 * 2**20


def record(data: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC-32C of the length, data, masked CRC-32C of the data."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def read_records(data: bytes) -> list[bytes]:
    """The payloads of a TFRecord stream (a torn last frame is left out; a bad CRC is an error)."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + 12])[0] != masked_crc32c(header):
            raise ValueError(f"bad length checksum at byte {pos}")
        end = pos + 12 + length + 4
        if end > len(data):
            break
        payload = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc32c(payload):
            raise ValueError(f"bad data checksum at byte {pos}")
        out.append(payload)
        pos = end
    return out


class EventWriter:
    """Scalars as TensorBoard events in ``logdir``: ``write_scalars(step, {tag: value})``,
    ``flush()`` (writes the current part), ``restart(step)``, ``close()``."""

    def __init__(self, logdir: str, part_bytes: int = PART_BYTES):
        self.logdir = logdir
        self.part_bytes = int(part_bytes)
        self._stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self._part = 0
        self._buffer = bytearray()
        self._dirty = False
        self._start_part()

    def _start_part(self) -> None:
        version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._buffer = bytearray(record(version.SerializeToString()))

    @property
    def path(self) -> str:
        """The current part's file / object."""
        return join(self.logdir, f"{self._stem}.{self._part:04d}")

    def _add(self, event: event_pb2.Event) -> None:
        data = record(event.SerializeToString())
        if len(self._buffer) + len(data) > self.part_bytes and len(self._buffer) > len(data):
            self.flush()
            self._part += 1
            self._start_part()
        self._buffer += data
        self._dirty = True

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        if values:
            self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

    def restart(self, step: int) -> None:
        """Marks a resume from ``step``: TensorBoard discards earlier events after it."""
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._add(event_pb2.Event(wall_time=time.time(), step=int(step), session_log=start))

    def flush(self) -> None:
        if self._dirty:
            data = bytes(self._buffer)
            atomic_write(self.path, lambda f: f.write(data))
            self._dirty = False

    def close(self) -> None:
        self.flush()
