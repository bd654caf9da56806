"""Test set-up: 8 fake CPU devices, absl flags parsed, float32 matmuls.

XLA_FLAGS must be set before jax is imported anywhere, so it happens here at
collection time. The collective time-out makes a hang in a sharded test fail
fast instead of blocking the suite (docs/testing.md#collective-hang).
"""

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
os.environ["XLA_FLAGS"] = _flags.strip()
# The XLA:CPU flags the entry points set (egoexo_jax.hostenv), so tests compile what users run.
from egoexo_jax import hostenv  # noqa: E402

hostenv.configure_xla_cpu()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache per test session, inherited by subprocess runs: the train
# step of the tiny test config compiles once instead of once per run (about 30 s each on 2 cores).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile  # noqa: E402

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="egoexo-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

from demo_checkpoint import quick_demo_root  # noqa: E402,F401  (a session fixture of several test files)

jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A local Cloud Storage server (loopback, in memory) for the whole session; this process and
    its subprocesses are pointed at it (``gcs_server.client_environment``)."""
    import gcs_server  # noqa: PLC0415

    server = gcs_server.start(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture
def bucket(gcs) -> str:
    """``gs://NAME`` of a new, empty bucket on the local server."""
    return gcs.new_bucket()
