"""What an :class:`~egoexo_jax.models.mvit_config.MViTConfig` must satisfy before the model is built:
block indices inside ``depth``, well-formed strides and kernels, rates in range (one line per field)."""

from __future__ import annotations

__all__ = ["config_problems"]


def _triple(value, low: int) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
    )


def config_problems(cfg) -> list:
    """``[(field, what is wrong and what is expected)]`` for an :class:`MViTConfig` the model
    cannot build as described (block indices past ``depth``, malformed strides); [] when fine."""
    out = []
    depth = cfg.depth
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        return [("depth", f"{depth!r}; expected an integer >= 1")]
    for name in ("embed_dim", "num_heads", "in_chans", "num_frames", "crop_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            out.append((name, f"{v!r}; expected an integer >= 1"))
    for name in ("dim_mul", "head_mul"):
        for entry in getattr(cfg, name) or ():
            if len(entry) != 2 or not 0 <= int(entry[0]) <= depth or not float(entry[1]) > 0:
                out.append(
                    (
                        name,
                        f"entry {tuple(entry)}; expected (block, multiplier > 0) "
                        f"with block in [0, {depth}] (depth={depth})",
                    )
                )
                break
    for name in ("pool_q_stride", "pool_kv_stride"):
        for entry in getattr(cfg, name) or ():
            if len(entry) != 4 or not 0 <= int(entry[0]) < depth or not _triple(tuple(entry[1:]), 1):
                out.append(
                    (
                        name,
                        f"entry {tuple(entry)}; expected (block, t, h, w) "
                        f"with block in [0, {depth}) (depth={depth}) and strides >= 1",
                    )
                )
                break
    for name, low in (("patch_kernel", 1), ("patch_stride", 1), ("patch_padding", 0)):
        if not _triple(tuple(getattr(cfg, name)), low):
            out.append((name, f"{getattr(cfg, name)!r}; expected 3 integers >= {low}"))
    for name in ("pool_kv_stride_adaptive", "pool_kvq_kernel"):
        v = getattr(cfg, name)
        if v is not None and not _triple(tuple(v), 1):
            out.append((name, f"{v!r}; expected None or 3 integers >= 1"))
    for name in ("droppath_rate", "dropout_rate", "head_dropout"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            out.append((name, f"{v!r}; expected a number in [0, 1)"))
    if not isinstance(cfg.mlp_ratio, (int, float)) or not cfg.mlp_ratio > 0:
        out.append(("mlp_ratio", f"{cfg.mlp_ratio!r}; expected a number > 0"))
    return out
