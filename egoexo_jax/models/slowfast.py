"""SlowFast (two pathways) and Slow-only (one pathway) 3D ResNets with Ego-Exo heads.

Input: a list of pathways, slow first, each ``[B, T_p, H, W, 3] float32`` (with space-to-depth
kernels also its fold ``[B, T_p, ceil(H/2), ceil(W/2), 12]``, see ``resnet3d.Stem``). Output dict
(docs/method.md#model-outputs): ``logits``, ``probs`` (tuples for multi-task heads), ``features``
``[B, C]``, and for Ego-Exo students ``ego_logits`` ``[B, 2]``, ``object_logits``
``[B, K]``, ``interaction_logits`` ``[B, T_slow, h, w, 2]``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from egoexo_jax import ops
from egoexo_jax.models.heads import InteractionHead, PooledHead, split_projections
from egoexo_jax.models.resnet3d import FuseFastToSlow, NormCfg, Stage, Stem

STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# Temporal kernel per stage (stem, res2..res5) and pathway (slow, fast).
TEMPORAL_KERNELS = {"slowfast": ((1, 5), (1, 3), (1, 3), (3, 3), (3, 3)), "slow": ((1,), (1,), (1,), (3,), (3,))}


class ResNetVideo(nn.Module):
    """PySlowFast ``SlowFast`` / ``ResNet`` (arch "slow") and their Ego-Exo variants.

    Fields mirror the PySlowFast config (see ``egoexo_jax.models.build``):
    ``num_classes`` lists the task projections in checkpoint order; ``ego_classes`` /
    ``object_classes`` > 0 add the Ego-Score / Object-Score projections to the same
    head (making it a multi-task head); ``interaction_head`` adds the map head.
    """

    arch: str = "slowfast"
    depth: int = 50
    width_per_group: int = 64
    num_groups: int = 1
    alpha: int = 4
    beta_inv: int = 8
    fusion_conv_channel_ratio: int = 2
    fusion_kernel_size: int = 7
    num_block_temp_kernel: Sequence[Sequence[int]] = ((3, 3), (4, 4), (6, 6), (3, 3))
    spatial_strides: Sequence[int] = (1, 2, 2, 2)
    num_frames: int = 32
    crop_size: int = 224
    num_classes: Sequence[int] = (400,)
    multi_task: bool = False
    head_name: str = "head"
    head_act: str = "softmax"
    dropout_rate: float = 0.5
    ego_classes: int = 0
    object_classes: int = 0
    interaction_head: bool = False
    interaction_conv_dim: int = 512
    interaction_num_convs: int = 1
    bn_group_size: int = 8
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    zero_init_final_bn: bool = True
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA  # how convs / pool / BN run and at which precision (egoexo_jax.ops)

    @property
    def feature_stride(self) -> int:
        """Spatial stride of the res5 map: stem 4 x the stage strides (32 for PySlowFast's)."""
        return 4 * math.prod(self.spatial_strides)

    @property
    def num_pathways(self) -> int:
        return 2 if self.arch == "slowfast" else 1

    @nn.compact
    def __call__(self, pathways, train: bool = False):
        pathways = list(pathways)
        n = self.num_pathways
        if len(pathways) != n:
            raise ValueError(f"{self.arch} expects {n} pathway(s), got {len(pathways)}")
        k = self.kernels
        norm = NormCfg(self.bn_group_size, self.bn_momentum, self.bn_epsilon, self.dtype, k)
        temporal = TEMPORAL_KERNELS[self.arch]
        w, beta = self.width_per_group, self.beta_inv
        inner = self.num_groups * w
        lateral = w // beta * self.fusion_conv_channel_ratio  # fuse output width after s1
        widths = [[w, w // beta]]  # stem outputs per pathway
        xs = [x.astype(self.dtype) for x in pathways]

        # s1: stems.
        xs = _Stems(tuple(widths[0][:n]), tuple(temporal[0][:n]), norm, self.dtype, k, name="s1")(xs, train)
        if n == 2:
            xs = FuseFastToSlow(lateral, self.fusion_kernel_size, self.alpha, norm, self.dtype, k, name="s1_fuse")(
                xs, train
            )

        blocks = STAGE_BLOCKS[self.depth]
        for si in range(4):  # res2..res5
            mult = 2**si
            out = [w * 4 * mult, w * 4 * mult // beta][:n]
            inn = [inner * mult, inner * mult // beta][:n]
            temp = []
            for p in range(n):
                nt = self.num_block_temp_kernel[si][p]
                temp.append([temporal[si + 1][p]] * nt + [1] * (blocks[si] - nt))
            xs = Stage(
                tuple(out),
                tuple(inn),
                tuple(map(tuple, temp)),
                self.spatial_strides[si],
                norm,
                self.num_groups,
                self.zero_init_final_bn,
                self.dtype,
                k,
                name=f"s{si + 2}",
            )(xs, train)
            if n == 2 and si < 3:
                xs = FuseFastToSlow(
                    out[1] * self.fusion_conv_channel_ratio,
                    self.fusion_kernel_size,
                    self.alpha,
                    norm,
                    self.dtype,
                    k,
                    name=f"s{si + 2}_fuse",
                )(xs, train)

        # Heads: fixed pool windows sized by the *configured* crop and frame count.
        s = self.crop_size // self.feature_stride  # 7 at 224 crops with the standard strides
        t_slow = self.num_frames // self.alpha if n == 2 else self.num_frames
        pool = [(t_slow, s, s), (self.num_frames, s, s)][:n]
        task = tuple(self.num_classes)
        extra = tuple(c for c in (self.ego_classes, self.object_classes) if c)
        single = len(task) == 1 and not extra and not self.multi_task
        head = PooledHead(
            task + extra, pool, self.dropout_rate, self.head_act, single, self.dtype, k.precision, name=self.head_name
        )(xs, train)
        out = {"features": head["features"]}
        out.update(split_projections(head["logits"], head["probs"], len(task), self.ego_classes, self.object_classes))
        if self.interaction_head:
            out["interaction_logits"] = InteractionHead(
                self.interaction_conv_dim, self.interaction_num_convs, self.dtype, k, name="handobjhead"
            )(xs[0])
        return out


class _Stems(nn.Module):
    """``s1``: one stem per pathway (``pathway{p}_stem``)."""

    features: Sequence[int]
    temporal_kernels: Sequence[int]
    norm: Any
    dtype: Any
    kernels: ops.Kernels

    @nn.compact
    def __call__(self, xs, train: bool):
        return [
            Stem(f, kt, self.norm, self.dtype, self.kernels, name=f"pathway{p}_stem")(x, train)
            for p, (x, f, kt) in enumerate(zip(xs, self.features, self.temporal_kernels))
        ]
