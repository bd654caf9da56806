"""The start-up settings of the entry points (egoexo_jax.hostenv): huge-page restart, XLA:CPU flags."""

import os
import subprocess
import sys

import pytest

from egoexo_jax import hostenv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_environment_adds_the_tunable_and_keeps_existing_ones():
    env = hostenv.hugepage_environment({"A": "1"}, (2, 36), "madvise")
    assert env == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = hostenv.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 36), "always")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
    "environ, glibc, thp",
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise"),  # user's own value / restarted
        ({"EGOEXO_HUGEPAGE_MALLOC": "0"}, (2, 36), "madvise"),  # opted out
        ({}, (2, 34), "madvise"),  # glibc without the tunable
        ({}, None, "madvise"),  # not glibc (musl, macOS)
        ({}, (2, 36), "never"),  # kernel without THP
        ({}, (2, 36), ""),
    ],
)
def test_environment_left_alone(environ, glibc, thp):
    assert hostenv.hugepage_environment(environ, glibc, thp) is None


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hostenv.thp_mode(str(f)) == "madvise"
    assert hostenv.thp_mode(str(tmp_path / "missing")) == ""


def test_restart_keeps_the_arguments_and_sets_the_tunable(tmp_path):
    if hostenv.hugepage_environment(os.environ, hostenv.glibc_version(), hostenv.thp_mode()) is None:
        pytest.skip("this machine (or environment) does not qualify for the restart")
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\nfrom egoexo_jax import hostenv\nhostenv.reexec_with_hugepage_malloc()\n"
        "print(sys.argv[1:], os.environ['GLIBC_TUNABLES'])\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, str(script), "a b", "--x=1"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['a b', '--x=1'] glibc.malloc.hugetlb=1"


def test_xla_flags_appended_unless_set_or_opted_out():
    assert hostenv.xla_flags({}) == hostenv.XLA_CPU_FLAGS
    assert hostenv.xla_flags({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == (
        "--xla_force_host_platform_device_count=8 " + hostenv.XLA_CPU_FLAGS
    )
    assert hostenv.xla_flags({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}) is None
    assert hostenv.xla_flags({"EGOEXO_XLA_CPU_FLAGS": "0"}) is None


def test_prepared_process_compiles_convolutions_without_ynnpack(tmp_path):
    """The flag is one this jaxlib knows (an unknown one aborts the process) and takes effect:
    a 2D convolution is no longer a YNNPACK fusion."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os\nfrom egoexo_jax import hostenv\nhostenv.configure_xla_cpu()\n"
        "import jax, jax.numpy as jnp\n"
        "f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID', "
        "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
        "x, w = jnp.ones((16, 26, 26, 64)), jnp.ones((3, 3, 64, 64))\n"
        "print('ynn' in f.lower(x, w).compile().as_text(), float(f(x, w)[0, 3, 3, 0]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "EGOEXO_XLA_CPU_FLAGS")}
    env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["False", "576.0"]
    env["EGOEXO_XLA_CPU_FLAGS"] = "0"  # the default keeps YNNPACK on the convolution: the probe can tell
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["True", "576.0"]


def test_cpu_backend_from_jax_platforms_or_device_files(tmp_path):
    (tmp_path / "accel0").touch()
    accel = [str(tmp_path / "accel[0-9]*")]
    assert hostenv.cpu_backend({"JAX_PLATFORMS": "cpu"}, accel)
    assert not hostenv.cpu_backend({"JAX_PLATFORMS": "tpu,cpu"}, [])
    assert not hostenv.cpu_backend({"JAX_PLATFORMS": "cuda"}, [])
    assert not hostenv.cpu_backend({}, accel)  # a TPU / GPU host
    assert hostenv.cpu_backend({}, [str(tmp_path / "nvidia[0-9]*")])  # no accelerator files


def test_prepare_process_leaves_accelerator_hosts_alone(tmp_path):
    """On a TPU / GPU host (here: JAX_PLATFORMS=tpu) neither the restart nor the XLA:CPU flag happens."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os\nfrom egoexo_jax import hostenv\nhostenv.prepare_process()\n"
        "print(repr(os.environ.get('GLIBC_TUNABLES')), repr(os.environ.get('XLA_FLAGS')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
    env.update(PYTHONPATH=REPO, JAX_PLATFORMS="tpu")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None"]
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert hostenv.XLA_CPU_FLAGS in out.stdout
