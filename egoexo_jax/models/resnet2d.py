"""torchvision-layout 2D ResNet (18/34/50/101/152) in flax linen, channels-last (NHWC).

Used as the frozen ImageNet Object-Score teacher (``egoexo_jax.models.teachers``).
Architecture facts follow torchvision's ``resnet*`` models (ResNet v1.5):

- stem: conv 7x7 stride 2 pad 3 (no bias) -> BN -> ReLU -> max-pool 3x3 stride 2 pad 1
  (padding is -inf, as PyTorch);
- stages ``layer1..layer4`` with ``(2, 2, 2, 2)`` / ``(3, 4, 6, 3)`` / ``(3, 4, 23, 3)`` /
  ``(3, 8, 36, 3)`` blocks; basic blocks (two 3x3 convs, expansion 1) for depth 18/34,
  bottlenecks (1x1 -> 3x3 -> 1x1, expansion 4, **stride on the 3x3 conv**) for 50/101/152;
- shortcut ``downsample`` = 1x1 conv with the block's stride -> BN, only on the first block
  of a stage whose stride or width changes;
- global average pool -> ``fc`` (with bias).

Every convolution uses explicit symmetric padding ``k // 2`` (never "SAME", which pads
asymmetrically for stride 2). BatchNorm epsilon is 1e-5; ``train=False`` normalises with
the running statistics (``batch_stats``), ``train=True`` with the batch's and updates them
(PyTorch momentum convention, see :class:`egoexo_jax.models.norm.BatchNorm`).

Module names make the torchvision key map mechanical
(``egoexo_jax.convert.torchvision_resnet``)::

    conv1/kernel                      <- conv1.weight (OIHW -> HWIO)
    bn1/{scale,bias}, batch_stats     <- bn1.{weight,bias,running_mean,running_var}
    layer2_0/conv2/kernel             <- layer2.0.conv2.weight
    layer2_0/downsample_0/kernel      <- layer2.0.downsample.0.weight
    layer2_0/downsample_1/scale       <- layer2.0.downsample.1.weight
    fc/{kernel,bias}                  <- fc.{weight (transposed), bias}

Parameters are float32; ``dtype`` is the compute dtype (BatchNorm statistics in float32;
logits returned in float32).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from egoexo_jax.models.norm import BatchNorm

__all__ = ["BLOCKS", "BOTTLENECK_DEPTHS", "ResNet2D", "num_params"]

# Blocks per stage (layer1..layer4) for each depth.
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BOTTLENECK_DEPTHS = frozenset({50, 101, 152})
EXPANSION = 4  # bottleneck output width / inner width

# torchvision's conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, name: str, dtype) -> nn.Conv:
    """Bias-free k x k conv with explicit symmetric padding ``k // 2``."""
    p = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _bn(name: str, momentum: float, epsilon: float, dtype) -> BatchNorm:
    # group_size 0: statistics over the whole batch (only used if someone trains it).
    return BatchNorm(group_size=0, momentum=momentum, epsilon=epsilon, zero_init=False, dtype=dtype, name=name)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU. ``[N, H, W, C]``."""

    planes: int
    stride: int = 1
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bn = lambda name: _bn(name, self.bn_momentum, self.bn_epsilon, self.dtype)  # noqa: E731
        y = nn.relu(bn("bn1")(_conv(self.planes, 3, self.stride, "conv1", self.dtype)(x), train))
        y = bn("bn2")(_conv(self.planes, 3, 1, "conv2", self.dtype)(y), train)
        return nn.relu(y + _shortcut(x, self.planes, self.stride, bn, self.dtype, train))


class Bottleneck(nn.Module):
    """conv1x1 -> conv3x3(stride) -> conv1x1 (x4 width), BN + ReLU between, + shortcut, ReLU."""

    planes: int
    stride: int = 1
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bn = lambda name: _bn(name, self.bn_momentum, self.bn_epsilon, self.dtype)  # noqa: E731
        out = self.planes * EXPANSION
        y = nn.relu(bn("bn1")(_conv(self.planes, 1, 1, "conv1", self.dtype)(x), train))
        y = nn.relu(bn("bn2")(_conv(self.planes, 3, self.stride, "conv2", self.dtype)(y), train))
        y = bn("bn3")(_conv(out, 1, 1, "conv3", self.dtype)(y), train)
        return nn.relu(y + _shortcut(x, out, self.stride, bn, self.dtype, train))


def _shortcut(x, features, stride, bn, dtype, train):
    """Identity, or ``downsample`` (1x1 conv with stride -> BN) when shape changes."""
    if x.shape[-1] == features and stride == 1:
        return x
    # Called inside the block's compact __call__, so these names land under the block.
    y = _conv(features, 1, stride, "downsample_0", dtype)(x)
    return bn("downsample_1")(y, train)


class ResNet2D(nn.Module):
    """Image classifier ``[N, H, W, 3] float32`` (ImageNet-normalised RGB) -> ``[N, num_classes] float32``.

    Attributes:
      depth: 18, 34 (basic blocks) or 50, 101, 152 (bottlenecks).
      width: stem / ``layer1`` inner width (torchvision: 64); stage ``i`` uses ``width * 2**i``.
        Small widths give tiny teachers for tests and demos.
      num_classes: size of ``fc`` (ImageNet-1k: 1000).
      bn_momentum, bn_epsilon: BatchNorm settings (PyTorch convention).
      dtype: compute dtype; parameters stay float32.
    """

    depth: int = 50
    width: int = 64
    num_classes: int = 1000
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth not in BLOCKS:
            raise ValueError(f"ResNet2D depth={self.depth}; expected one of {sorted(BLOCKS)}")
        block = Bottleneck if self.depth in BOTTLENECK_DEPTHS else BasicBlock
        x = x.astype(self.dtype)
        x = _conv(self.width, 7, 2, "conv1", self.dtype)(x)
        x = nn.relu(_bn("bn1", self.bn_momentum, self.bn_epsilon, self.dtype)(x, train))
        # reduce_window pads max-pool with -inf, as PyTorch.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, n in enumerate(BLOCKS[self.depth]):
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                x = block(
                    self.width * 2**s, stride, self.bn_momentum, self.bn_epsilon, self.dtype, name=f"layer{s + 1}_{i}"
                )(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # adaptive avg-pool to 1x1
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default init
        fc = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="fc",
            kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
            bias_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
        )
        return fc(x.astype(self.dtype)).astype(jnp.float32)


def num_params(module: ResNet2D, image_size: int = 64) -> int:
    """Parameter count (``params`` only; shapes via ``jax.eval_shape``, nothing allocated)."""
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3), jnp.float32))
    )
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"])))
