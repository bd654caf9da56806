"""3D convolutions for XLA:CPU (``model.kernels=cpu``): the same convolution as
:func:`egoexo_jax.ops.xla.conv3d`, routed to forms that XLA:CPU runs on its fast paths.

XLA:CPU runs 3D convolutions, and the kernel gradients of 2D ones, on slow generic code; 2D
convolutions and matmuls are fast. :func:`padded_conv` therefore writes each convolution of the
3D ResNets as 2D convolutions over frames, one matmul over temporal taps, or patch matmuls, with
hand-written kernel gradients where XLA's were slow. Every route gives the plain convolution up
to summation order (``tests/test_ops.py``); the measurements behind each choice are in
BENCHMARKS.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Maps of at most this many output positions count as small: there 3x3 convs run as patch matmuls
# (forward and kernel gradient), see _patch_matmul.
_SMALL_MAP = 64
# Strided spatial convs onto fewer output positions than this use space-to-depth: XLA:CPU's 2D
# convolution gradients are slow on tiny output maps.
_MIN_FRAME_CONV_MAP = 9


def _small_wide(channels, out_positions):
    """Whether a stride-1 spatial conv runs as one matmul on patches (wide, small maps: slow
    res4 / res5, the interaction head), where XLA:CPU's convolution was slower."""
    return channels >= 128 and out_positions <= _SMALL_MAP


def _patch_matmul(frames_shape, kh, kw):
    """:func:`_small_wide` for a VALID ``kh x kw`` conv on ``[N, H, W, C]`` frames."""
    _, h, w, c = frames_shape
    return _small_wide(c, (h - kh + 1) * (w - kw + 1))


