"""The ResNet stem's 7x7 stride-2 convolution as a 4x4 stride-1 convolution over a 2x2
space-to-depth fold of the frames (``model.rewrites``; exact, same parameters).

Why: over 3 input channels the 7x7 stride-2 convolution fills a small part of TPU's 128-lane
matrix unit; over the fold (12 channels, a quarter of the positions, no stride) it fills four
times more. The weight keeps its official shape ``[kt, 7, 7, C, O]`` and is rearranged at trace
time (:func:`fold_kernel`), so parameters, checkpoints and the PyTorch converter are unchanged.

Math, per spatial axis (kernel 7, stride 2, padding 3): ``y[i] = sum_k x[2i + k - 3] w[k]``.
Pad the kernel with one zero tap in front (``w'[k + 1] = w[k]``, 8 taps), write a tap as
``k' = 2a + b`` (``a`` in 0..3, ``b`` in 0..1) and fold the input ``z[j, b] = x[2j + b]``; then
``y[i] = sum_a sum_b z[i + a - 2, b] w'[2a + b]``: a stride-1, 4-tap convolution over ``z`` with
padding (2, 1). An odd ``H`` / ``W`` is zero-padded to even first (the padded row / column is where
the plain convolution reads its zero padding), so the output keeps the plain size ``ceil(H / 2)``.
The temporal axis is left alone: the stems' temporal stride is 1, so there is nothing to fold.

Channel order of the fold: ``(row parity p, column parity q, channel c)`` -> ``(2p + q) * C + c``,
the same in :func:`fold` (host numpy or device jax) and :func:`fold_kernel`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

STEM_KERNEL = 7  # spatial kernel of the ResNet stems (stride 2, padding 3)


def folded_shape(shape) -> tuple:
    """``[..., H, W, C]`` -> ``[..., ceil(H / 2), ceil(W / 2), 4C]``: the shape :func:`fold` returns."""
    *lead, h, w, c = shape
    return (*lead, -(-h // 2), -(-w // 2), 4 * c)


def fold(x):
    """2x2 space-to-depth of ``x [..., H, W, C]`` -> ``[..., ceil(H/2), ceil(W/2), 4C]``, channel
    ``(2p + q) * C + c`` = ``x[..., 2i + p, 2j + q, c]`` (zero where an odd H / W ends).

    A numpy array (the host pipeline) gives a numpy array of the same dtype, written in one copy;
    a jax array (traced on device) gives a jax array."""
    if isinstance(x, np.ndarray):
        return _fold_numpy(x)
    x = jnp.asarray(x)
    *lead, h, w, c = x.shape
    if h % 2 or w % 2:
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, h % 2), (0, w % 2), (0, 0)])
    h2, w2 = -(-h // 2), -(-w // 2)
    n = len(lead)
    x = x.reshape(*lead, h2, 2, w2, 2, c)
    x = jnp.transpose(x, (*range(n), n, n + 2, n + 1, n + 3, n + 4))  # [..., h2, w2, p, q, c]
    return x.reshape(*lead, h2, w2, 4 * c)


def _fold_numpy(x: np.ndarray) -> np.ndarray:
    """:func:`fold` on the host in one copy: even H and W as one transposing copy of
    ``x [..., H/2, 2, W/2, 2C]`` (each pixel pair ``2C`` values stays contiguous); odd ones as four
    strided parity copies into a zero-filled output."""
    *lead, h, w, c = x.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    if h % 2 == 0 and w % 2 == 0:
        pairs = x.reshape(*lead, h2, 2, w2, 2 * c)  # [..., i, p, j, (q, c)]
        return np.ascontiguousarray(np.swapaxes(pairs, -3, -2)).reshape(*lead, h2, w2, 4 * c)
    out = np.zeros((*lead, h2, w2, 2, 2, c), x.dtype)
    for p in range(2):
        for q in range(2):
            part = x[..., p::2, q::2, :]
            out[..., : part.shape[-3], : part.shape[-2], p, q, :] = part
    return out.reshape(*lead, h2, w2, 4 * c)


def fold_kernel(w):
    """Stem weight ``[kt, 7, 7, C, O]`` -> the equivalent 4x4 weight ``[kt, 4, 4, 4C, O]`` over the
    fold (one zero tap in front per spatial axis, tap ``2a + b`` -> position ``a``, parity ``b``);
    traced with the model, so gradients reach the official-shape weight."""
    kt, kh, kw, c, o = w.shape
    if (kh, kw) != (STEM_KERNEL, STEM_KERNEL):
        raise ValueError(f"fold_kernel: weight shape {tuple(w.shape)}; expected [kt, 7, 7, C, O] (a ResNet stem)")
    w = jnp.pad(w, [(0, 0), (1, 0), (1, 0), (0, 0), (0, 0)])  # [kt, 8, 8, C, O]
    w = w.reshape(kt, 4, 2, 4, 2, c, o)  # [kt, a_h, p, a_w, q, C, O]
    w = jnp.transpose(w, (0, 1, 3, 2, 4, 5, 6))  # [kt, a_h, a_w, p, q, C, O]
    return w.reshape(kt, 4, 4, 4 * c, o)


def stem_conv(x, w, precision=None):
    """The stem convolution ``conv3d(frames, w, stride (1, 2, 2), padding kernel // 2)`` for
    ``w [kt, 7, 7, C, O]``, computed as a stride-1 4x4 convolution over the fold.

    ``x``: the frames ``[B, T, H, W, C]`` (folded here, on device) or their fold
    ``[B, T, ceil(H/2), ceil(W/2), 4C]`` (:func:`fold` on the host). Returns
    ``[B, T, ceil(H/2), ceil(W/2), O]``.
    """
    kt, kh, kw, c, _ = w.shape
    if x.ndim != 5 or x.shape[-1] not in (c, 4 * c) or (kh, kw) != (STEM_KERNEL, STEM_KERNEL):
        raise ValueError(
            f"stem_conv: input shape {tuple(x.shape)} with weight shape {tuple(w.shape)}; expected frames "
            f"[B, T, H, W, {c}] or their 2x2 space-to-depth fold [B, T, ceil(H/2), ceil(W/2), {4 * c}], "
            "and a [kt, 7, 7, C, O] weight"
        )
    if x.shape[-1] == c:
        x = fold(x)
    pad = [(kt // 2, kt // 2), (2, 1), (2, 1)]
    return jax.lax.conv_general_dilated(
        x, fold_kernel(w), (1, 1, 1), pad, precision=precision, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
