"""MViT building blocks with PySlowFast numerics: initialisers, stem, pooling attention, MLP.

Channels-last throughout (``B`` batch, ``N`` heads, ``L`` tokens, ``C`` width). The pooling
attention is the ``MODE=conv``, ``POOL_FIRST=False`` variant with a fused ``qkv`` projection
and, for v2, decomposed relative position biases and residual pooling. Flax submodule names
mirror the PyTorch ``state_dict`` names (``qkv``, ``pool_q``, ``norm_q``, ``rel_pos_h`` ...).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax import ops
from egoexo_jax.models.mvit_config import BlockSpec

LN_EPS = 1e-6


# --------------------------------------------------------------------------------------
# Initialisers (docs/method.md#mvit-initialisation)
# --------------------------------------------------------------------------------------
def trunc_normal_init(std: float = 0.02, bound: float = 2.0):
    """torch ``trunc_normal_(std=std)``: N(0, std^2) truncated at the *absolute* bounds
    +-``bound`` (+-100 sigma for std 0.02, i.e. practically untruncated)."""

    def init(key, shape, dtype=jnp.float32):
        lim = bound / std
        return (jax.random.truncated_normal(key, -lim, lim, shape, jnp.float32) * std).astype(dtype)

    return init


def torch_conv_bias_init(fan_in: int):
    """PyTorch's default Conv bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -b, b)

    return init


W_INIT = trunc_normal_init(0.02)  # every MViT Linear / Conv weight and raw parameter
B_INIT = nn.initializers.constant(0.02)  # every MViT Linear / LayerNorm bias


def dense(features, name, dtype, precision, use_bias=True, scale=1.0):
    """An MViT Linear (trunc-normal 0.02 weight, bias 0.02), both scaled by ``scale``."""
    w_init, b_init = W_INIT, B_INIT
    if scale != 1.0:
        w_init = lambda k, s, d=jnp.float32: W_INIT(k, s, d) * scale  # noqa: E731
        b_init = nn.initializers.constant(0.02 * scale)
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=w_init,
        bias_init=b_init,
        precision=precision,
        dtype=dtype,
        name=name,
    )


def layer_norm(name, dtype):
    """An MViT LayerNorm (eps 1e-6, bias 0.02)."""
    # Two-pass variance (as torch) rather than E[x^2] - E[x]^2, for float32 parity.
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, bias_init=B_INIT, dtype=dtype, name=name)


# --------------------------------------------------------------------------------------
# Relative position helpers (static index arithmetic in numpy, gathers in jnp)
# --------------------------------------------------------------------------------------
def _resize_table(table: jnp.ndarray, length: int) -> jnp.ndarray:
    """``F.interpolate(mode="linear", align_corners=False)`` of a ``[L, C]`` table along L."""
    src_len = table.shape[0]
    if src_len == length:
        return table
    scale = src_len / length
    pos = np.maximum((np.arange(length) + 0.5) * scale - 0.5, 0.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src_len - 1)
    lam = jnp.asarray((pos - lo).astype(np.float32))[:, None]
    return table[lo] * (1.0 - lam) + table[hi] * lam


