"""Converter: full-size key maps, the torch-free CLI, and bad input."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from egoexo_jax import models
from egoexo_jax.checkpoint.converted import load_converted
from egoexo_jax.cli import UserError
from egoexo_jax.convert import pyslowfast
from egoexo_jax.convert.torch_zip import CheckpointReadError, load_torch_file
from egoexo_jax.models import presets

REPO = pathlib.Path(__file__).resolve().parents[1]

# fullsize_keys JSON -> our full-size model config for the same official YAML.
FULLSIZE = {
    "SLOWFAST_8x8_R50_k400": lambda: presets.slowfast(50),
    "Ego_Exo_SLOWFAST_8x8_R50_k400": lambda: presets.egoexo_pretrain_heads(presets.slowfast(50)),
    "Ego_Exo_SLOW_8x8_R50_k400": lambda: presets.egoexo_pretrain_heads(presets.slow(50)),
    "Ego_Exo_SLOWFAST_8x8_R101_charades_ego": lambda: presets.charades_ego_heads(presets.slowfast(101)),
    "Ego_Exo_star_SLOWFAST_8x8_R50_charades_ego": lambda: presets.charades_ego_heads(presets.slowfast(50), star=True),
    "Ego_Exo_SLOWFAST_8x8_R50_epic100": lambda: presets.epic100_heads(presets.slowfast(50)),
    "Ego_Exo_star_SLOWFAST_8x8_R101_epic100": lambda: presets.epic100_heads(presets.slowfast(101), star=True),
}


def test_every_resnet_fullsize_json_is_covered(fixtures_dir):
    names = {p.stem for p in (fixtures_dir / "pyslowfast" / "fullsize_keys").glob("*.json")}
    assert {n for n in names if "MVIT" not in n.upper()} == set(FULLSIZE)


@pytest.mark.parametrize("name", sorted(FULLSIZE))
def test_fullsize_key_map(fixtures_dir, name):
    spec = json.loads((fixtures_dir / "pyslowfast" / "fullsize_keys" / f"{name}.json").read_text())
    cfg = FULLSIZE[name]()
    module = models.build(cfg)
    # Zero-stride stand-ins: right shapes, no memory.
    state = {k: np.broadcast_to(np.zeros((), np.float32), v["shape"]) for k, v in spec["keys"].items()}
    variables, report = pyslowfast.variables_from_state_dict(module, state, models.input_shapes(cfg))
    assert not report["missing"] and not report["unused"] and not report["mismatched"]
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
    assert n_params == spec["num_params"]


def test_wrong_shape_and_extra_keys_are_named(fixtures_dir):
    path = fixtures_dir / "pyslowfast" / "slow_r50" / "checkpoint.pyth"
    state, cfg, _ = pyslowfast.read_checkpoint(path)
    conv = pyslowfast.convert_checkpoint(path)
    bad = dict(state)
    bad["s2.pathway0_res0.branch2.a.weight"] = np.zeros((3, 3, 1, 1, 1), np.float32)
    bad["extra.layer.weight"] = np.zeros(3, np.float32)
    del bad["head.projection.bias"]
    with pytest.raises(pyslowfast.ConversionError) as e:
        pyslowfast.variables_from_state_dict(conv.module, bad, models.input_shapes(conv.model_config))
    msg = str(e.value)
    assert "s2.pathway0_res0.branch2.a.weight" in msg and "extra.layer.weight" in msg
    assert "head.projection.bias" in msg


def test_legacy_headobjhead_prefix_is_accepted(fixtures_dir):
    path = fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50" / "checkpoint.pyth"
    state, _, _ = pyslowfast.read_checkpoint(path)
    conv = pyslowfast.convert_checkpoint(path)
    legacy = {k.replace("handobjhead.", "headobjhead."): v for k, v in state.items()}
    variables, _ = pyslowfast.variables_from_state_dict(conv.module, legacy, models.input_shapes(conv.model_config))
    np.testing.assert_array_equal(
        variables["params"]["handobjhead"]["score_projection"]["bias"], state["handobjhead.score_projection.bias"]
    )


def _replace_pickled_str(data: bytes, old: str, new: str) -> bytes:
    """Swaps one BINUNICODE string in a pickle (opcode 'X', 4-byte little-endian length)."""
    o, n = old.encode(), new.encode()
    needle = b"X" + len(o).to_bytes(4, "little") + o
    assert data.count(needle) == 1
    return data.replace(needle, b"X" + len(n).to_bytes(4, "little") + n)


def _rewrite_zip(src, dst, transform):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = transform(data)
            zout.writestr(item, data)


def test_checkpoint_of_another_architecture(fixtures_dir, tmp_path):
    """SlowFast weights whose stored cfg says Slow-only: the error names the keys."""
    sf = fixtures_dir / "pyslowfast" / "slowfast_r50" / "checkpoint.pyth"
    sf_cfg = load_torch_file(sf)["cfg"]
    slow_cfg = load_torch_file(fixtures_dir / "pyslowfast" / "slow_r50" / "checkpoint.pyth")["cfg"]
    bad = tmp_path / "mixed.pyth"
    _rewrite_zip(sf, bad, lambda d: _replace_pickled_str(d, sf_cfg, slow_cfg))
    with pytest.raises(pyslowfast.ConversionError) as e:
        pyslowfast.convert_checkpoint(bad)
    msg = str(e.value)
    assert str(bad) in msg and "s1.pathway1_stem.conv.weight" in msg and "\n" not in msg
    assert "checkpoint keys without a module parameter" in msg


def test_truncated_file(fixtures_dir, tmp_path):
    src = (fixtures_dir / "pyslowfast" / "slow_r50" / "checkpoint.pyth").read_bytes()
    bad = tmp_path / "truncated.pyth"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(CheckpointReadError, match="truncated or corrupt"):
        load_torch_file(bad)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_arbitrary_global_is_refused(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model_state": {}, "cfg": _Evil(marker)}, protocol=2)
    bad = tmp_path / "evil.pyth"
    if layout == "zip":
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("archive/data.pkl", payload)
    else:
        bad.write_bytes(
            pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
            + pickle.dumps(1001, protocol=2)
            + pickle.dumps({}, protocol=2)
            + payload
        )
    with pytest.raises(CheckpointReadError, match="refusing to load global '(posix|os).system'"):
        load_torch_file(bad)
    assert not marker.exists()


def _run_cli(args, tmp_path):
    """Runs the converter CLI where ``import torch`` raises."""
    blocker = tmp_path / "no_torch"
    (blocker / "torch").mkdir(parents=True, exist_ok=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO)]))
    return subprocess.run(
        [sys.executable, "-m", "egoexo_jax.convert", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_without_torch(fixtures_dir, tmp_path):
    d = fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50"
    out_dir = tmp_path / "converted"
    res = _run_cli(["--input", str(d / "checkpoint.pyth"), "--output", str(out_dir)], tmp_path)
    assert res.returncode == 0, res.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import torch"],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "no_torch")),
    )
    assert check.returncode != 0  # the blocker really blocks
    summary = json.loads((out_dir / "conversion.json").read_text())
    assert summary["model_name"] == "HandObjKdSlowFastHSlow" and summary["num_mapped_keys"] == 560
    module, variables, cfg = load_converted(out_dir)
    inputs, ref = np.load(d / "inputs.npz"), np.load(d / "outputs.npz")
    out = module.apply(variables, [inputs[f"pathway{i}"].transpose(0, 2, 3, 4, 1) for i in range(2)], train=False)
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=1e-4 * np.abs(ref["logits"]).max())


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "garbage.pyth"
    bad.write_bytes(b"\x80\x02not a checkpoint")
    res = _run_cli(["--input", str(bad), "--output", str(tmp_path / "o")], tmp_path)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "garbage.pyth" in last
    res = _run_cli(["--input", str(tmp_path / "missing.pyth"), "--output", str(tmp_path / "o")], tmp_path)
    assert res.returncode == 2 and "no such file" in res.stderr


@pytest.mark.parametrize(
    "old,new,error",
    [
        ("  MODE: conv\n", "  MODE: max\n", "MViT cfg MVIT.MODE='max' is not supported; expected 'conv'"),
        ("  TEST_CROP_SIZE: 64\n", "  TEST_CROP_SIZE: 80\n", "MViT cfg DATA.TEST_CROP_SIZE=80 differs"),
        ("  RESIDUAL_POOLING: true\n", "  RESIDUAL_POOLING: false\n", None),
        ("  EMBED_DIM: 16\n", "  EMBED_DIM: 32\n", "MViT cfg MVIT.EMBED_DIM=32 contradicts the weights"),
        ("  MLP_RATIO: 4.0\n", "  MLP_RATIO: 2.0\n", "MViT cfg MVIT.MLP_RATIO=2.0 contradicts the weights"),
        ("  DEPTH: 5\n", "  DEPTH: 4\n", "MViT cfg MVIT.POOL_Q_STRIDE=entry (4, 1, 2, 2); expected (block"),
        ("  ARCH: mvit\n", "  ARCH: slowfast\n", "MODEL.MODEL_NAME='MViT' is not supported"),
    ],
)
def test_mvit_stored_cfg_edits(fixtures_dir, tmp_path, caplog, old, new, error):
    """MViT cfg values the JAX model lacks, or the weights contradict (EMBED_DIM, MLP_RATIO), are
    one-line errors naming the field; a value the weights cannot reveal (RESIDUAL_POOLING) converts,
    and the fields trusted as stored are logged."""
    src = fixtures_dir / "pyslowfast" / "mvit_v2_b_32x3" / "checkpoint.pyth"
    cfg = load_torch_file(src)["cfg"]
    assert cfg.count(old) == 1
    edited = tmp_path / "edited.pyth"
    _rewrite_zip(src, edited, lambda d: _replace_pickled_str(d, cfg, cfg.replace(old, new)))
    if error:
        with pytest.raises(UserError) as e:
            pyslowfast.convert_checkpoint(edited)
        assert str(e.value).startswith(error) and "\n" not in str(e.value)
        return
    with caplog.at_level("WARNING"):
        conv = pyslowfast.convert_checkpoint(edited)
    assert conv.model_config.mvit.residual_pooling is False
    lines = [r.getMessage() for r in caplog.records if "trusted as stored" in r.getMessage()]
    assert len(lines) == 1 and "MVIT.RESIDUAL_POOLING=False" in lines[0] and "MVIT.POOL_Q_STRIDE=" in lines[0]
