"""Checkpoint conversion: PySlowFast / Ego-Exo ``.pyth`` -> flax, without torch."""

from egoexo_jax.convert.pyslowfast import convert_checkpoint, load_pyslowfast  # noqa: F401
