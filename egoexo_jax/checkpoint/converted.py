"""Converted-checkpoint directories: orbax variables + model config + a JSON summary.

What ``python -m egoexo_jax.convert`` writes from an official ``.pyth``, so later runs read the
weights without converting them again.

Layout of ``DIR`` (what ``--config.init_from=DIR`` and ``predict --checkpoint DIR`` read), a local
folder or a ``gs://`` prefix (every file goes through :mod:`egoexo_jax.storage`, the variables
through orbax, which is handed the URL itself):

- ``variables/``: orbax ``StandardCheckpointer`` tree ``{"params": ..., "batch_stats": ...}``;
- ``model_config.json``: our model config (``egoexo_jax.models.build`` input);
- ``conversion.json``: source file, epoch, PySlowFast model name, parameter count and the
  PyTorch key -> flax path map;
- ``pyslowfast_config.yaml``: the checkpoint's own config, verbatim.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml

from egoexo_jax import models, storage
from egoexo_jax.checkpoint.config_json import model_config_from_json, model_config_to_json
from egoexo_jax.cli import MissingFileError

MODEL_CONFIG = "model_config.json"
SUMMARY = "conversion.json"
VARIABLES = "variables"


def save_converted(conversion, out_dir: str, source: str) -> dict:
    """Writes a converted checkpoint directory; returns the summary written.

    ``conversion`` is an ``egoexo_jax.convert.pyslowfast.Conversion`` (variables, model config,
    key report, the PySlowFast cfg and epoch); ``source`` is the file it was read from.
    """
    out = storage.absolute(out_dir)
    storage.makedirs(out)
    var_dir = storage.join(out, VARIABLES)
    if storage.exists(var_dir):
        raise FileExistsError(f"{var_dir} already exists; choose an empty --output directory")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(var_dir, jax.tree.map(np.asarray, conversion.variables))
    ckptr.wait_until_finished()
    storage.write_text(storage.join(out, MODEL_CONFIG), model_config_to_json(conversion.model_config))
    storage.write_text(storage.join(out, "pyslowfast_config.yaml"), yaml.safe_dump(conversion.pyslowfast_cfg))
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(conversion.variables.get("params", {}))))
    summary = {
        "source": storage.absolute(source),
        "epoch": conversion.epoch,
        "model_name": conversion.pyslowfast_cfg.get("MODEL", {}).get("MODEL_NAME"),
        "arch": conversion.model_config.arch,
        "num_params": n_params,
        "num_mapped_keys": len(conversion.report["mapped"]),
        "ignored_keys": "num_batches_tracked buffers",
        "mapped": conversion.report["mapped"],
    }
    storage.write_text(storage.join(out, SUMMARY), json.dumps(summary, indent=2))
    return summary


def is_converted_dir(path: str) -> bool:
    """Whether ``path`` holds a converted checkpoint (``model_config.json`` and ``variables/``)."""
    path = str(path)
    return storage.isfile(storage.join(path, MODEL_CONFIG)) and storage.isdir(storage.join(path, VARIABLES))


def load_converted(path: str, dtype: str | None = None):
    """``(module, variables, model_config)`` from a converted checkpoint directory."""
    path = storage.absolute(str(path))
    if not is_converted_dir(path):
        raise MissingFileError(f"{path}: not a converted checkpoint (needs {MODEL_CONFIG} and {VARIABLES}/)")
    cfg = model_config_from_json(storage.read_text(storage.join(path, MODEL_CONFIG)))
    if dtype:
        cfg.dtype = dtype
    variables = ocp.StandardCheckpointer().restore(storage.join(path, VARIABLES))
    return models.build(cfg), variables, cfg
