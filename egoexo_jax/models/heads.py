"""Heads with PySlowFast semantics: classification / multi-task / Ego-Exo score heads and
the Interaction-Map head."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from egoexo_jax import ops
from egoexo_jax.models.resnet3d import conv3d, msra_fan_out

# PySlowFast initialises Linear layers and "projection" convs with N(0, 0.01^2), bias 0.
projection_init = nn.initializers.normal(stddev=0.01)

ACTIVATIONS = {
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "sigmoid": jax.nn.sigmoid,
    "none": lambda x: x,
}


def split_projections(
    logits: Sequence[Any], probs: Sequence[Any], num_tasks: int, ego_classes: int, object_classes: int
) -> dict:
    """Names the projections of one multi-task head (checkpoint order: tasks, ego, object).

    ``logits[j]`` / ``probs[j]``: ``[B, C_j]`` per projection. Returns ``logits`` / ``probs``
    (single arrays for one task, tuples otherwise) and, when present, ``ego_logits`` and
    ``object_logits`` -- the output contract shared by the ResNet and MViT students.
    """
    k = num_tasks
    out = (
        {"logits": logits[0], "probs": probs[0]} if k == 1 else {"logits": tuple(logits[:k]), "probs": tuple(probs[:k])}
    )
    j = k
    if ego_classes:
        out["ego_logits"] = logits[j]
        j += 1
    if object_classes:
        out["object_logits"] = logits[j]
    return out


class PooledHead(nn.Module):
    """Fixed-window average pooling per pathway -> concat -> dropout -> linear projection(s).

    The pool window is fixed at construction (``pool_sizes[p]`` = (T_p, crop/32, crop/32))
    with stride 1, so a test crop larger than the training crop leaves several pooled
    positions. Every projection is applied per position. Outputs:

    - ``logits``: per projection, pre-activation ``[B, classes]`` averaged over positions;
    - ``probs``: per projection, activation applied per position, then the mean;
    - ``features``: pooled feature ``[B, C]`` averaged over positions.

    ``num_classes`` lists the projections in checkpoint order; ``single`` names the only
    projection ``projection`` (PySlowFast's ``ResNetBasicHead``) instead of
    ``projections_0`` (``MultiTaskHead``).
    """

    num_classes: Sequence[int]
    pool_sizes: Sequence[Sequence[int]]
    dropout_rate: float = 0.0
    activation: str = "softmax"
    single: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, xs, train: bool):
        pooled = []
        for x, window in zip(xs, self.pool_sizes):
            window = tuple(min(w, s) for w, s in zip(window, x.shape[1:4]))
            pooled.append(nn.avg_pool(x, window, strides=(1, 1, 1), padding="VALID"))
        x = jnp.concatenate([p.astype(jnp.float32) for p in pooled], axis=-1)  # [B, T', H', W', C]
        features = x.mean(axis=(1, 2, 3))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x.astype(self.dtype))
        act = ACTIVATIONS[self.activation]
        logits, probs = [], []
        for j, n in enumerate(self.num_classes):
            name = "projection" if self.single else f"projections_{j}"
            y = nn.Dense(
                n,
                kernel_init=projection_init,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                precision=self.precision,
                name=name,
            )(x).astype(jnp.float32)  # [B, T', H', W', n]
            logits.append(y.mean(axis=(1, 2, 3)))
            probs.append(act(y).mean(axis=(1, 2, 3)))
        return {"logits": logits, "probs": probs, "features": features}


class InteractionHead(nn.Module):
    """Ego-Exo Interaction-Map head on the slow res5 output.

    conv 1x3x3 -> ``conv_dim`` (with bias) -> ReLU -> conv 1x1x1 -> 2 (with bias).
    Input ``[B, T, h, w, C]``; output ``[B, T, h, w, 2]`` logits (channel 0 hand, 1 object).
    """

    conv_dim: int = 512
    num_convs: int = 1
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_convs):
            x = conv3d(
                self.conv_dim,
                (1, 3, 3),
                name=f"pathway0_conv_fcn{i}",
                dtype=self.dtype,
                kernels=self.kernels,
                use_bias=True,
                kernel_init=msra_fan_out,
            )(x)
            x = nn.relu(x)
        x = conv3d(
            2,
            (1, 1, 1),
            name="score_projection",
            dtype=self.dtype,
            kernels=self.kernels,
            use_bias=True,
            kernel_init=projection_init,
        )(x)
        return x.astype(jnp.float32)
