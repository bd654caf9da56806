"""BatchNorm with PySlowFast semantics and device-count-independent statistics."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from egoexo_jax import ops


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
    Statistics are computed in float32 whatever the compute dtype; ``kernels.group_batch_norm``
    computes the training-mode normalisation.
    """

    group_size: int = 8
    momentum: float = 0.1
    epsilon: float = 1e-5
    zero_init: bool = False
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        c = x.shape[-1]
        scale = self.param(
            "scale", nn.initializers.zeros if self.zero_init else nn.initializers.ones, (c,), jnp.float32
        )
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
            y, mean, var = self.kernels.group_batch_norm(grouped, scale, bias, self.epsilon, ra_mean.value)
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
