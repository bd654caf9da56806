"""Start-up settings of the host process for the CPU backend: huge pages for large allocations,
XLA:CPU flags (measurements in BENCHMARKS.md, changes 7 and 10).

Huge pages. XLA:CPU allocates the temporary buffers of an executable afresh on every call, and
glibc serves such blocks with freshly mapped 4 KiB pages, so every train step page-faults its whole
temporary footprint. glibc's ``glibc.malloc.hugetlb=1`` tunable marks those blocks for transparent
huge pages. glibc reads tunables only when the process starts, so
:func:`reexec_with_hugepage_malloc` restarts the interpreter once with the tunable added. Set
``EGOEXO_HUGEPAGE_MALLOC=0`` (or any ``glibc.malloc.hugetlb`` value in ``GLIBC_TUNABLES``) to keep
the environment as it is.

XLA:CPU flags. XLA:CPU hands dots, reductions and convolutions to YNNPACK by default; XLA's own
2D convolutions and their gradients run faster. :func:`configure_xla_cpu` adds
:data:`XLA_CPU_FLAGS` (YNNPACK for dots and reductions only) to ``XLA_FLAGS`` unless the user
already sets ``xla_cpu_experimental_ynn_fusion_type`` or ``EGOEXO_XLA_CPU_FLAGS=0``. XLA reads
``XLA_FLAGS`` when the first backend starts, so it must run before any computation.

Both settings are for the CPU backend only. :func:`prepare_process`, which every entry point
(``main``, ``predict``, ``precompute_teachers``, ``convert``, ``benchmarks/*.py``) calls before
anything else, applies them only when :func:`cpu_backend` says this process computes on the CPU;
TPU and GPU hosts start untouched. Importing a module never changes anything.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from typing import Iterable, Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "EGOEXO_HUGEPAGE_MALLOC"
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
XLA_OPT_OUT = "EGOEXO_XLA_CPU_FLAGS"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)  # first glibc with the hugetlb tunable
# Device files of the accelerators JAX drives: TPU (v2-v5e /dev/accel*, v5p / v6e VFIO groups),
# NVIDIA GPUs, AMD GPUs (ROCm's kernel fusion driver).
ACCELERATOR_DEVICES = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")


def cpu_backend(environ: Mapping[str, str], device_patterns: Iterable[str] = ACCELERATOR_DEVICES) -> bool:
    """Whether JAX in this process will compute on the CPU, decided without importing jax (the
    settings must be made before it starts): the first entry of ``JAX_PLATFORMS`` when it is set,
    else whether the machine has no accelerator device files."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not any(glob.glob(pattern) for pattern in device_patterns)


def thp_mode(path: str = THP_MODE_FILE) -> str:
    """The kernel's transparent-huge-page mode (``always`` / ``madvise`` / ``never``), or ``""``
    when the file is missing or unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def glibc_version() -> Optional[tuple]:
    """``(major, minor)`` of the C library when it is glibc, else None."""
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return None
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return None


def hugepage_environment(environ: Mapping[str, str], glibc: Optional[tuple], thp: str) -> Optional[dict]:
    """The environment to restart with, or None when nothing should change.

    Nothing changes when the user opted out (``EGOEXO_HUGEPAGE_MALLOC=0``), when
    ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb`` (which also ends the restart), when
    the C library is not glibc >= 2.35, or when the kernel has no transparent huge pages for
    madvised memory (mode ``never`` or unknown).
    """
    if environ.get(OPT_OUT, "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    if glibc is None or glibc < MIN_GLIBC or thp not in ("always", "madvise"):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec_with_hugepage_malloc() -> None:
    """Restarts this interpreter, same arguments, with :data:`TUNABLE` in ``GLIBC_TUNABLES`` when
    :func:`hugepage_environment` asks for it; returns without doing anything otherwise. Call it
    first thing in a ``__main__`` block (the restart discards everything done before)."""
    if not sys.platform.startswith("linux"):
        return
    env = hugepage_environment(os.environ, glibc_version(), thp_mode())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)


def xla_flags(environ: Mapping[str, str]) -> Optional[str]:
    """``XLA_FLAGS`` with :data:`XLA_CPU_FLAGS` added, or None when nothing should change (the user
    opted out with ``EGOEXO_XLA_CPU_FLAGS=0`` or sets the YNNPACK fusion types themselves)."""
    if environ.get(XLA_OPT_OUT, "1") == "0":
        return None
    current = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:
        return None
    return f"{current} {XLA_CPU_FLAGS}".strip()


def configure_xla_cpu() -> None:
    """Sets ``XLA_FLAGS`` in this process as :func:`xla_flags` says (before any JAX computation)."""
    flags = xla_flags(os.environ)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags


def prepare_process() -> None:
    """What an entry point calls first: on the CPU backend (:func:`cpu_backend`),
    :func:`reexec_with_hugepage_malloc`, then :func:`configure_xla_cpu`; elsewhere nothing."""
    if not cpu_backend(os.environ):
        return
    reexec_with_hugepage_malloc()
    configure_xla_cpu()
