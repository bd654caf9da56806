"""Converted-checkpoint directories: orbax variables + model config + a JSON summary.

What ``python -m egoexo_jax.convert`` writes from an official ``.pyth``, so later runs read the
weights without converting them again.

Layout of ``DIR`` (what ``--config.init_from=DIR`` and ``predict --checkpoint DIR`` read):

- ``variables/``: orbax ``StandardCheckpointer`` tree ``{"params": ..., "batch_stats": ...}``;
- ``model_config.json``: our model config (``egoexo_jax.models.build`` input);
- ``conversion.json``: source file, epoch, PySlowFast model name, parameter count and the
  PyTorch key -> flax path map;
- ``pyslowfast_config.yaml``: the checkpoint's own config, verbatim.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml

from egoexo_jax import models
from egoexo_jax.checkpoint.config_json import model_config_from_json, model_config_to_json
from egoexo_jax.cli import MissingFileError

MODEL_CONFIG = "model_config.json"
SUMMARY = "conversion.json"


def save_converted(conversion, out_dir: str, source: str) -> dict:
    """Writes a converted checkpoint directory; returns the summary written.

    ``conversion`` is an ``egoexo_jax.convert.pyslowfast.Conversion`` (variables, model config,
    key report, the PySlowFast cfg and epoch); ``source`` is the file it was read from.
    """
    out = pathlib.Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    var_dir = out / "variables"
    if var_dir.exists():
        raise FileExistsError(f"{var_dir} already exists; choose an empty --output directory")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(var_dir, jax.tree.map(np.asarray, conversion.variables))
    ckptr.wait_until_finished()
    (out / MODEL_CONFIG).write_text(model_config_to_json(conversion.model_config))
    (out / "pyslowfast_config.yaml").write_text(yaml.safe_dump(conversion.pyslowfast_cfg))
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(conversion.variables.get("params", {}))))
    summary = {
        "source": os.path.abspath(source),
        "epoch": conversion.epoch,
        "model_name": conversion.pyslowfast_cfg.get("MODEL", {}).get("MODEL_NAME"),
        "arch": conversion.model_config.arch,
        "num_params": n_params,
        "num_mapped_keys": len(conversion.report["mapped"]),
        "ignored_keys": "num_batches_tracked buffers",
        "mapped": conversion.report["mapped"],
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def is_converted_dir(path: str) -> bool:
    """Whether ``path`` holds a converted checkpoint (``model_config.json`` and ``variables/``)."""
    p = pathlib.Path(path)
    return (p / MODEL_CONFIG).is_file() and (p / "variables").is_dir()


def load_converted(path: str, dtype: str | None = None):
    """``(module, variables, model_config)`` from a converted checkpoint directory."""
    p = pathlib.Path(path).absolute()
    if not is_converted_dir(p):
        raise MissingFileError(f"{p}: not a converted checkpoint (needs {MODEL_CONFIG} and variables/)")
    cfg = model_config_from_json((p / MODEL_CONFIG).read_text())
    if dtype:
        cfg.dtype = dtype
    variables = ocp.StandardCheckpointer().restore(p / "variables")
    return models.build(cfg), variables, cfg