def _rel_index(q_len: int, k_len: int) -> np.ndarray:
    """Rescaled relative distances ``[q_len, k_len]`` (int), float32 arithmetic as torch."""
    q_ratio = np.float32(max(k_len / q_len, 1.0))
    k_ratio = np.float32(max(q_len / k_len, 1.0))
    dist = np.arange(q_len, dtype=np.float32)[:, None] * q_ratio - (
        np.arange(k_len, dtype=np.float32)[None, :] * k_ratio
    )
    dist = dist + np.float32((k_len - 1) * float(max(q_len / k_len, 1.0)))
    return dist.astype(np.int64)  # truncation toward zero, as ``.long()``


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (rate ``rate``).

    Active only with ``train=True`` and a ``'dropout'`` rng; kept samples are scaled by
    ``1 / (1 - rate)``. ``x``: ``[B, ...]``.
    """

    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        u = jax.random.uniform(self.make_rng("dropout"), (x.shape[0],) + (1,) * (x.ndim - 1))
        mask = jnp.floor(keep + u).astype(x.dtype)
        return x / keep * mask


class PatchEmbed(nn.Module):
    """Conv3d stem: ``[B, T, H, W, Cin] -> ([B, L, C], (T', H', W'))``."""

    dim_out: int
    kernel: tuple
    stride: tuple
    padding: tuple
    in_chans: int = 3
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        fan_in = self.in_chans * int(np.prod(self.kernel))
        y = nn.Conv(
            self.dim_out,
            tuple(self.kernel),
            strides=tuple(self.stride),
            padding=[(p, p) for p in self.padding],
            use_bias=True,
            precision=self.precision,
            kernel_init=W_INIT,
            bias_init=torch_conv_bias_init(fan_in),
            dtype=self.dtype,
            name="proj",
        )(x)
        b, t, h, w, c = y.shape
        return y.reshape(b, t * h * w, c), (t, h, w)


class DepthwiseConv3D(nn.Module):
    """The attention pooling conv: ``nn.Conv(C, kernel, stride, padding=kernel // 2,
    feature_group_count=C, use_bias=False)``'s parameter (``kernel [kt, kh, kw, 1, C]``, same name
    and init), computed by ``kernels.depthwise_conv3d``."""

    kernel_size: tuple
    strides: tuple
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        w = self.param("kernel", W_INIT, (*self.kernel_size, 1, c), jnp.float32)
        return self.kernels.depthwise_conv3d(
            x.astype(self.dtype), w.astype(self.dtype), self.strides, self.kernels.precision
        )


def pool_tokens(x, thw, pool, has_cls):
    """Apply ``pool`` (a channels-last 3-D op) to the token grid, cls token untouched.

    Args:
      x: ``[B, N, L, C]`` tokens per head (``L = [1 +] T*H*W``).
      thw: ``(T, H, W)`` of the non-cls tokens.
      pool: callable ``[B*N, T, H, W, C] -> [B*N, T', H', W', C]``.
    Returns:
      ``([B, N, L', C], (T', H', W'))``.
    """
    b, n, _, c = x.shape
    if has_cls:
        cls_tok, x = x[:, :, :1], x[:, :, 1:]
    y = pool(x.reshape(b * n, *thw, c))
    new_thw = tuple(y.shape[1:4])
    y = y.reshape(b, n, -1, c)
    if has_cls:
        y = jnp.concatenate([cls_tok, y], axis=2)
    return y, new_thw


class MultiScaleAttention(nn.Module):
    """Pooling attention (``MODE=conv``, ``POOL_FIRST=False``).

    ``x [B, N, dim] -> qkv Linear(dim, 3*att_dim) -> q, k, v [B, heads, N, head_dim]``;
    each is pooled by a depthwise Conv3d over ``head_dim`` channels shared by all heads
    (no bias, padding ``kernel // 2``) followed by LayerNorm(head_dim) over all tokens
    including cls (which bypasses the conv). Scores ``(q * head_dim**-0.5) k^T`` plus the
    v2 decomposed relative position terms; output ``[B, Nq, att_dim]`` after ``proj``.
    """

    spec: BlockSpec
    att_dim: int
    qkv_bias: bool
    has_cls: bool
    rel_pos_spatial: bool
    rel_pos_temporal: bool
    rel_pos_zero_init: bool
    residual_pooling: bool
    drop_rate: float
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    def _pool_layer(self, kernel, stride, suffix, head_dim):
        """(conv, norm) for one of q/k/v, or (None, None) when PySlowFast skips it."""
        if len(kernel) == 0 or (np.prod(kernel) == 1 and np.prod(stride) == 1):
            return None, None
        stride = tuple(stride) if len(stride) > 0 else (1, 1, 1)
        conv = DepthwiseConv3D(tuple(kernel), stride, self.dtype, self.kernels, name=f"pool_{suffix}")
        return conv, layer_norm(f"norm_{suffix}", self.dtype)

    @nn.compact
    def __call__(self, x, thw, train: bool):
        s = self.spec
        heads = s.num_heads
        head_dim = self.att_dim // heads
        b, n, _ = x.shape

        precision = self.kernels.precision
        qkv = dense(3 * self.att_dim, "qkv", self.dtype, precision, use_bias=self.qkv_bias)(x)
        qkv = qkv.reshape(b, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        pools = {}
        for name, kern, strd in (
            ("q", s.kernel_q, s.stride_q),
            ("k", s.kernel_kv, s.stride_kv),
            ("v", s.kernel_kv, s.stride_kv),
        ):
            pools[name] = self._pool_layer(kern, strd, name, head_dim)

        def pool(t, name):
            conv, norm = pools[name]
            if conv is None:
                return t, tuple(thw)
            t, new_thw = pool_tokens(t, thw, conv, self.has_cls)
            return norm(t), new_thw

        q, q_thw = pool(q, "q")
        k, k_thw = pool(k, "k")
        v, _ = pool(v, "v")

        attn = jnp.einsum("bnqc,bnkc->bnqk", q * (head_dim**-0.5), k, precision=precision)

        if self.rel_pos_spatial or self.rel_pos_temporal:
            attn = self._add_rel_pos(attn, q, q_thw, k_thw, head_dim)

        attn = jax.nn.softmax(attn.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bnqk,bnkc->bnqc", attn, v, precision=precision)
        if self.residual_pooling:
            if self.has_cls:
                out = out.at[:, :, 1:].add(q[:, :, 1:])
            else:
                out = out + q
        out = out.transpose(0, 2, 1, 3).reshape(b, -1, self.att_dim)
        out = dense(self.att_dim, "proj", self.dtype, precision)(out)
        if self.drop_rate > 0.0:
            out = nn.Dropout(self.drop_rate)(out, deterministic=not train)
        return out, q_thw

    def _add_rel_pos(self, attn, q, q_thw, k_thw, head_dim):
        """Add decomposed relative position terms to ``attn [B, N, Lq, Lk]`` (non-cls part)."""
        s = self.spec
        rel_init = nn.initializers.zeros if self.rel_pos_zero_init else W_INIT
        sp = 1 if self.has_cls else 0
        qt, qh, qw = q_thw
        kt, kh, kw = k_thw
        b, n = q.shape[:2]
        r_q = q[:, :, sp:].reshape(b, n, qt, qh, qw, head_dim)
        bias = jnp.zeros((b, n, qt, qh, qw, kt, kh, kw), attn.dtype)

        if self.rel_pos_spatial:
            size = s.input_size[1]
            q_size = size // s.stride_q[1] if len(s.stride_q) > 0 else size
            kv_size = size // s.stride_kv[1] if len(s.stride_kv) > 0 else size
            table_len = 2 * max(q_size, kv_size) - 1
            table_h = self.param("rel_pos_h", rel_init, (table_len, head_dim))
            table_w = self.param("rel_pos_w", rel_init, (table_len, head_dim))
            r_h = _resize_table(table_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh)].astype(self.dtype)
            r_w = _resize_table(table_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw)].astype(self.dtype)
            rel_h = jnp.einsum("bnthwc,hkc->bnthwk", r_q, r_h, precision=self.kernels.precision)
            rel_w = jnp.einsum("bnthwc,wkc->bnthwk", r_q, r_w, precision=self.kernels.precision)
            bias = bias + rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]

        if self.rel_pos_temporal:
            table_t = self.param("rel_pos_t", rel_init, (2 * s.input_size[0] - 1, head_dim))
            r_t = _resize_table(table_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt)].astype(self.dtype)
            rel_t = jnp.einsum("bnthwc,tkc->bnthwk", r_q, r_t, precision=self.kernels.precision)
            bias = bias + rel_t[:, :, :, :, :, :, None, None]

        bias = bias.reshape(b, n, qt * qh * qw, kt * kh * kw)
        return attn.at[:, :, sp:, sp:].add(bias)


class Mlp(nn.Module):
    """``fc1 -> GELU (erf) -> dropout -> fc2 -> dropout``; ``[B, L, C] -> [B, L, out]``."""

    hidden: int
    out: int
    drop_rate: float
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = dense(self.hidden, "fc1", self.dtype, self.precision)(x)
        x = nn.gelu(x, approximate=False)
        if self.drop_rate > 0.0:
            x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        x = dense(self.out, "fc2", self.dtype, self.precision)(x)
        if self.drop_rate > 0.0:
            x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        return x
