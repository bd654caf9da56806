"""PyTorch reference models for the side-by-side benchmarks (benchmarks only; never imported by
``egoexo_jax``, and torch is not a dependency of the package).

Minimal, faithful re-implementations of the architectures ``egoexo_jax.models`` builds, in
PyTorch's native NCTHW layout, as PySlowFast runs them:

- :class:`ResNetVideo`: SlowFast (two pathways, fast->slow lateral connections after s1..s4)
  and Slow-only 3D ResNets with bottleneck blocks, BatchNorm3d, the fixed-window average-pool
  head (projection applied per position, then averaged), and optionally the Ego-Exo heads
  (Ego-Score and Object-Score projections on the pooled feature, Interaction-Map head on the slow
  res5 output);
- :class:`MViT`: MViT-v2 (pooling attention with depthwise conv pooling + LayerNorm, decomposed
  relative position biases, residual pooling, ``dim_mul_in_att``, drop path), same head fields.

Widths, kernels, strides and block specs come from the same model config the JAX side is built
from (``egoexo_jax.models`` config + ``egoexo_jax.models.mvit_config.block_specs``; those are plain
Python), so both sides run the same architecture and shapes. :func:`make_train_step` returns a
closure doing forward + loss (CE, and the Ego-Exo KL / BCE terms when their weights are set) +
backward + optimizer step (SGD momentum/Nesterov with coupled weight decay, or AdamW with
gradient clipping for MViT), optionally under ``torch.autocast`` bf16.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TEMPORAL_KERNELS = {"slowfast": ((1, 5), (1, 3), (1, 3), (3, 3), (3, 3)), "slow": ((1,), (1,), (1,), (3,), (3,))}


# ----------------------------------------------------------------------------------------------
# 3D ResNets (SlowFast / Slow).


def _conv(cin, cout, kernel, stride=(1, 1, 1), bias=False, groups=1):
    return nn.Conv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=bias, groups=groups)


class Stem(nn.Module):
    def __init__(self, cin, cout, kt):
        super().__init__()
        self.conv = _conv(cin, cout, (kt, 7, 7), (1, 2, 2))
        self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.1)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x):
        return self.pool(F.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, inner, kt, stride, groups=1):
        super().__init__()
        self.branch1 = None
        if cin != cout or stride != 1:
            self.branch1 = _conv(cin, cout, (1, 1, 1), (1, stride, stride))
            self.branch1_bn = nn.BatchNorm3d(cout)
        self.a = _conv(cin, inner, (kt, 1, 1))
        self.a_bn = nn.BatchNorm3d(inner)
        self.b = _conv(inner, inner, (1, 3, 3), (1, stride, stride), groups=groups)
        self.b_bn = nn.BatchNorm3d(inner)
        self.c = _conv(inner, cout, (1, 1, 1))
        self.c_bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        y = F.relu(self.a_bn(self.a(x)))
        y = F.relu(self.b_bn(self.b(y)))
        y = self.c_bn(self.c(y))
        return F.relu(shortcut + y)


class FuseFastToSlow(nn.Module):
    def __init__(self, cin, cout, kernel, alpha):
        super().__init__()
        self.conv_f2s = nn.Conv3d(
            cin, cout, (kernel, 1, 1), stride=(alpha, 1, 1), padding=(kernel // 2, 0, 0), bias=False
        )
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, xs):
        slow, fast = xs
        f = F.relu(self.bn(self.conv_f2s(fast)))
        return [torch.cat([slow, f], 1), fast]


class InteractionHead(nn.Module):
    """conv 1x3x3 -> conv_dim (bias) -> ReLU -> conv 1x1x1 -> 2; ``[B, C, T, h, w]`` in."""

    def __init__(self, cin, conv_dim=512, num_convs=1):
        super().__init__()
        layers = []
        for _ in range(num_convs):
            layers += [_conv(cin, conv_dim, (1, 3, 3), bias=True), nn.ReLU()]
            cin = conv_dim
        layers.append(_conv(cin, 2, (1, 1, 1), bias=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ResNetVideo(nn.Module):
    """SlowFast / Slow R50-style network; ``forward(list of [B, 3, T_p, H, W])`` -> output dict."""

    def __init__(self, cfg):
        super().__init__()
        arch = cfg.arch
        n = 2 if arch == "slowfast" else 1
        self.n, self.alpha = n, cfg.alpha
        kernels = TEMPORAL_KERNELS[arch]
        w, beta, ratio = cfg.width_per_group, cfg.beta_inv, cfg.fusion_conv_channel_ratio
        inner = cfg.num_groups * w
        widths = [w, w // beta][:n]
        self.stems = nn.ModuleList([Stem(3, widths[p], kernels[0][p]) for p in range(n)])
        fuse_k = cfg.fusion_kernel_size
        self.fuses = nn.ModuleList()
        chans = list(widths)
        if n == 2:
            self.fuses.append(FuseFastToSlow(chans[1], chans[1] * ratio, fuse_k, cfg.alpha))
            chans[0] += chans[1] * ratio
        blocks = STAGE_BLOCKS[cfg.depth]
        self.stages = nn.ModuleList()
        for si in range(4):
            mult = 2**si
            out = [w * 4 * mult, w * 4 * mult // beta][:n]
            inn = [inner * mult, inner * mult // beta][:n]
            paths = nn.ModuleList()
            for p in range(n):
                nt = cfg.num_block_temp_kernel[si][p]
                temps = [kernels[si + 1][p]] * nt + [1] * (blocks[si] - nt)
                layers, cin = [], chans[p]
                for i, kt in enumerate(temps):
                    layers.append(
                        Bottleneck(cin, out[p], inn[p], kt, cfg.spatial_strides[si] if i == 0 else 1, cfg.num_groups)
                    )
                    cin = out[p]
                paths.append(nn.Sequential(*layers))
                chans[p] = out[p]
            self.stages.append(paths)
            if n == 2 and si < 3:
                self.fuses.append(FuseFastToSlow(chans[1], chans[1] * ratio, fuse_k, cfg.alpha))
                chans[0] += chans[1] * ratio
        stride = 4 * math.prod(cfg.spatial_strides)
        s = cfg.crop_size // stride
        t_slow = cfg.num_frames // cfg.alpha if n == 2 else cfg.num_frames
        self.pool_sizes = [(t_slow, s, s), (cfg.num_frames, s, s)][:n]
        self.num_classes = tuple(cfg.num_classes) if isinstance(cfg.num_classes, (tuple, list)) else (cfg.num_classes,)
        self.extra = tuple(c for c in (cfg.ego_classes, cfg.object_classes) if c)
        self.ego_classes, self.object_classes = cfg.ego_classes, cfg.object_classes
        feat = sum(chans)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.projections = nn.ModuleList([nn.Linear(feat, k) for k in self.num_classes + self.extra])
        self.interaction = (
            InteractionHead(chans[0], cfg.interaction_conv_dim, cfg.interaction_num_convs)
            if cfg.interaction_head
            else None
        )

    def forward(self, xs):
        xs = [stem(x) for stem, x in zip(self.stems, xs)]
        if self.n == 2:
            xs = self.fuses[0](xs)
        for si, stage in enumerate(self.stages):
            xs = [path(x) for path, x in zip(stage, xs)]
            if self.n == 2 and si < 3:
                xs = self.fuses[si + 1](xs)
        pooled = []
        for x, window in zip(xs, self.pool_sizes):
            window = tuple(min(a, b) for a, b in zip(window, x.shape[2:]))
            pooled.append(F.avg_pool3d(x, window, stride=1))
        x = torch.cat(pooled, 1).permute(0, 2, 3, 4, 1)  # [B, T', H', W', C]
        x = self.dropout(x)
        logits = [proj(x).float().mean(dim=(1, 2, 3)) for proj in self.projections]
        return _outputs(
            logits,
            len(self.num_classes),
            self.ego_classes,
            self.object_classes,
            None if self.interaction is None else self.interaction(xs[0]),
        )


def _outputs(logits, k, ego, obj, interaction):
    out = {"logits": logits[0] if k == 1 else tuple(logits[:k])}
    j = k
    if ego:
        out["ego_logits"] = logits[j]
        j += 1
    if obj:
        out["object_logits"] = logits[j]
    if interaction is not None:
        out["interaction_logits"] = interaction.float()  # [B, 2, T, h, w]
    return out


# ----------------------------------------------------------------------------------------------
# MViT-v2.


def _rel_index(q_len: int, k_len: int) -> torch.Tensor:
    q_ratio = max(k_len / q_len, 1.0)
    k_ratio = max(q_len / k_len, 1.0)
    dist = np.arange(q_len, dtype=np.float32)[:, None] * np.float32(q_ratio) - np.arange(k_len, dtype=np.float32)[
        None, :
    ] * np.float32(k_ratio)
    dist = dist + np.float32((k_len - 1) * k_ratio)
    return torch.from_numpy(dist.astype(np.int64))


def _resize_table(table, length):
    if table.shape[0] == length:
        return table
    return F.interpolate(table.t()[None], size=length, mode="linear")[0].t()


class MultiScaleAttention(nn.Module):
    def __init__(self, spec, att_dim, cfg):
        super().__init__()
        self.spec, self.att_dim = spec, att_dim
        self.heads = spec.num_heads
        hd = att_dim // self.heads
        self.head_dim = hd
        self.has_cls = cfg.cls_embed_on
        self.residual_pooling = cfg.residual_pooling
        self.qkv = nn.Linear(spec.dim, 3 * att_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(att_dim, att_dim)
        self.pools = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for name, kern, strd in (
            ("q", spec.kernel_q, spec.stride_q),
            ("k", spec.kernel_kv, spec.stride_kv),
            ("v", spec.kernel_kv, spec.stride_kv),
        ):
            if len(kern) == 0 or (np.prod(kern) == 1 and np.prod(strd) == 1):
                continue
            strd = tuple(strd) if len(strd) > 0 else (1, 1, 1)
            self.pools[name] = nn.Conv3d(
                hd, hd, tuple(kern), stride=strd, padding=tuple(k // 2 for k in kern), groups=hd, bias=False
            )
            self.norms[name] = nn.LayerNorm(hd, eps=1e-6)
        self.rel_spatial, self.rel_temporal = cfg.rel_pos_spatial, cfg.rel_pos_temporal
        if self.rel_spatial:
            size = spec.input_size[1]
            q_size = size // spec.stride_q[1] if len(spec.stride_q) > 0 else size
            kv_size = size // spec.stride_kv[1] if len(spec.stride_kv) > 0 else size
            n = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.randn(n, hd) * 0.02)
            self.rel_pos_w = nn.Parameter(torch.randn(n, hd) * 0.02)
        if self.rel_temporal:
            self.rel_pos_t = nn.Parameter(torch.randn(2 * spec.input_size[0] - 1, hd) * 0.02)

    def _pool(self, x, thw, name):
        if name not in self.pools:
            return x, thw
        b, n, _, c = x.shape
        if self.has_cls:
            cls_tok, x = x[:, :, :1], x[:, :, 1:]
        t, h, w = thw
        y = x.reshape(b * n, t, h, w, c).permute(0, 4, 1, 2, 3)
        y = self.pools[name](y)
        new_thw = tuple(y.shape[2:])
        y = y.reshape(b, n, c, -1).transpose(2, 3)
        if self.has_cls:
            y = torch.cat([cls_tok, y], 2)
        return self.norms[name](y), new_thw

    def _rel_pos(self, attn, q, q_thw, k_thw):
        sp = 1 if self.has_cls else 0
        qt, qh, qw = q_thw
        kt, kh, kw = k_thw
        b, n, _, c = q.shape
        r_q = q[:, :, sp:].reshape(b, n, qt, qh, qw, c)
        bias = 0
        if self.rel_spatial:
            r_h = _resize_table(self.rel_pos_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh)]
            r_w = _resize_table(self.rel_pos_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw)]
            rel_h = torch.einsum("bnthwc,hkc->bnthwk", r_q, r_h.to(r_q.dtype))
            rel_w = torch.einsum("bnthwc,wkc->bnthwk", r_q, r_w.to(r_q.dtype))
            bias = rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]
        if self.rel_temporal:
            r_t = _resize_table(self.rel_pos_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt)]
            rel_t = torch.einsum("bnthwc,tkc->bnthwk", r_q, r_t.to(r_q.dtype))
            bias = bias + rel_t[:, :, :, :, :, :, None, None]
        bias = bias.expand(b, n, qt, qh, qw, kt, kh, kw).reshape(b, n, qt * qh * qw, kt * kh * kw)
        attn = attn.clone()
        attn[:, :, sp:, sp:] = attn[:, :, sp:, sp:] + bias.to(attn.dtype)
        return attn

    def forward(self, x, thw):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, q_thw = self._pool(q, thw, "q")
        k, k_thw = self._pool(k, thw, "k")
        v, _ = self._pool(v, thw, "v")
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if self.rel_spatial or self.rel_temporal:
            attn = self._rel_pos(attn, q, q_thw, k_thw)
        attn = attn.softmax(dim=-1)
        out = attn @ v
        if self.residual_pooling:
            if self.has_cls:
                out = torch.cat([out[:, :, :1], out[:, :, 1:] + q[:, :, 1:]], 2)
            else:
                out = out + q
        out = out.transpose(1, 2).reshape(b, -1, self.att_dim)
        return self.proj(out), q_thw


class DropPath(nn.Module):
    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate <= 0:
            return x
        keep = 1 - self.rate
        mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
        return x / keep * mask


class MultiScaleBlock(nn.Module):
    def __init__(self, spec, cfg):
        super().__init__()
        self.spec = spec
        att_dim = spec.dim_out if cfg.dim_mul_in_att else spec.dim
        self.dim_mul_in_att = cfg.dim_mul_in_att
        self.has_cls = cfg.cls_embed_on
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = MultiScaleAttention(spec, att_dim, cfg)
        self.drop_path = DropPath(spec.drop_path)
        self.norm2 = nn.LayerNorm(att_dim, eps=1e-6)
        hidden = int(att_dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(att_dim, hidden), nn.GELU(), nn.Linear(hidden, spec.dim_out))
        self.proj = nn.Linear(spec.dim, spec.dim_out) if spec.dim != spec.dim_out else None
        self.pool_skip = None
        if len(spec.stride_q) > 0 and np.prod(spec.stride_q) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in spec.stride_q)
            self.pool_skip = nn.MaxPool3d(kernel, tuple(spec.stride_q), tuple(k // 2 for k in kernel))

    def forward(self, x, thw):
        x_norm = self.norm1(x)
        x_block, thw_new = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)
        if self.pool_skip is not None:
            b, _, c = x.shape
            cls_tok, rest = (x[:, :1], x[:, 1:]) if self.has_cls else (None, x)
            y = self.pool_skip(rest.transpose(1, 2).reshape(b, c, *thw))
            y = y.reshape(b, c, -1).transpose(1, 2)
            x = torch.cat([cls_tok, y], 1) if self.has_cls else y
        x = x + self.drop_path(x_block)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), thw_new


class MViT(nn.Module):
    """MViT (v2 options) on one clip ``[B, 3, T, H, W]``; ``mcfg`` is an ``MViTConfig``."""

    def __init__(self, mcfg):
        super().__init__()
        from egoexo_jax.models.mvit_config import block_specs  # pure Python bookkeeping

        self.cfg = mcfg
        c = mcfg.embed_dim
        self.patch_embed = nn.Conv3d(
            mcfg.in_chans, c, tuple(mcfg.patch_kernel), tuple(mcfg.patch_stride), tuple(mcfg.patch_padding)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c)) if mcfg.cls_embed_on else None
        if mcfg.use_abs_pos:
            t, h, w = mcfg.patch_dims
            self.pos_embed = nn.Parameter(torch.zeros(1, t * h * w + int(mcfg.cls_embed_on), c))
        else:
            self.pos_embed = None
        specs = block_specs(mcfg)
        self.blocks = nn.ModuleList([MultiScaleBlock(s, mcfg) for s in specs])
        dim = specs[-1].dim_out
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(mcfg.head_dropout)
        self.num_classes = mcfg.task_classes
        self.extra = tuple(k for k in (mcfg.ego_classes, mcfg.object_classes) if k)
        self.projections = nn.ModuleList([nn.Linear(dim, k) for k in self.num_classes + self.extra])
        self.interaction = (
            InteractionHead(dim, mcfg.interaction_conv_dim, mcfg.interaction_num_convs)
            if mcfg.interaction_head
            else None
        )

    def forward(self, xs):
        x = self.patch_embed(xs[0])
        b, c = x.shape[:2]
        thw = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], 1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x, thw = blk(x, thw)
        tokens = self.norm(x)
        sp = 1 if self.cls_token is not None else 0
        features = tokens[:, 0] if sp else tokens.mean(1)
        f = self.dropout(features)
        logits = [proj(f).float() for proj in self.projections]
        inter = None
        if self.interaction is not None:
            grid = tokens[:, sp:].transpose(1, 2).reshape(b, tokens.shape[-1], *thw)
            inter = self.interaction(grid)
        return _outputs(logits, len(self.num_classes), self.cfg.ego_classes, self.cfg.object_classes, inter)


# ----------------------------------------------------------------------------------------------
# Losses, optimiser and the train step.


def _kd(student, teacher, temperature=1.0):
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * (t * t)


def egoexo_loss(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor], weights) -> torch.Tensor:
    """``ce * CE + ego * KL + object * KL + hand * BCE + object_map * BCE`` (zero weights skipped)."""
    loss = weights.get("ce", 1.0) * F.cross_entropy(out["logits"], batch["label"])
    if weights.get("ego", 0.0):
        loss = loss + weights["ego"] * _kd(out["ego_logits"], batch["ego_target"], weights.get("ego_temperature", 1.0))
    if weights.get("object", 0.0):
        loss = loss + weights["object"] * _kd(
            out["object_logits"], batch["object_target"], weights.get("object_temperature", 1.0)
        )
    if weights.get("hand", 0.0) or weights.get("object_map", 0.0):
        logits = out["interaction_logits"]  # [B, 2, T, h, w]
        target = batch["interaction_target"]
        pw = torch.as_tensor(weights.get("pos_weight", 1.0), dtype=logits.dtype, device=logits.device)
        loss = loss + weights.get("hand", 0.0) * F.binary_cross_entropy_with_logits(
            logits[:, 0], target[:, 0], pos_weight=pw
        )
        loss = loss + weights.get("object_map", 0.0) * F.binary_cross_entropy_with_logits(
            logits[:, 1], target[:, 1], pos_weight=pw
        )
    return loss


def build_model(model_cfg):
    """The torch twin of ``egoexo_jax.models.build(model_cfg)``."""
    if model_cfg.arch == "mvit":
        from egoexo_jax.models import mvit_config as mvit_lib  # pure Python config glue

        return MViT(mvit_lib.mvit_config_from_model_config(model_cfg))
    return ResNetVideo(model_cfg)


def make_optimizer(model: nn.Module, opt_cfg, lr: float):
    """PySlowFast's optimiser groups: SGD (no decay on BN params) or AdamW (no decay on 1-D)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if opt_cfg.name == "sgd":
            skip = isinstance(_owner(model, name), nn.BatchNorm3d)
        else:
            skip = p.ndim <= 1
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": opt_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if opt_cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov)
    return torch.optim.AdamW(groups, lr=lr, betas=(opt_cfg.beta1, opt_cfg.beta2), eps=opt_cfg.eps)


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    return model.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else model


