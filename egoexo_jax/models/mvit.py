"""Multiscale Vision Transformers (MViT v1 and v2) with PySlowFast semantics.

Reimplements the ``MViT`` model of the newer facebookresearch/SlowFast repository
(docs/method.md#mvit-students) for the configuration family the official K400 models use:
``MODE=conv``, ``POOL_FIRST=False``, fused ``qkv`` projection, layer norm everywhere.

Data flow (channels-last; ``B`` batch, ``C`` width, ``L = T' * H' * W'`` tokens):

- patch stem: Conv3d (3, 7, 7) stride (2, 4, 4) pad (1, 3, 3) with bias,
  ``[B, T, H, W, 3] -> [B, T', H', W', C] -> [B, L, C]`` (tokens in (t, h, w) order);
- cls token prepended (``[B, 1 + L, C]``), absolute position embeddings added (v1);
- ``DEPTH`` pre-norm multiscale blocks. Each pools Q (and the residual, by max pooling)
  where a Q stride is set, pools K/V with a depthwise conv shared by all heads, and
  changes the width where ``DIM_MUL`` says (v1: in the MLP of the block before, v2: in
  the attention of the block itself). v2 adds decomposed relative position biases and
  residual pooling;
- final LayerNorm -> cls token -> dropout -> ``head/projection``; softmax at test.

Ego-Exo students (docs/method.md#mvit-as-an-ego-exo-student) use the same head fields as the ResNet students
(``egoexo_jax.models.slowfast.ResNetVideo``): ``num_classes`` may list several tasks
(PySlowFast ``MultiTaskHead``: ``{head_name}/projections_{j}``), ``ego_classes`` /
``object_classes`` append the Ego-Score / Object-Score projections to that head (on the
same dropped-out cls feature), and ``interaction_head`` adds the Interaction-Map head
(``handobjhead``) on the final token grid. A plain single-task MViT keeps PySlowFast's
``head/projection``.

Flax submodule names mirror the PyTorch ``state_dict`` names (``patch_embed/proj``,
``blocks_3/attn/qkv``, ``blocks_3/attn/pool_q``, ``norm``, ``head/projection``), so the
converter in :mod:`egoexo_jax.convert.mvit` is a renaming plus layout transposes.

The architecture settings live in :mod:`egoexo_jax.models.mvit_config`, the building blocks
(stem, pooling attention, MLP) in :mod:`egoexo_jax.models.mvit_layers`; this module holds the
block, the head and the network.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax import ops
from egoexo_jax.models import DTYPES
from egoexo_jax.models.heads import InteractionHead, split_projections
from egoexo_jax.models.mvit_config import (
    BlockSpec,
    MViTConfig,
    block_specs,
    kernel_from_stride,
    mvit_config_from_model_config,
)
from egoexo_jax.models.mvit_layers import (
    W_INIT,
    DropPath,
    Mlp,
    MultiScaleAttention,
    PatchEmbed,
    dense,
    layer_norm,
    pool_tokens,
)

__all__ = ["MViT", "MultiScaleBlock", "TransformerBasicHead", "build_from_model_config"]


class MultiScaleBlock(nn.Module):
    """Pre-norm block: ``x = skip(x) + DropPath(attn(LN1 x)); x = x' + DropPath(MLP(LN2 x'))``.

    ``skip`` max-pools the non-cls tokens (kernel stride+1, pad kernel//2) where Q is
    strided; where the width changes, ``proj`` maps the skip path (v2: from LN1 output
    before the attention, v1: from LN2 output before the MLP). ``[B, 1+L, dim] ->
    [B, 1+L', dim_out]``.
    """

    spec: BlockSpec
    cfg: MViTConfig
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x, thw, train: bool):
        s, cfg, dtype = self.spec, self.cfg, self.dtype
        att_dim = s.dim_out if cfg.dim_mul_in_att else s.dim
        drop_path = DropPath(s.drop_path)
        proj = dense(s.dim_out, "proj", dtype, self.kernels.precision) if s.dim != s.dim_out else None

        x_norm = layer_norm("norm1", dtype)(x)
        x_block, thw_new = MultiScaleAttention(
            spec=s,
            att_dim=att_dim,
            qkv_bias=cfg.qkv_bias,
            has_cls=cfg.cls_embed_on,
            rel_pos_spatial=cfg.rel_pos_spatial,
            rel_pos_temporal=cfg.rel_pos_temporal,
            rel_pos_zero_init=cfg.rel_pos_zero_init,
            residual_pooling=cfg.residual_pooling,
            drop_rate=cfg.dropout_rate,
            dtype=dtype,
            kernels=self.kernels,
            name="attn",
        )(x_norm, thw, train)
        if cfg.dim_mul_in_att and proj is not None:
            x = proj(x_norm)

        if len(s.stride_q) > 0 and np.prod(s.stride_q) > 1:
            kernel = kernel_from_stride(s.stride_q)
            pad = [(k // 2, k // 2) for k in kernel]

            def max_pool(t):
                return nn.max_pool(t, kernel, strides=tuple(s.stride_q), padding=pad)

            x, _ = pool_tokens(x[:, None], thw, max_pool, cfg.cls_embed_on)
            x = x[:, 0]

        if cfg.layer_scale_init_value > 0:
            gamma_1 = self.param("gamma_1", nn.initializers.constant(cfg.layer_scale_init_value), (s.dim,))
            x_block = gamma_1.astype(dtype) * x_block
        x = x + drop_path(x_block, train)

        x_norm = layer_norm("norm2", dtype)(x)
        x_mlp = Mlp(
            hidden=int(att_dim * cfg.mlp_ratio),
            out=s.dim_out,
            drop_rate=cfg.dropout_rate,
            dtype=dtype,
            precision=self.kernels.precision,
            name="mlp",
        )(x_norm, train)
        if not cfg.dim_mul_in_att and proj is not None:
            x = proj(x_norm)
        if cfg.layer_scale_init_value > 0:
            gamma_2 = self.param("gamma_2", nn.initializers.constant(cfg.layer_scale_init_value), (s.dim_out,))
            x_mlp = gamma_2.astype(dtype) * x_mlp
        return x + drop_path(x_mlp, train), thw_new


class TransformerBasicHead(nn.Module):
    """``dropout -> projection(s)``; ``[B, C] -> [[B, classes_j], ...]`` logits (float32).

    ``single``: PySlowFast's ``TransformerBasicHead`` (one Linear named ``projection``);
    otherwise a ``MultiTaskHead`` whose Linears ``projections_{j}`` share the same
    dropped-out feature (task projections first, then Ego-Score, then Object-Score, as
    the ResNet students' ``PooledHead``). Every projection has the MViT Linear init
    (trunc-normal 0.02, bias 0.02; PySlowFast's ``MViT._init_weights`` applies it to all
    Linears) scaled by ``init_scale`` (``HEAD_INIT_SCALE``).
    """

    num_classes: Sequence[int]
    dropout_rate: float
    init_scale: float = 1.0
    single: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        if self.dropout_rate > 0.0:
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.single and len(self.num_classes) != 1:
            raise ValueError(f"a single projection needs one task, got {self.num_classes}")
        return [
            dense(
                n,
                "projection" if self.single else f"projections_{j}",
                self.dtype,
                self.precision,
                scale=self.init_scale,
            )(x).astype(jnp.float32)
            for j, n in enumerate(self.num_classes)
        ]


_HEAD_ACTS = {
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "sigmoid": jax.nn.sigmoid,
    "none": lambda x: x,
}


class MViT(nn.Module):
    """MViT v1/v2 video classifier with PySlowFast parameter names and numerics.

    ``apply(variables, x_list, train=False)`` where ``x_list`` is a list holding one clip
    ``[B, T, H, W, 3] float32`` (``T = num_frames``, ``H = W = crop_size``). Returns the
    ResNet students' output dict (``egoexo_jax.models.slowfast``):

    - ``logits`` ``[B, classes]``: pre-activation classifier output (a tuple of one
      ``[B, classes_j]`` per task when ``num_classes`` lists several tasks);
    - ``probs``: ``head_act`` (softmax / sigmoid / none) of ``logits`` (tuple likewise);
    - ``features`` ``[B, C]``: the head input (final-norm cls token, or the pooled feature
      when ``use_mean_pooling`` / no cls token), before the head dropout;
    - ``ego_logits`` ``[B, ego_classes]`` / ``object_logits`` ``[B, object_classes]``:
      the Ego-Score / Object-Score projections of the same head (when configured);
    - ``interaction_logits`` ``[B, T', h, w, 2]`` (when ``interaction_head``): the
      Interaction-Map head (channel 0 hand, 1 object) on ``token_grid``;
    - ``token_grid`` ``[B, T', h, w, C]``: the final tokens after the final LayerNorm,
      cls token removed, on the last token grid (``h = crop // feature_stride``).

    The map head reads the tokens after the *final* LayerNorm (``norm``), the same
    normalised features the classifier sees: the residual stream of a pre-norm
    transformer is not normalised (its scale grows with depth), and PySlowFast's own
    dense head on MViT (the AVA detection path of ``MViT.forward``) also applies
    ``self.norm`` to all tokens, drops the cls token and reshapes to ``[B, C, T, H, W]``.
    Its convs keep the ResNet head's init (1x3x3 conv: He fan-out, bias 0;
    ``score_projection``: N(0, 0.01^2), bias 0) and names (``handobjhead/...``).

    Training (``train=True``) enables drop-path and dropout and needs a ``'dropout'`` rng.
    ``dtype`` is the compute dtype (parameters stay float32; softmaxes run in float32;
    ``logits``/``probs`` are returned in float32).
    """

    config: MViTConfig
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA  # how the pooling convs run and at which precision (egoexo_jax.ops)

    @nn.compact
    def __call__(self, x_list, train: bool = False):
        cfg, dtype, kernels = self.config, self.dtype, self.kernels
        x = x_list[0] if isinstance(x_list, (list, tuple)) else x_list
        x, thw = PatchEmbed(
            cfg.embed_dim,
            cfg.patch_kernel,
            cfg.patch_stride,
            cfg.patch_padding,
            in_chans=cfg.in_chans,
            dtype=dtype,
            precision=kernels.precision,
            name="patch_embed",
        )(x.astype(dtype))
        if thw != cfg.patch_dims:
            raise ValueError(
                f"token grid {thw} != {cfg.patch_dims}: input must be "
                f"[B, {cfg.num_frames}, {cfg.crop_size}, {cfg.crop_size}, {cfg.in_chans}]"
            )
        b, n_tok, c = x.shape

        if cfg.cls_embed_on:
            cls_token = self.param("cls_token", W_INIT, (1, 1, c))
            x = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, c)).astype(dtype), x], 1)

        if cfg.use_abs_pos:
            t, h, w = thw
            if cfg.sep_pos_embed:
                spatial = self.param("pos_embed_spatial", W_INIT, (1, h * w, c))
                temporal = self.param("pos_embed_temporal", W_INIT, (1, t, c))
                pos = (spatial[:, None, :, :] + temporal[:, :, None, :]).reshape(1, t * h * w, c)
                if cfg.cls_embed_on:
                    pos_cls = self.param("pos_embed_class", W_INIT, (1, 1, c))
                    pos = jnp.concatenate([pos_cls, pos], axis=1)
            else:
                pos = self.param("pos_embed", W_INIT, (1, x.shape[1], c))
            x = x + pos.astype(dtype)

        if cfg.dropout_rate > 0.0:
            x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
        if cfg.norm_stem:
            x = layer_norm("norm_stem", dtype)(x)

        for i, spec in enumerate(block_specs(cfg)):
            x, thw = MultiScaleBlock(spec=spec, cfg=cfg, dtype=dtype, kernels=kernels, name=f"blocks_{i}")(
                x, thw, train
            )

        norm = layer_norm("norm", dtype)
        sp = 1 if cfg.cls_embed_on else 0
        if cfg.use_mean_pooling:
            tokens = norm(x)
            features = norm(x[:, sp:].mean(axis=1))
        else:
            tokens = norm(x)
            features = tokens[:, 0] if cfg.cls_embed_on else tokens.mean(axis=1)
        token_grid = tokens[:, sp:].reshape(b, *thw, tokens.shape[-1])

        task = cfg.task_classes
        extra = tuple(n for n in (cfg.ego_classes, cfg.object_classes) if n)
        logits = TransformerBasicHead(
            task + extra,
            cfg.head_dropout,
            cfg.head_init_scale,
            single=cfg.single_projection,
            dtype=dtype,
            precision=kernels.precision,
            name=cfg.head_name,
        )(features, train)
        act = _HEAD_ACTS[cfg.head_act]
        k = len(task)
        out = {"features": features, "token_grid": token_grid}
        out.update(split_projections(logits, [act(y) for y in logits[:k]], k, cfg.ego_classes, cfg.object_classes))
        if cfg.interaction_head:
            out["interaction_logits"] = InteractionHead(
                cfg.interaction_conv_dim, cfg.interaction_num_convs, dtype, kernels, name="handobjhead"
            )(token_grid)
        return out

    @property
    def feature_stride(self) -> int:
        """Spatial stride of ``token_grid`` / ``interaction_logits`` (32 for the official models)."""
        return self.config.feature_stride


def build_from_model_config(model_cfg, kernels: ops.Kernels = ops.XLA) -> "MViT":
    """:class:`MViT` for a registry model config (see :func:`mvit_config_from_model_config`)."""
    return MViT(config=mvit_config_from_model_config(model_cfg), dtype=DTYPES[model_cfg.dtype], kernels=kernels)
