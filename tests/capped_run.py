"""Runs a Python snippet in a subprocess whose address space is capped ``headroom`` bytes above what
its imports took, so a reading bomb fails there (MemoryError) instead of exhausting the test host."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

_CAP = """
import resource, sys
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + {headroom}, size + {headroom}))
"""


def run_capped(imports: str, body: str, *args: str, headroom: int, timeout: int) -> subprocess.CompletedProcess:
    """``imports``, then the cap, then ``body`` (``sys`` imported; ``args`` in ``sys.argv[1:]``)."""
    script = imports + _CAP.format(headroom=int(headroom)) + body
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
