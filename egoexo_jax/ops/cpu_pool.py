"""Pooling-shaped kernels for XLA:CPU (``model.kernels=cpu``): the ResNet stem's max-pool with a
strided-compare gradient and the MViT attention pooling (depthwise) conv as a tap sum. Same
results as :mod:`egoexo_jax.ops.xla` (``tests/test_ops.py``); measurements in BENCHMARKS.md."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax.ops import xla


@jax.custom_vjp
def stem_max_pool(x):
    """Max-pool 1x3x3, stride 1x2x2, padding 1 (the stem's) over ``[B, T, H, W, C]``.

    The gradient goes to the first maximum of each window in row-major order, as PyTorch's (ties
    after a ReLU are common), computed with 9 strided compares whose per-tap gradients are summed
    within each (row, column) parity class of the padded input: XLA:CPU's select-and-scatter is
    several times slower.
    """
    return xla.stem_max_pool(x)


def _stem_max_pool_fwd(x):
    y = xla.stem_max_pool(x)
    return y, (x, y)


def _stem_max_pool_bwd(res, dy):
    x, y = res
    b, t, h, w, c = x.shape
    oh, ow = y.shape[2:4]
    ph, pw = 2 * oh + 1 - h, 2 * ow + 1 - w  # bottom / right padding that the windows reach
    xp = jnp.pad(x, [(0, 0), (0, 0), (1, ph), (1, pw), (0, 0)], constant_values=-jnp.inf)
    taken = jnp.zeros(y.shape, bool)
    g = {}
    for i in range(3):
        for j in range(3):
            window = jax.lax.slice(xp, (0, 0, i, j, 0), (b, t, i + 2 * oh - 1, j + 2 * ow - 1, c), (1, 1, 2, 2, 1))
            hit = (window == y) & ~taken
            taken = taken | hit
            g[i, j] = jnp.where(hit, dy, 0)  # goes to padded position (2 r + i, 2 s + j)

    def at(i, j):  # g[i, j] on the [oh + 1, ow + 1] grid of its (row, column) parity class
        return jnp.pad(g[i, j], [(0, 0), (0, 0), (i // 2, 1 - i // 2), (j // 2, 1 - j // 2), (0, 0)])

    even_even = at(0, 0) + at(0, 2) + at(2, 0) + at(2, 2)
    even_odd = at(0, 1) + at(2, 1)
    odd_even = at(1, 0) + at(1, 2)
    odd_odd = at(1, 1)
    dxp = jnp.stack([jnp.stack([even_even, even_odd], axis=4), jnp.stack([odd_even, odd_odd], axis=4)], axis=3)
    dxp = dxp.reshape(b, t, 2 * oh + 2, 2 * ow + 2, c)  # padded rows 2 r + parity, same for columns
    return (dxp[:, :, 1 : 1 + h, 1 : 1 + w],)


stem_max_pool.defvjp(_stem_max_pool_fwd, _stem_max_pool_bwd)


def depthwise_conv3d(x, w, stride):
    """Depthwise 3D convolution, padding ``kernel // 2``: ``x [N, T, H, W, C]``,
    ``w [kt, kh, kw, 1, C]`` -> ``[N, T', H', W', C]``, as the sum over the ``kt * kh * kw`` taps
    of a strided slice of the padded input times that tap's per-channel weight (one fused
    elementwise pass; gradients by autodiff). XLA:CPU runs grouped 3D convolutions on slow
    generic code."""
    kernel = w.shape[:3]
    n, c = x.shape[0], x.shape[-1]
    xp = jnp.pad(x, [(0, 0)] + [(k // 2, k // 2) for k in kernel] + [(0, 0)])
    out = [(size + 2 * (k // 2) - k) // s + 1 for size, k, s in zip(x.shape[1:4], kernel, stride)]
    y = None
    for tap in np.ndindex(*kernel):
        limit = (n,) + tuple(i + s * (o - 1) + 1 for i, s, o in zip(tap, stride, out)) + (c,)
        term = jax.lax.slice(xp, (0,) + tap + (0,), limit, (1,) + tuple(stride) + (1,)) * w[tap + (0,)]
        y = term if y is None else y + term
    return y
