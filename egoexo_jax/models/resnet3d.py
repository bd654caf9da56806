"""3D-ResNet building blocks shared by Slow and SlowFast (channels-last, NTHWC).

Submodule names mirror PySlowFast's state_dict names (``pathway0_stem/conv``,
``branch2/a_bn`` ...), so checkpoint conversion is a mechanical rename. Every module takes
``kernels`` (:class:`egoexo_jax.ops.Kernels`): which implementation of the convolutions, the stem
pool and BatchNorm runs, and at which matmul precision.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from egoexo_jax import ops
from egoexo_jax.models.norm import BatchNorm
from egoexo_jax.ops import space_to_depth

# He/MSRA normal with fan_out and ReLU gain (fvcore's c2_msra_fill).
msra_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv3d(
    features, kernel, stride=(1, 1, 1), *, name, dtype, kernels, groups=1, use_bias=False, kernel_init=msra_fan_out
):
    """A convolution with ``nn.Conv``'s parameters, padding ``kernel // 2``, named like the PyTorch
    module (so its params sit at ``name``): :class:`Conv3D` when ungrouped, else ``nn.Conv``."""
    if groups == 1:
        return Conv3D(features, tuple(kernel), tuple(stride), use_bias, kernel_init, dtype, kernels, name=name)
    return nn.Conv(
        features,
        tuple(kernel),
        strides=tuple(stride),
        padding=[(k // 2, k // 2) for k in kernel],
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        precision=kernels.precision,
        name=name,
    )


class Conv3D(nn.Module):
    """``nn.Conv`` (padding ``kernel // 2``, any stride) computed by ``kernels.conv3d``.

    Parameters are ``nn.Conv``'s (``kernel [kt, kh, kw, C, O]``, optional ``bias``), so checkpoints
    and the PyTorch converter do not depend on the kernel choice.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    use_bias: bool = False
    kernel_init: Any = msra_fan_out
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, c, self.features), jnp.float32)
        y = self.kernels.conv3d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.kernels.precision)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


@dataclasses.dataclass(frozen=True)
class NormCfg:
    """BatchNorm settings shared by every block of one model."""

    group_size: int = 8
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    def make(self, name, zero_init=False):
        return BatchNorm(self.group_size, self.momentum, self.epsilon, zero_init, self.dtype, self.kernels, name=name)


class Stem(nn.Module):
    """Conv (kt x 7 x 7, stride 1x2x2) -> BN -> ReLU -> max-pool (1x3x3, stride 1x2x2).

    Input: the frames ``[B, T, H, W, in_channels]``; with ``kernels.space_to_depth`` also their
    2x2 space-to-depth fold ``[B, T, ceil(H/2), ceil(W/2), 4 * in_channels]`` (the host pipeline
    folds when the run does, :func:`egoexo_jax.train.folds_input`). The conv's parameter is
    ``conv/kernel [kt, 7, 7, in_channels, O]`` either way.
    """

    features: int
    temporal_kernel: int
    norm: Any
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA
    in_channels: int = 3  # channels of a frame (RGB): tells the frames from their fold

    @nn.compact
    def __call__(self, x, train: bool):
        c, ic = x.shape[-1], self.in_channels
        if self.kernels.space_to_depth and c not in (ic, 4 * ic):
            raise ValueError(
                f"{self.name}: input shape {tuple(x.shape)}; expected frames [B, T, H, W, {ic}] or their 2x2 "
                f"space-to-depth fold [B, T, ceil(H/2), ceil(W/2), {4 * ic}]"
            )
        if not self.kernels.space_to_depth and c != ic:
            hint = " (that is a 2x2 space-to-depth fold: only the xla kernels with model.rewrites on take it)"
            raise ValueError(
                f"{self.name}: input shape {tuple(x.shape)}; expected frames [B, T, H, W, {ic}]"
                + (hint if c == 4 * ic else "")
            )
        if self.kernels.space_to_depth:
            x = _SpaceToDepthStemConv(
                self.features, self.temporal_kernel, self.in_channels, self.dtype, self.kernels, name="conv"
            )(x)
        else:
            x = conv3d(
                self.features,
                (self.temporal_kernel, 7, 7),
                (1, 2, 2),
                name="conv",
                dtype=self.dtype,
                kernels=self.kernels,
            )(x)
        x = nn.relu(self.norm.make("bn")(x, train))
        return self.kernels.stem_max_pool(x)


