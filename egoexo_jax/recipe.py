"""Recipe files (``configs/*.py``): Python files loaded by path, not imported from a package.

A recipe is named on the command line as ``--config=path/to/recipe.py[:variant]`` and defines
``get_config(variant=None)``. :func:`load_module` loads any such file (also the helpers a recipe
shares with its neighbours, ``configs/common.py``) without touching ``sys.path``, so a recipe
works from any working directory and with the installed package. :func:`check_argv` lets an
entry point reject a missing recipe, an unknown variant or a mistyped ``--config.<key>`` with
one line before absl parses its flags.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Optional, Sequence

import ml_collections

from egoexo_jax import config_schema
from egoexo_jax.cli import MissingFileError


def load_module(path: str) -> ModuleType:
    """The Python file at ``path`` as a fresh module (its ``__file__`` set)."""
    name = "_egoexo_recipe_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of ``"recipe.py[:variant]"`` (``get_config()`` without a variant)."""
    path, _, variant = spec.partition(":")
    module = load_module(path)
    return module.get_config(variant) if variant else module.get_config()


def config_spec(argv: Sequence[str]) -> Optional[str]:
    """The value of ``--config=...`` / ``--config ...`` in ``argv`` (None if absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_argv(argv: Sequence[str]) -> None:
    """Checks the ``--config`` of a command line before absl parses it (absl would answer with
    chained tracebacks): the recipe file must exist, its variant must be one it knows, and every
    ``--config.<key>=...`` override must name an existing key (the error suggests the closest).

    Raises:
      egoexo_jax.cli.MissingFileError: no such recipe file.
      egoexo_jax.config_schema.ConfigError: an unknown variant or key.
    """
    spec = config_spec(argv)
    if spec is None:
        return
    if not os.path.isfile(spec.split(":", 1)[0]):
        raise MissingFileError(
            f"config file not found, --config={spec}, expected a recipe file such as configs/pretrain.py[:variant]"
        )
    try:
        config = load_config(spec)
    except ValueError as e:  # get_config's answer to an unknown variant
        raise config_schema.ConfigError(f"--config={spec}: {e}") from None
    keys = set(config_schema.all_keys(config))
    for arg in argv:
        if arg.startswith("--config.") and not arg.startswith("--config="):
            name = arg[len("--config.") :].split("=", 1)[0]
            if name not in keys:
                raise config_schema.ConfigError(f"--config.{name}: {config_schema.unknown_key_message(name, config)}")
