"""Checkpoint formats and reading pretrained weights.

- :mod:`egoexo_jax.checkpoint.workdir`: training checkpoints of a workdir (save, resume, best,
  read back);
- :mod:`egoexo_jax.checkpoint.integrity`: the digests written with every checkpoint and checked
  when it is read;
- :mod:`egoexo_jax.checkpoint.converted`: converted-checkpoint directories written by
  ``python -m egoexo_jax.convert``;
- :mod:`egoexo_jax.checkpoint.config_json`: the model config as both formats store it;
- :mod:`egoexo_jax.checkpoint.pretrained`: one reader for every checkpoint kind (converted
  directory, training workdir, official ``.pyth``) and the fine-tune transfer.
"""