def make_train_step(
    model: nn.Module, opt, weights, *, grad_clip: float = 0.0, autocast_dtype=None, device: str = "cpu"
):
    """``step(inputs, batch) -> loss tensor``: forward, loss, backward, (clip,) optimizer step."""
    model.train()

    def step(inputs: List[torch.Tensor], batch: Dict[str, torch.Tensor]):
        opt.zero_grad(set_to_none=True)
        if autocast_dtype is not None:
            with torch.autocast(device_type=device, dtype=autocast_dtype):
                out = model(inputs)
                loss = egoexo_loss(out, batch, weights)
        else:
            out = model(inputs)
            loss = egoexo_loss(out, batch, weights)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return loss

    return step


def to_torch_batch(np_batch: Dict[str, np.ndarray], arch: str, device: str = "cpu") -> tuple:
    """JAX-layout numpy batch -> (NCTHW inputs, torch loss targets) on ``device``."""
    keys = ["pathway0", "pathway1"] if arch == "slowfast" else ["pathway0"]
    inputs = [torch.from_numpy(np.ascontiguousarray(np_batch[k].transpose(0, 4, 1, 2, 3))).to(device) for k in keys]
    batch = {"label": torch.from_numpy(np_batch["label"].astype(np.int64)).to(device)}
    for k in ("ego_target", "object_target"):
        if k in np_batch:
            batch[k] = torch.from_numpy(np_batch[k]).to(device)
    if "interaction_target" in np_batch:  # [B, T, h, w, 2] -> [B, 2, T, h, w]
        batch["interaction_target"] = torch.from_numpy(
            np.ascontiguousarray(np_batch["interaction_target"].transpose(0, 4, 1, 2, 3))
        ).to(device)
    return inputs, batch


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__: Sequence[str] = (
    "ResNetVideo",
    "MViT",
    "build_model",
    "make_optimizer",
    "make_train_step",
    "to_torch_batch",
    "egoexo_loss",
    "num_params",
)
