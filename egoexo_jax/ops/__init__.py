"""Backend kernels of the models: one small set of ops, two implementations.

``xla`` (:mod:`egoexo_jax.ops.xla`) is the plain form every accelerator runs: ``lax`` convolutions,
``nn.max_pool`` and the BatchNorm formula, differentiated by JAX. ``cpu`` (``cpu_conv``,
``cpu_pool``, ``cpu_norm``) computes the same functions in forms that XLA:CPU runs several times
faster (tested equal to the plain forms). A run picks one set once, from ``model.kernels``
(``auto`` | ``xla`` | ``cpu``; ``auto`` is ``cpu`` on the CPU backend only), and the model modules
receive it as a static field, the way flax modules receive ``conv: ModuleDef = nn.Conv``.
``model.precision`` is resolved here too: the matmul / convolution precision the model passes to
XLA (``auto``: exact float32 on CPU, where parity with PyTorch is tested, the platform default
on TPU / GPU).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax

from egoexo_jax.ops import cpu_conv, cpu_norm, cpu_pool, xla

KERNEL_CHOICES = ("auto", "xla", "cpu")
PRECISION_CHOICES = ("auto", "default", "high", "highest")
REMAT_CHOICES = ("none", "dots")
REWRITE_CHOICES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Kernels:
    """One implementation of the models' backend-specific ops (hashable: a static module field).

    - ``conv3d(x [B,T,H,W,C], w [kt,kh,kw,C,O], stride, precision) -> [B,T',H',W',O]``,
      padding ``kernel // 2``;
    - ``depthwise_conv3d(x [N,T,H,W,C], w [kt,kh,kw,1,C], stride, precision) -> [N,T',H',W',C]``,
      padding ``kernel // 2``;
    - ``stem_max_pool(x [B,T,H,W,C])``: 1x3x3 window, stride 1x2x2, padding 1, gradient to the
      first maximum of each window;
    - ``group_batch_norm(x [G,g,...,C], scale, bias, epsilon, shift [C]) -> (y, mean, var)``
      (``shift``: the running mean, a conditioning hint the one-pass statistics use);
    - ``precision``: what the model passes to its matmuls and convolutions (None = JAX default);
    - ``space_to_depth``: the ResNet stems run their 7x7 stride-2 convolution as a 4x4 stride-1
      convolution over the 2x2 space-to-depth fold of the frames (``model.rewrites``).
    """

    name: str
    conv3d: Callable
    depthwise_conv3d: Callable
    stem_max_pool: Callable
    group_batch_norm: Callable
    precision: Optional[jax.lax.Precision] = None
    space_to_depth: bool = False


def _exact_on_cpu(fn):
    """``fn`` without a ``precision`` argument: XLA:CPU computes float32 dots and convolutions
    exactly at every precision setting, so the CPU routes take none."""

    def call(x, w, stride, precision=None):
        del precision
        return fn(x, w, stride)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


XLA = Kernels("xla", xla.conv3d, xla.depthwise_conv3d, xla.stem_max_pool, xla.group_batch_norm)
CPU = Kernels(
    "cpu",
    _exact_on_cpu(cpu_conv.padded_conv),
    _exact_on_cpu(cpu_pool.depthwise_conv3d),
    cpu_pool.stem_max_pool,
    cpu_norm.group_batch_norm,
)
_BY_NAME = {"xla": XLA, "cpu": CPU}
_PRECISIONS = {"default": None, "high": jax.lax.Precision.HIGH, "highest": jax.lax.Precision.HIGHEST}


def backend() -> str:
    """The platform this process computes on (``cpu``, ``gpu``, ``tpu``): the one place that
    asks JAX, so every backend-dependent default follows the same answer."""
    return jax.default_backend()


def resolve_kernels(choice: str) -> str:
    """``auto`` -> ``cpu`` on the CPU backend, else ``xla``; ``xla`` / ``cpu`` unchanged."""
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"model.kernels={choice!r}; expected one of {KERNEL_CHOICES}")
    if choice == "auto":
        return "cpu" if backend() == "cpu" else "xla"
    return choice


def select(kernels: str = "auto", precision: str = "auto", rewrites: str = "auto") -> Kernels:
    """The :class:`Kernels` for ``model.kernels``, ``model.precision`` and ``model.rewrites``."""
    chosen = dataclasses.replace(_BY_NAME[resolve_kernels(kernels)], precision=resolve_precision(precision))
    if chosen.name == "xla" and resolve_rewrites(rewrites):
        chosen = dataclasses.replace(chosen, group_batch_norm=xla.group_batch_norm_one_pass, space_to_depth=True)
    return chosen


def resolve_rewrites(choice: str = "auto") -> bool:
    """Whether the ``xla`` kernels use the exact TPU rewrites (space-to-depth stems, one-pass
    BatchNorm statistics) for ``model.rewrites``: ``auto`` turns them on for the TPU backend only
    (XLA:TPU's cost model favours them; on CPU the ``cpu`` kernels run, and GPU keeps the plain
    forms until measured there)."""
    if choice not in REWRITE_CHOICES:
        raise ValueError(f"model.rewrites={choice!r}; expected one of {REWRITE_CHOICES}")
    if choice == "auto":
        return backend() == "tpu"
    return choice == "on"


def resolve_precision(choice: str = "auto") -> Optional[jax.lax.Precision]:
    """``lax.Precision`` for ``model.precision`` (None = JAX's default): ``auto`` is ``highest``
    on the CPU backend (free there, and what parity with PyTorch is tested at), else the
    platform default (bfloat16 passes for float32 matmuls on TPU, TF32 on recent GPUs)."""
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"model.precision={choice!r}; expected one of {PRECISION_CHOICES}")
    if choice == "auto":
        choice = "highest" if backend() == "cpu" else "default"
    return _PRECISIONS[choice]


def remat_policy(choice: str = "none"):
    """``jax.checkpoint`` policy for ``model.remat`` (None: no rematerialisation). ``dots`` keeps
    convolution / matmul outputs and the BatchNorm statistics for the backward pass and recomputes
    the elementwise rest (normalisation, activations) there, where XLA fuses it into its consumers."""
    if choice not in REMAT_CHOICES:
        raise ValueError(f"model.remat={choice!r}; expected one of {REMAT_CHOICES}")
    if choice == "none":
        return None
    return jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, jax.checkpoint_policies.save_only_these_names(xla.BN_STATISTICS)
    )
