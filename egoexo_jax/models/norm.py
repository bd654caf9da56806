"""BatchNorm with PySlowFast semantics and device-count-independent statistics."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _stats(x, axes):
    """Per-group mean and biased variance of ``x [G, ..., C]`` over ``axes`` (keepdims)."""
    mean = x.mean(axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def group_batch_norm(x, scale, bias, epsilon):
    """Training-mode BatchNorm of ``x [G, g, ..., C] float32`` with one mean / biased variance per
    group ``G`` and channel; ``scale``, ``bias`` ``[C]``. Returns ``(y, mean, var)``, statistics
    ``[G, 1, ..., 1, C]`` (no gradient flows through them: they only feed the running averages).

    Written as ``y = x * a + b`` with the textbook backward
    ``dx = a * (dy - mean(dy) - x_hat * mean(dy * x_hat))``, so forward and backward each read the
    activations twice and write once; XLA's derivative of the plain formula made 4-6 passes
    (BENCHMARKS.md). ``mean(dy * x_hat)`` is taken as ``rstd * (mean(dy * x) - mean * mean(dy))``;
    against a float64 reference its error stays at the float32 rounding of ``x`` itself (tested up
    to a mean 100 standard deviations from 0).
    """
    return _group_batch_norm_fwd(x, scale, bias, epsilon)[0]


def _group_batch_norm_fwd(x, scale, bias, epsilon):
    axes = tuple(range(1, x.ndim - 1))
    mean, var = _stats(x, axes)
    rstd = jax.lax.rsqrt(var + epsilon)
    a = rstd * scale
    y = x * a + (bias - mean * a)
    return (y, mean, var), (x, mean, rstd, scale)


def _group_batch_norm_bwd(epsilon, res, cotangents):
    x, mean, rstd, scale = res
    dy = cotangents[0]
    axes = tuple(range(1, x.ndim - 1))
    n = x.size // (x.shape[0] * x.shape[-1])
    c = x.shape[-1]
    mean_dy = dy.mean(axis=axes, keepdims=True)
    # mean(dy * x_hat) from mean(dy * x): a plain product, which the reduction reads directly
    # instead of a materialised dy * x_hat (one write and one read of the activations less).
    mean_dy_xhat = rstd * (jnp.mean(dy * x, axis=axes, keepdims=True) - mean * mean_dy)
    dscale = (mean_dy_xhat * n).reshape(-1, c).sum(0)
    dbias = (mean_dy * n).reshape(-1, c).sum(0)
    # a * (dy - mean(dy) - x_hat * mean(dy * x_hat)) as one multiply-add per element.
    a = rstd * scale
    k = a * rstd * mean_dy_xhat
    dx = a * dy - k * x + (k * mean - a * mean_dy)
    return dx, dscale, dbias


group_batch_norm.defvjp(_group_batch_norm_fwd, _group_batch_norm_bwd)


class BatchNorm(nn.Module):
    """BatchNorm over ``[B, ..., C]`` with statistics computed in groups of clips.

    PySlowFast normalises each GPU's 8 clips on their own. Here a training batch is
    split into consecutive groups of ``group_size`` clips, each normalised with its own
    mean and (biased) variance, so the numbers do not depend on how many devices hold
    the batch (a group never straddles two devices when the per-device batch is a
    multiple of ``group_size``). Running statistics follow PyTorch: the update uses the
    unbiased variance and ``running <- (1 - momentum) * running + momentum * batch``
    (``momentum`` = PyTorch's 0.1), averaged over the groups.

    Parameters: ``scale`` (gamma), ``bias`` (beta); ``batch_stats``: ``mean``, ``var``.
    Statistics are computed in float32 whatever the compute dtype.
    """

    group_size: int = 8
    momentum: float = 0.1
    epsilon: float = 1e-5
    zero_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.zeros if self.zero_init else nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xf = x.astype(jnp.float32)
        if train:
            b = x.shape[0]
            g = min(self.group_size, b) if self.group_size > 0 else b
            if b % g:
                raise ValueError(f"batch of {b} clips is not a multiple of bn_group_size={g}")
            grouped = xf.reshape((b // g, g) + x.shape[1:])
            y, mean, var = group_batch_norm(grouped, scale, bias, self.epsilon)
            y = y.reshape(x.shape)
            if not self.is_initializing():
                n = grouped.size // (grouped.shape[0] * c)
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean.reshape(-1, c).mean(0)
                ra_var.value = (1 - m) * ra_var.value + m * unbiased.reshape(-1, c).mean(0)
        else:
            y = (xf - ra_mean.value) * jnp.reciprocal(jnp.sqrt(ra_var.value + self.epsilon)) * scale + bias
        return y.astype(self.dtype)
