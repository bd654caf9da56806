"""The models' kernels as plain XLA ops: what TPU and GPU run (``model.kernels=xla``).

Every function here is the textbook form of the op, differentiated by JAX; XLA's own
convolution, pooling and fusion passes decide how it runs on the device.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name


def conv3d(x, w, stride, precision=None):
    """3D convolution with padding ``kernel // 2`` and any ``stride``:
    ``x [B, T, H, W, C]``, ``w [kt, kh, kw, C, O]`` -> ``[B, T', H', W', O]``."""
    pad = [(k // 2, k // 2) for k in w.shape[:3]]
    return jax.lax.conv_general_dilated(
        x, w, tuple(stride), pad, precision=precision, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )


def depthwise_conv3d(x, w, stride, precision=None):
    """Depthwise 3D convolution, padding ``kernel // 2``: ``x [N, T, H, W, C]``,
    ``w [kt, kh, kw, 1, C]`` (``nn.Conv``'s kernel with ``feature_group_count = C``) ->
    ``[N, T', H', W', C]``."""
    pad = [(k // 2, k // 2) for k in w.shape[:3]]
    return jax.lax.conv_general_dilated(
        x,
        w,
        tuple(stride),
        pad,
        precision=precision,
        feature_group_count=x.shape[-1],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


def stem_max_pool(x):
    """Max-pool 1x3x3, stride 1x2x2, padding 1 (the ResNet stem's) over ``[B, T, H, W, C]``;
    -inf padding as PyTorch. XLA's gradient (select-and-scatter with ``>=``) sends each window's
    gradient to its first maximum in row-major order, as PyTorch does."""
    return nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))


def group_stats(x):
    """Per-group mean and biased variance of ``x [G, g, ..., C]`` over all axes but the first
    and last, kept as ``[G, 1, ..., 1, C]``."""
    axes = tuple(range(1, x.ndim - 1))
    mean = x.mean(axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


def group_stats_one_pass(x, shift=None):
    """:func:`group_stats` from one read of ``x``: the means of ``d`` and ``d**2`` with
    ``d = x - shift`` in one multi-output reduction. The shift keeps the difference of the two
    moments from cancelling when the mean is far from zero: ``shift [C]`` as given (the model
    passes its running mean, no gradient), else each group's first value per channel (a slice of
    ``x``, which makes XLA:TPU materialise ``x`` once more: the model never relies on it)."""
    axes = tuple(range(1, x.ndim - 1))
    if shift is None:
        shift = x[(slice(None),) + (slice(0, 1),) * len(axes)]
    shift = jax.lax.stop_gradient(shift).astype(x.dtype)
    d = x - shift
    m1 = d.mean(axis=axes, keepdims=True)
    m2 = jnp.square(d).mean(axis=axes, keepdims=True)
    return shift + m1, jnp.maximum(m2 - jnp.square(m1), 0.0)


BN_STATISTICS = "batch_norm_statistics"  # checkpoint name of the BatchNorm statistics (ops.remat_policy)


def group_batch_norm(x, scale, bias, epsilon, shift=None):
    """Training-mode BatchNorm of ``x [G, g, ..., C] float32``, one mean / biased variance per
    group ``G`` and channel; ``scale``, ``bias`` ``[C]``. Returns ``(y, mean, var)``; the
    statistics ``[G, 1, ..., 1, C]`` only feed the running averages (no gradient). ``shift``
    (the running mean) is for the one-pass form; the two-pass statistics need none."""
    del shift
    return _normalise(x, scale, bias, epsilon, group_stats(x))


def _normalise(x, scale, bias, epsilon, stats):
    mean, var = (checkpoint_name(s, BN_STATISTICS) for s in stats)
    y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
    return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def group_batch_norm_one_pass(x, scale, bias, epsilon, shift=None):
    """:func:`group_batch_norm` with :func:`group_stats_one_pass` (``shift [C]``: the running
    mean): the statistics read ``x`` once instead of twice (mean, then squared deviations), which
    on TPU matters most for the thin fast-pathway tensors (BENCHMARKS.md has the estimates)."""
    return _normalise(x, scale, bias, epsilon, group_stats_one_pass(x, shift))
