"""Full-size model configs of the official recipes (PySlowFast / Ego-Exo YAMLs).

Each function returns a complete model config; recipes in ``configs/`` start from these.
"""

from __future__ import annotations

import ml_collections

from egoexo_jax.models import default_model_config
from egoexo_jax.models.slowfast import STAGE_BLOCKS


def _blocks(depth: int) -> tuple:
    """Blocks with temporal kernels per stage: PySlowFast's (3, 4, 6, 3), all 23 res4 blocks for
    Ego-Exo's R101, capped at the stage length for the small depths (18: 2 per stage)."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"depth {depth}; expected one of {sorted(STAGE_BLOCKS)}")
    wanted = (3, 4, 23 if depth == 101 else 6, 3)
    return tuple(min(w, n) for w, n in zip(wanted, STAGE_BLOCKS[depth]))


def slowfast(depth: int = 50, **overrides) -> ml_collections.ConfigDict:
    """SlowFast 8x8 (32 fast frames, alpha 4, beta_inv 8).

    Ego-Exo's R101 uses a fusion kernel of 5 and temporal kernels in all 23 res4 blocks
    (unlike the SlowFast paper's R101, which has them in the first 6 only).
    """
    c = default_model_config()
    c.arch, c.depth = "slowfast", depth
    c.fusion_kernel_size = 7 if depth == 50 else 5
    b = _blocks(depth)
    c.num_block_temp_kernel = tuple((n, n) for n in b)
    c.update(overrides)
    return c


def slow(depth: int = 50, **overrides) -> ml_collections.ConfigDict:
    """Slow-only 8x8 (8 frames at stride 8), slow-pathway temporal kernels, no laterals."""
    c = default_model_config()
    c.arch, c.depth, c.num_frames, c.alpha = "slow", depth, 8, 8
    c.fusion_kernel_size = 5
    c.num_block_temp_kernel = tuple((n,) for n in _blocks(depth))
    c.update(overrides)
    return c


def egoexo_pretrain_heads(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the Ego-Exo pre-training heads: ego (2), object (1000), interaction map."""
    c.ego_classes, c.object_classes = 2, 1000
    c.multi_task = True
    c.interaction_head = True
    c.dropout_rate = 0.0
    return c


def charades_ego_heads(c: ml_collections.ConfigDict, star: bool = False) -> ml_collections.ConfigDict:
    """157-way multi-label head (sigmoid at test); Ego-Exo* keeps the interaction head."""
    c.num_classes, c.head_name, c.head_act = (157,), "headcharades-ego", "sigmoid"
    c.interaction_head = star
    return c


def epic100_heads(c: ml_collections.ConfigDict, star: bool = False) -> ml_collections.ConfigDict:
    """Verb (97) + noun (300) multi-task head; Ego-Exo* keeps the interaction head."""
    c.num_classes, c.head_name, c.multi_task = (97, 300), "headepic100", True
    c.interaction_head = star
    return c


def epic55_heads(c: ml_collections.ConfigDict, star: bool = False) -> ml_collections.ConfigDict:
    """EPIC-Kitchens-55 verb (125) + noun (352) multi-task head named ``headepic`` (TASK ``epic``);
    Ego-Exo* keeps the interaction head."""
    c.num_classes, c.head_name, c.multi_task = (125, 352), "headepic", True
    c.interaction_head = star
    return c