def _conv3d_by_frames(x, w):
    """Forward of :func:`valid_conv3d`: a sum over the ``kt`` temporal taps of 2D convolutions on
    ``B * T'`` frames (a matmul when ``kh = kw = 1``)."""
    kt, kh, kw = w.shape[:3]
    b, t = x.shape[:2]
    out_t = t - kt + 1
    y = None
    for i in range(kt):
        xi = jax.lax.slice_in_dim(x, i, i + out_t, axis=1)
        xi = xi.reshape((b * out_t,) + xi.shape[2:])
        if kh == 1 and kw == 1:
            yi = jnp.einsum("nhwc,co->nhwo", xi, w[i, 0, 0])
        elif _patch_matmul(xi.shape, kh, kw):
            oh, ow = xi.shape[1] - kh + 1, xi.shape[2] - kw + 1
            cols = _spatial_patches(xi, kh, kw, oh, ow)
            yi = jnp.einsum("nhwk,ko->nhwo", cols, w[i].reshape(-1, w.shape[-1]))
        else:
            yi = jax.lax.conv_general_dilated(xi, w[i], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = yi if y is None else y + yi
    return y.reshape((b, out_t) + y.shape[1:])


def _spatial_patches(a, kh, kw, out_h, out_w, offset_h=0, offset_w=0, sign=1):
    """``[..., H, W, C] -> [..., out_h, out_w, kh * kw * C]``: the ``(i, j)`` window shifts of
    ``a`` stacked on the channels, ``(i, j, c)`` order; ``sign=-1`` shifts the other way."""
    if kh == 1 and kw == 1:
        return a
    n = a.ndim
    parts = []
    for i in range(kh):
        for j in range(kw):
            start = [0] * n
            start[n - 3], start[n - 2] = offset_h + sign * i, offset_w + sign * j
            limit = list(a.shape)
            limit[n - 3], limit[n - 2] = start[n - 3] + out_h, start[n - 2] + out_w
            parts.append(jax.lax.slice(a, start, limit))
    return jnp.concatenate(parts, axis=-1)


def _conv3d_kernel_grad(x, dy, kernel_shape):
    """Gradient of :func:`valid_conv3d` with respect to its kernel, as one matmul per temporal tap
    against patches built once for every tap.

    Shapes: ``x [B, T, H, W, C]``, ``dy [B, T', H', W', O]`` -> ``[kt, kh, kw, C, O]``. The patches
    (``kh * kw`` shifted copies) are taken of whichever of ``x`` and ``dy`` has fewer channels
    (always ``x`` on maps of <= 64 positions), and the smaller of the other operand and the result
    is transposed, so every matmul reads its long contraction dimension contiguously.
    """
    kt, kh, kw, c, o = kernel_shape
    b, t, h, w_, _ = x.shape
    out_t, oh, ow = dy.shape[1:4]
    rows = b * out_t * oh * ow
    if c <= o or (kh == 1 and kw == 1) or oh * ow <= _SMALL_MAP:
        cols = _spatial_patches(x, kh, kw, oh, ow)  # [B, T, H', W', kh kw C]
        tap = lambda k: jax.lax.slice_in_dim(cols, k, k + out_t, axis=1).reshape(-1, kh * kw * c)
        if rows <= kh * kw * c:  # few positions, wide kernel: transpose the patches, not dW
            d2 = dy.reshape(-1, o)
            return jnp.stack([tap(k).T @ d2 for k in range(kt)]).reshape(kt, kh, kw, c, o)
        dyt = dy.reshape(-1, o).T  # [O, B T' H' W']
        taps = [dyt @ tap(k) for k in range(kt)]  # [O, kh kw C] each
        return jnp.stack(taps).reshape(kt, o, kh, kw, c).transpose(0, 2, 3, 4, 1)
    # Patches of dy: D[h, w, (i, j, o)] = dy[h - i, w - j, o] (zero outside), over x's H x W grid.
    dyp = jnp.pad(dy, [(0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)])
    cols = _spatial_patches(dyp, kh, kw, h, w_, kh - 1, kw - 1, sign=-1).reshape(-1, kh * kw * o)
    xt = x.transpose(4, 0, 1, 2, 3)  # [C, B, T, H, W]
    taps = [jax.lax.slice_in_dim(xt, k, k + out_t, axis=2).reshape(c, -1) @ cols for k in range(kt)]
    return jnp.stack(taps).reshape(kt, c, kh, kw, o).transpose(0, 2, 3, 1, 4)


@jax.custom_vjp
def valid_conv3d(x, w):
    """Stride-1 VALID 3D convolution ``[B, T, H, W, C] x [kt, kh, kw, C, O] -> [B, T', H', W', O]``
    as a sum over the ``kt`` temporal taps of 2D convolutions on ``B * T'`` frames (a matmul when
    ``kh = kw = 1``), with the kernel gradient as matmuls on patches (:func:`_conv3d_kernel_grad`):
    XLA:CPU's 3D convolution and its 2D kernel gradients run on slow generic code."""
    return _conv3d_by_frames(x, w)


def _valid_conv3d_fwd(x, w):
    return _conv3d_by_frames(x, w), (x, w)


def _valid_conv3d_bwd(res, dy):
    x, w = res
    dx = jax.vjp(lambda a: _conv3d_by_frames(a, w), x)[1](dy)[0]
    return dx, _conv3d_kernel_grad(x, dy, w.shape).astype(w.dtype)


valid_conv3d.defvjp(_valid_conv3d_fwd, _valid_conv3d_bwd)


def _shift_time(a, d):
    """``out[:, t] = a[:, t + d]``, zero where ``t + d`` falls outside ``[0, T)``."""
    t = a.shape[1]
    if d == 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, d) if d > 0 else (-d, 0)
    return jnp.pad(jax.lax.slice_in_dim(a, max(d, 0), t + min(d, 0), axis=1), pad)


