"""Helpers shared by the benchmark scripts: recipe configs at benchmark sizes, synthetic batches,
memory probes, machine description and the optional torch import."""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import threading
import time
from typing import Optional

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

MODELS = ("slowfast_r50", "slow_r50", "mvit_v2_s")
SIZES = ("reduced", "full", "dry")

TORCH_SKIP_MESSAGE = (
    "torch is not installed: skipping the PyTorch reference, reporting JAX numbers "
    "only (benchmarks only: pip install torch==2.13.0; torch is not a dependency "
    "of egoexo_jax)"
)

# Input sizes per (model, size): frames of the (fast) pathway, crop, default CPU / GPU batch and
# architecture overrides. "full" is the recipe (configs/pretrain.py); "reduced" keeps the full
# architecture (depth, widths, heads) on shorter, smaller clips and a small batch so that a 2-core
# CPU runs a step in seconds; "dry" is a tiny network that checks the whole path in seconds.
SHAPES = {
    ("slowfast_r50", "full"): dict(frames=32, crop=224, batch=2, gpu_batch=32),
    ("slowfast_r50", "reduced"): dict(frames=16, crop=96, batch=4, gpu_batch=64),
    ("slowfast_r50", "dry"): dict(frames=8, crop=32, batch=2, gpu_batch=2, depth=18, width=8),
    ("slow_r50", "full"): dict(frames=8, crop=224, batch=2, gpu_batch=32),
    ("slow_r50", "reduced"): dict(frames=8, crop=64, batch=2, gpu_batch=64),
    ("slow_r50", "dry"): dict(frames=4, crop=32, batch=2, gpu_batch=2, depth=18, width=8),
    ("mvit_v2_s", "full"): dict(frames=16, crop=224, batch=2, gpu_batch=32),
    ("mvit_v2_s", "reduced"): dict(frames=8, crop=64, batch=2, gpu_batch=64),
    ("mvit_v2_s", "dry"): dict(frames=4, crop=64, batch=2, gpu_batch=2, mvit_depth=3, embed_dim=16),
}


def import_torch(disabled: bool = False):
    """torch, or None (prints :data:`TORCH_SKIP_MESSAGE`) when it is missing or ``disabled``."""
    if disabled:
        print(TORCH_SKIP_MESSAGE.replace("is not installed", "is disabled (--no-torch)"), flush=True)
        return None
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        print(TORCH_SKIP_MESSAGE, flush=True)
        return None
    return torch


def num_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def machine(torch=None) -> dict:
    import flax  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import jaxlib  # noqa: PLC0415

    out = {
        "nproc": num_cpus(),
        "cpu": cpu_model(),
        "jax_device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "loadavg_start": loadavg(),
        # Both sides run in this process, so both get the same host allocator (egoexo_jax.hostenv).
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    return out


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakRSS:
    """Samples the process RSS every ``interval`` s in a thread: ``with PeakRSS() as p: ...``;
    ``p.peak_mb`` is the highest RSS seen inside the block, ``p.delta_mb`` its rise above the RSS at
    entry (what the block itself added: compile buffers, parameters, activations)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self.start_mb = self.peak_mb = rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


def recipe_config(name: str, variant: str = ""):
    """The config of ``configs/<name>.py[:variant]`` (recipe files load by path)."""
    from egoexo_jax import recipe  # noqa: PLC0415

    path = os.path.join(REPO, "configs", f"{name}.py")
    return recipe.load_config(f"{path}:{variant}" if variant else path)


def experiment_config(
    model: str, size: str, *, heads: bool, dtype: str = "float32", batch: Optional[int] = None, device: str = "cpu"
):
    """The recipe config of ``configs/pretrain.py`` (Ego-Exo heads and losses) at a benchmark size;
    ``heads=False`` drops the three Ego-Exo heads and trains on the task CE alone (the baseline)."""
    from egoexo_jax.models import mvit_config as mvit_lib  # noqa: PLC0415
    from egoexo_jax.models import presets  # noqa: PLC0415

    shape = SHAPES[(model, size)]
    c = recipe_config("pretrain", model)
    if "depth" in shape:  # dry: a tiny ResNet of the same family
        fresh = (presets.slowfast if model.startswith("slowfast") else presets.slow)(shape["depth"])
        fresh = presets.egoexo_pretrain_heads(fresh)
        fresh.width_per_group = shape["width"]
        fresh.interaction_conv_dim = 16
        fresh.object_classes = 10
        c.model = fresh
    if "mvit_depth" in shape:
        m = mvit_lib.mvit_config_from_model_config(c.model)
        d = shape["mvit_depth"]
        m = dataclasses.replace(
            m,
            depth=d,
            embed_dim=shape["embed_dim"],
            dim_mul=((1, 2.0),),
            head_mul=((1, 2.0),),
            pool_q_stride=tuple((i, 1, 2, 2) if i == 1 else (i, 1, 1, 1) for i in range(d)),
            interaction_conv_dim=16,
            object_classes=10,
        )
        dropout = c.model.dropout_rate
        c.model = mvit_lib.model_config_from_mvit_config(m)
        c.model.dropout_rate = dropout
    frames, crop = shape["frames"], shape["crop"]
    c.model.num_frames = frames
    c.model.crop_size = crop
    c.data.update(num_frames=frames, train_crop_size=crop, test_crop_size=crop)
    c.dtype = dtype
    b = batch or (shape["gpu_batch"] if device == "gpu" else shape["batch"])
    c.batch_size = c.eval_batch_size = b
    if not heads:
        c.model.ego_classes = c.model.object_classes = 0
        c.model.interaction_head = False
        c.model.multi_task = False
        c.loss.update(ce=1.0, ego=0.0, object=0.0, hand=0.0, object_map=0.0)
        for s in ("ego", "object", "interaction"):
            c.teachers[s].source = "none"
    return c