class _SpaceToDepthStemConv(nn.Module):
    """The stem's ``Conv3D`` (``kernel [kt, 7, 7, C, O]``, same name, init and values) computed by
    :func:`egoexo_jax.ops.space_to_depth.stem_conv` on frames or their fold."""

    features: int
    temporal_kernel: int
    in_channels: int
    dtype: Any
    kernels: ops.Kernels

    @nn.compact
    def __call__(self, x):
        shape = (self.temporal_kernel, 7, 7, self.in_channels, self.features)
        kernel = self.param("kernel", msra_fan_out, shape, jnp.float32)
        return space_to_depth.stem_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.kernels.precision)


class Bottleneck(nn.Module):
    """Bottleneck residual block: a (kt x 1 x 1) -> b (1 x 3 x 3, spatial stride) -> c (1x1x1).

    ``c_bn`` starts at gamma 0 when ``zero_init_final_bn``; the shortcut is a strided
    1x1x1 conv + BN only when width or stride change.
    """

    features: int
    inner: int
    temporal_kernel: int
    stride: int
    norm: Any
    groups: int = 1
    zero_init_final_bn: bool = True
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x, train: bool):
        s = self.stride
        if x.shape[-1] != self.features or s != 1:
            shortcut = conv3d(
                self.features, (1, 1, 1), (1, s, s), name="branch1", dtype=self.dtype, kernels=self.kernels
            )(x)
            shortcut = self.norm.make("branch1_bn")(shortcut, train)
        else:
            shortcut = x
        y = Branch2(
            self.features,
            self.inner,
            self.temporal_kernel,
            s,
            self.norm,
            self.groups,
            self.zero_init_final_bn,
            self.dtype,
            self.kernels,
            name="branch2",
        )(x, train)
        return nn.relu(shortcut + y)


class Branch2(nn.Module):
    """The residual branch of :class:`Bottleneck` (its own module to keep PyTorch names)."""

    features: int
    inner: int
    temporal_kernel: int
    stride: int
    norm: Any
    groups: int
    zero_init_final_bn: bool
    dtype: Any
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x, train: bool):
        kt, s = self.temporal_kernel, self.stride
        x = conv3d(self.inner, (kt, 1, 1), name="a", dtype=self.dtype, kernels=self.kernels)(x)
        x = nn.relu(self.norm.make("a_bn")(x, train))
        x = conv3d(
            self.inner, (1, 3, 3), (1, s, s), name="b", dtype=self.dtype, kernels=self.kernels, groups=self.groups
        )(x)
        x = nn.relu(self.norm.make("b_bn")(x, train))
        x = conv3d(self.features, (1, 1, 1), name="c", dtype=self.dtype, kernels=self.kernels)(x)
        return self.norm.make("c_bn", zero_init=self.zero_init_final_bn)(x, train)


class Stage(nn.Module):
    """One ResNet stage (``s2``..``s5``) over every pathway.

    ``temporal_kernels[p][i]`` is the temporal kernel of block i of pathway p.
    """

    features: Sequence[int]
    inner: Sequence[int]
    temporal_kernels: Sequence[Sequence[int]]
    stride: int
    norm: Any
    groups: int = 1
    zero_init_final_bn: bool = True
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, xs, train: bool):
        outs = []
        for p, x in enumerate(xs):
            for i, kt in enumerate(self.temporal_kernels[p]):
                x = Bottleneck(
                    self.features[p],
                    self.inner[p],
                    kt,
                    self.stride if i == 0 else 1,
                    self.norm,
                    self.groups,
                    self.zero_init_final_bn,
                    self.dtype,
                    self.kernels,
                    name=f"pathway{p}_res{i}",
                )(x, train)
            outs.append(x)
        return outs


class FuseFastToSlow(nn.Module):
    """Lateral connection: fast -> (K x 1 x 1 conv, temporal stride alpha) -> BN -> ReLU,
    concatenated after the slow channels."""

    features: int
    kernel: int
    alpha: int
    norm: Any
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, xs, train: bool):
        slow, fast = xs
        f = conv3d(
            self.features,
            (self.kernel, 1, 1),
            (self.alpha, 1, 1),
            name="conv_f2s",
            dtype=self.dtype,
            kernels=self.kernels,
        )(fast)
        f = nn.relu(self.norm.make("bn")(f, train))
        return [jnp.concatenate([slow, f.astype(slow.dtype)], axis=-1), fast]