def _sum_shifted_taps(z):
    """``[B, T, H, W, kt, O] -> [B, T, H, W, O]``: ``y[t] = sum_i z_i[t + i - kt // 2]``, the
    per-tap outputs of a temporal conv (padding ``kt // 2``) shifted in time and summed."""
    kt = z.shape[-2]
    return sum(_shift_time(z[..., i, :], i - kt // 2) for i in range(kt))


def _tap_cotangents(dy, kt):
    """Cotangents of the ``kt`` per-tap outputs summed by :func:`_sum_shifted_taps`:
    ``y[t] = sum_i z_i[t + i - kt // 2]``, so ``dz_i[s] = dy[s - i + kt // 2]``.
    ``[B, T, H, W, O] -> [B, T, H, W, kt, O]``."""
    return jnp.stack([_shift_time(dy, kt // 2 - i) for i in range(kt)], axis=-2)


def _temporal_conv(x, w):
    kt, o = w.shape[0], w.shape[-1]
    z = jnp.einsum("bthwc,cn->bthwn", x, w[:, 0, 0].transpose(1, 0, 2).reshape(x.shape[-1], kt * o))
    return _sum_shifted_taps(z.reshape(z.shape[:-1] + (kt, o)))


@jax.custom_vjp
def temporal_conv(x, w):
    """Temporal convolution, kernel ``[kt, 1, 1]``, stride 1, padding ``kt // 2``:
    ``[B, T, H, W, C] x [kt, 1, 1, C, O] -> [B, T, H, W, O]``.

    One matmul of the unpadded input with every tap (``[C, kt * O]``), then the tap outputs shifted
    in time and summed; the backward is one matmul each for the input and the kernel gradient, so
    no shifted input slices are copied.
    """
    return _temporal_conv(x, w)


def _temporal_conv_fwd(x, w):
    return _temporal_conv(x, w), (x, w)


def _temporal_conv_bwd(res, dy):
    x, w = res
    kt, c, o = w.shape[0], x.shape[-1], w.shape[-1]
    dz = _tap_cotangents(dy, kt)  # [B, T, H, W, kt, O]
    dzm, xm = dz.reshape(-1, kt * o), x.reshape(-1, c)
    wm = w[:, 0, 0].transpose(1, 0, 2).reshape(c, kt * o)  # [C, kt O], as forward
    dx = (dzm @ wm.T).reshape(x.shape)
    # Few positions, wide weight (slow res4 / res5): transposing the activations is cheaper than
    # transposing a [kt O, C] kernel gradient into the parameter layout.
    n = xm.shape[0]
    if n * c <= n * kt * o + c * kt * o:
        dw = (xm.T @ dzm).reshape(c, kt, o).transpose(1, 0, 2)
    else:
        dw = (dzm.T @ xm).reshape(kt, o, c).transpose(0, 2, 1)
    return dx, dw[:, None, None].astype(w.dtype)


temporal_conv.defvjp(_temporal_conv_fwd, _temporal_conv_bwd)


def frame_conv(x, w, stride):
    """``conv(x, w)`` with padding ``kernel // 2``, temporal stride 1 and spatial ``stride``, as
    2D convolutions over the ``B * T`` frames with the ``kt`` temporal taps stacked on the output
    channels (kernel ``[kh, kw, C, kt * O]``), the tap outputs shifted in time and summed (as in
    :func:`temporal_conv`); gradients by autodiff. XLA:CPU runs 2D convolutions and their
    gradients on its fast path once YNNPACK is kept off convolutions (``egoexo_jax.hostenv``).

    Args: ``x [B, T, H, W, C]``, ``w [kt, kh, kw, C, O]``, ``stride`` (spatial, ``(sh, sw)``);
    returns ``[B, T, H', W', O]``.
    """
    kt, kh, kw, c, o = w.shape
    b, t = x.shape[:2]
    w2 = w.transpose(1, 2, 3, 0, 4).reshape(kh, kw, c, kt * o)
    z = jax.lax.conv_general_dilated(
        x.reshape((b * t,) + x.shape[2:]),
        w2,
        tuple(stride),
        [(kh // 2, kh // 2), (kw // 2, kw // 2)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return _sum_shifted_taps(z.reshape((b, t) + z.shape[1:3] + (kt, o)))


def padded_conv(x, w, stride):
    """``conv(x, w)`` with padding ``kernel // 2`` and any ``stride``, routed to the fastest of the
    equivalent forms on XLA:CPU (all give the convolution up to summation order):

    - stride-1 ``kt x 1 x 1`` convs: :func:`temporal_conv` (one matmul for all taps);
    - spatial kernels at temporal stride 1: :func:`frame_conv` (2D convolutions), except stride-1
      convs on small wide maps (>= 128 channels, <= ``_SMALL_MAP`` positions: slow res4 / res5, the
      interaction head), which are one matmul on patches (:func:`valid_conv3d`), and outputs of
      fewer than ``_MIN_FRAME_CONV_MAP`` positions;
    - the rest (1x1x1 convs, temporal strides, tiny maps): :func:`space_to_depth_conv`.

    Args: ``x [B, T, H, W, C]``, ``w [kt, kh, kw, C, O]``; returns ``[B, T', H', W', O]``.
    """
    kernel, stride = tuple(w.shape[:3]), tuple(stride)
    if kernel[1:] == (1, 1) and stride == (1, 1, 1) and kernel[0] > 1:
        return temporal_conv(x, w)
    if kernel[1:] != (1, 1) and stride[0] == 1:
        out_positions = -(-x.shape[2] // stride[1]) * -(-x.shape[3] // stride[2])
        patches = stride == (1, 1, 1) and _small_wide(x.shape[-1], out_positions)
        if out_positions >= _MIN_FRAME_CONV_MAP and not patches:
            return frame_conv(x, w, stride[1:])
    return space_to_depth_conv(x, w, stride)


def space_to_depth_conv(x, w, stride):
    """``conv(x, w)`` with padding ``kernel // 2`` and ``stride`` as a stride-1 VALID convolution
    (:func:`valid_conv3d`).

    Per dimension: kernel 1 -> plain subsampling; otherwise the padded input is folded into
    ``stride`` phases moved to the channels (space-to-depth) and the kernel, zero-padded to a
    multiple of the stride, is folded the same way (``ceil(k / s)`` taps over ``s * C`` channels).
    Exactly the strided convolution up to summation order, with forward and both gradients
    stride-1 convolutions.

    Args: ``x [B, T, H, W, C]``, ``w [kt, kh, kw, C, O]``; returns ``[B, T', H', W', O]``.
    """
    kernel = tuple(w.shape[:3])
    pads, phases, taps = [], [], []
    for d, (k, s) in enumerate(zip(kernel, stride)):
        if s > 1 and k == 1:
            x = jax.lax.slice_in_dim(x, 0, None, s, axis=1 + d)
            s = 1
        length = x.shape[1 + d]
        p = k // 2
        out = (length + 2 * p - k) // s + 1
        kk = -(-k // s)  # taps after folding
        total = s * (out - 1 + kk)
        pads.append((p, total - length - p, 0))
        phases.append(s)
        taps.append(kk)
        w = jnp.pad(w, [(0, s * kk - k) if i == d else (0, 0) for i in range(5)])
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + pads + [(0, 0, 0)])
    if any(s > 1 for s in phases):
        b, c = x.shape[0], x.shape[-1]
        (st, sh, sw), (kt, kh, kw) = phases, taps
        x = x.reshape(b, x.shape[1] // st, st, x.shape[2] // sh, sh, x.shape[3] // sw, sw, c)
        x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, x.shape[1], x.shape[3], x.shape[5], st * sh * sw * c)
        o = w.shape[-1]
        w = w.reshape(kt, st, kh, sh, kw, sw, c, o).transpose(0, 2, 4, 1, 3, 5, 6, 7)
        w = w.reshape(kt, kh, kw, st * sh * sw * c, o)
    return valid_conv3d(x, w)
