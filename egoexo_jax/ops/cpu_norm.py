"""Training-mode grouped BatchNorm for XLA:CPU (``model.kernels=cpu``): the formula of
:func:`egoexo_jax.ops.xla.group_batch_norm` with a hand-written backward, because XLA:CPU's
derivative of the plain formula reads and writes the activations more often (BENCHMARKS.md)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from egoexo_jax.ops.xla import group_stats


def group_batch_norm(x, scale, bias, epsilon, shift=None):
    """:func:`_group_batch_norm`; ``shift`` (the running mean, which the one-pass ``xla`` form
    uses to condition its moments) is not needed by these two-pass statistics."""
    del shift
    return _group_batch_norm(x, scale, bias, epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _group_batch_norm(x, scale, bias, epsilon):
    """Training-mode BatchNorm of ``x [G, g, ..., C] float32`` with one mean / biased variance per
    group ``G`` and channel; ``scale``, ``bias`` ``[C]``. Returns ``(y, mean, var)``, statistics
    ``[G, 1, ..., 1, C]`` (no gradient flows through them: they only feed the running averages).

    Written as ``y = x * a + b`` with the textbook backward
    ``dx = a * (dy - mean(dy) - x_hat * mean(dy * x_hat))``, so forward and backward each read the
    activations twice and write once. ``mean(dy * x_hat)`` is taken as
    ``rstd * (mean(dy * x) - mean * mean(dy))``, whose error against float64 stays at the float32
    rounding of ``x`` (tested up to a mean 100 standard deviations from 0).
    """
    return _group_batch_norm_fwd(x, scale, bias, epsilon)[0]


def _group_batch_norm_fwd(x, scale, bias, epsilon):
    mean, var = group_stats(x)
    rstd = jax.lax.rsqrt(var + epsilon)
    a = rstd * scale
    y = x * a + (bias - mean * a)
    return (y, mean, var), (x, mean, rstd, scale)


def _group_batch_norm_bwd(epsilon, res, cotangents):
    del epsilon  # folded into rstd by the forward
    x, mean, rstd, scale = res
    dy = cotangents[0]
    axes = tuple(range(1, x.ndim - 1))
    n = x.size // (x.shape[0] * x.shape[-1])
    c = x.shape[-1]
    mean_dy = dy.mean(axis=axes, keepdims=True)
    # mean(dy * x_hat) from mean(dy * x): a plain product, which the reduction reads directly
    # instead of a materialised dy * x_hat.
    mean_dy_xhat = rstd * (jnp.mean(dy * x, axis=axes, keepdims=True) - mean * mean_dy)
    dscale = (mean_dy_xhat * n).reshape(-1, c).sum(0)
    dbias = (mean_dy * n).reshape(-1, c).sum(0)
    # a * (dy - mean(dy) - x_hat * mean(dy * x_hat)) as one multiply-add per element.
    a = rstd * scale
    k = a * rstd * mean_dy_xhat
    dx = a * dy - k * x + (k * mean - a * mean_dy)
    return dx, dscale, dbias


_group_batch_norm.defvjp(_group_batch_norm_fwd, _group_batch_norm_bwd)
