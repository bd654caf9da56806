"""Config validation (egoexo_jax/config_schema.py, config_rules.py): every leaf of every recipe has
a rule, and the values that used to crash or train silently wrong are one-line errors naming the
key; the MViT cfg reader's one-line refusals and weight check; lazy evaluation padding; BOM-prefixed
lists."""

import importlib.util
import os

import numpy as np
import pytest
import yaml
from test_configs import REPO, VARIANTS, config

from egoexo_jax import config_rules, config_schema, labels
from egoexo_jax.cli import UserError
from egoexo_jax.convert import mvit_yaml
from egoexo_jax.data import charades_ego, epic_kitchens, eval_pipeline, kinetics, samples
from egoexo_jax.data.config import default_data_config

import tiny_config


def _demo_configs():
    spec = importlib.util.spec_from_file_location("recipe_demo", os.path.join(REPO, "configs", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f"demo:{v}": module.get_config(v) for v in ("", "pretrain", "pretrain_baseline", "finetune")}


def all_configs():
    out = {"base": config_schema.base_config(), "tiny": tiny_config.get_config("/tmp/data")}
    for name, variants in VARIANTS.items():
        out.update({f"{name}:{v}": config(name, v) for v in variants})
    out.update(_demo_configs())
    return out


def test_every_leaf_of_every_recipe_has_a_rule_and_validates():
    configs = all_configs()
    seen = set()
    for name, c in configs.items():
        missing = [k for k in config_schema.leaves(c) if not config_schema.rule_of(k)]
        assert not missing, f"{name}: leaves without a validation rule: {missing}"
        seen.update(config_schema.leaves(c))
        config_schema.validate(c)
    # Every rule names a real leaf (a misspelt rule key would check nothing).
    ruled = set(config_rules._RANGES) | set(config_rules._CHOICES) | set(config_rules._BOOLS)
    ruled |= set(config_rules._STRINGS) | set(config_rules._CUSTOM) | set(config_rules.PATH_KEYS)
    assert ruled - seen == set()
    # The walk sees a leaf that a recipe adds without a rule.
    extra = tiny_config.get_config("/tmp/data")
    extra.data.new_knob = 3
    assert [k for k in config_schema.leaves(extra) if not config_schema.rule_of(k)] == ["data.new_knob"]


def _tiny(**flat):
    c = tiny_config.get_config("/tmp/data")
    c.update_from_flattened_dict(flat)
    return c


def _mvit_tiny(**flat):
    c = config("finetune_charades_ego", "mvit_v2_s")
    c.update_from_flattened_dict(flat)
    return c


def _charades_tiny(heads):
    c = tiny_config.get_config("/tmp/data")
    c.data = default_data_config("charades_ego")
    c.data.update(num_frames=8, train_jitter_scales=(64, 80), train_crop_size=64, test_crop_size=64)
    c.model.num_classes = heads
    return c


CASES = [
    (lambda: _tiny(**{"model.dropout_rate": 2.0}), "config.model.dropout_rate=2.0", "[0, 1)"),
    (lambda: _tiny(seed=-1), "config.seed=-1", "[0, 4294967296)"),
    (lambda: _tiny(seed=2**32), "config.seed=4294967296", "[0, 4294967296)"),
    (lambda: _tiny(**{"data.prefetch": -1}), "config.data.prefetch=-1", ">= 0"),
    (lambda: _tiny(eval_batch_size=100_000_000), "config.eval_batch_size=100000000", "expected at most"),
    (lambda: _tiny(**{"model.num_classes": (5,)}), "config.model.num_classes=(5,)", "expected (8,)"),
    (lambda: _charades_tiny((8,)), "config.model.num_classes=(8,)", "expected (157,)"),
    (lambda: _tiny(**{"data.decode_threads": "MANY"}), "config.data.decode_threads='MANY'", "expected one of"),
    (lambda: _tiny(**{"model.bn_momentum": 1.5}), "config.model.bn_momentum=1.5", "[0, 1]"),
    (lambda: _tiny(**{"teachers.object.depth": 42}), "config.teachers.object.depth=42", "expected one of"),
    (lambda: _mvit_tiny(**{"data.test_crop_size": 256}), "config.data.test_crop_size=256", "one crop for MViT"),
    (lambda: _mvit_tiny(**{"model.mvit.depth": 4}), "config.model.mvit.dim_mul=", "block in [0, 4]"),
    (lambda: _mvit_tiny(**{"model.mvit.droppath_rate": 1.0}), "config.model.mvit.droppath_rate=1.0", "[0, 1)"),
]


@pytest.mark.parametrize("make,starts,expected", CASES, ids=[c[1].split("=")[0] for c in CASES])
def test_bad_value_is_one_line_naming_the_key(make, starts, expected):
    with pytest.raises(config_schema.ConfigError) as err:
        config_schema.validate(make())
    message = str(err.value)
    assert message.startswith(starts) and expected in message and "\n" not in message


def test_wrong_types_of_tuple_leaves_are_refused():
    c = _tiny()
    c.data.std = -0.5
    with pytest.raises(config_schema.ConfigError, match=r"^config\.data\.std=-0.5; expected a positive"):
        config_schema.validate(c)
    c = _tiny(**{"model.spatial_strides": (1, 2, 2)})
    with pytest.raises(config_schema.ConfigError, match=r"^config\.model\.spatial_strides=.*4 stage strides"):
        config_schema.validate(c)


# ---- MViT cfg reader -----------------------------------------------------------------------------
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pyslowfast", "mvit_v2_b_32x3")


@pytest.fixture(scope="module")
def stored():
    """(cfg dict, {key: shape}) of the small MViTv2 fixture checkpoint."""
    from egoexo_jax.convert.torch_zip import load_torch_file

    ckpt = load_torch_file(os.path.join(FIXTURE, "checkpoint.pyth"))
    cfg = ckpt["cfg"]
    cfg = yaml.safe_load(cfg) if isinstance(cfg, str) else cfg
    return cfg, {k: tuple(np.shape(v)) for k, v in ckpt["model_state"].items()}


def _edit(cfg, section, **values):
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    out[section] = {**out.get(section, {}), **values}
    return out


@pytest.mark.parametrize(
    "section,values,names",
    [
        ("MVIT", {"DEPTH": 4}, "(depth=4)"),
        ("MVIT", {"MODE": "max"}, "MVIT.MODE='max' is not supported"),
        ("DATA", {"TEST_CROP_SIZE": 320}, "DATA.TEST_CROP_SIZE=320"),
        ("MVIT", {"POOL_Q_STRIDE": [[40, 1, 2, 2]]}, "MVIT.POOL_Q_STRIDE="),
    ],
)
def test_unbuildable_mvit_cfg_is_one_line_naming_the_field(stored, section, values, names):
    cfg, _ = stored
    with pytest.raises(mvit_yaml.MViTCfgError) as err:
        mvit_yaml.mvit_config_from_pyslowfast(_edit(cfg, section, **values))
    assert isinstance(err.value, UserError) and names in str(err.value) and "\n" not in str(err.value)


def test_mvit_cfg_checked_against_the_weights(stored):
    cfg, shapes = stored
    line = mvit_yaml.check_against_weights(mvit_yaml.mvit_config_from_pyslowfast(cfg), shapes)
    assert "MVIT.RESIDUAL_POOLING=True" in line and "MVIT.MODE" in line and "\n" not in line
    depth = cfg["MVIT"]["DEPTH"]
    for section, values, field in [
        ("MVIT", {"EMBED_DIM": 2 * cfg["MVIT"]["EMBED_DIM"]}, "MVIT.EMBED_DIM="),
        ("MVIT", {"MLP_RATIO": 2.0}, "MVIT.MLP_RATIO="),
        ("MVIT", {"REL_POS_TEMPORAL": False}, "MVIT.REL_POS_TEMPORAL=False"),
        ("MVIT", {"QKV_BIAS": not cfg["MVIT"].get("QKV_BIAS", True)}, "MVIT.QKV_BIAS="),
        ("MVIT", {"DEPTH": depth + 1}, f"MVIT.DEPTH={depth + 1}"),
    ]:
        with pytest.raises(mvit_yaml.MViTCfgError) as err:
            mvit_yaml.check_against_weights(
                mvit_yaml.mvit_config_from_pyslowfast(_edit(cfg, section, **values)), shapes
            )
        assert str(err.value).startswith(f"MViT cfg {field}"), str(err.value)
    # RESIDUAL_POOLING leaves no trace in the weights: accepted, and the line says it is trusted.
    off = mvit_yaml.mvit_config_from_pyslowfast(_edit(cfg, "MVIT", RESIDUAL_POOLING=False))
    assert "MVIT.RESIDUAL_POOLING=False" in mvit_yaml.check_against_weights(off, shapes)


# ---- lists -------------------------------------------------------------------------------------
def test_bom_is_not_part_of_the_first_entry(tmp_path):
    k = tmp_path / "train.csv"
    k.write_text("\ufeffa/v0.mp4 1\nb/v1.mp4 0\n", encoding="utf-8")
    assert [v.key for v in kinetics.read_kinetics_list(k, num_classes=2)] == ["a/v0.mp4", "b/v1.mp4"]
    k.write_text("a/v0.mp4 1\nb/v1.mp4 7\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.csv:2: label 7 outside \[0, 2\)"):
        kinetics.read_kinetics_list(k, num_classes=2)
    c = tmp_path / "train_1st.csv"
    c.write_text("\ufefforiginal_vido_id video_id frame_id path labels\nv0 0 0 v0/1.jpg 3\n", encoding="utf-8")
    assert [r.key for r in charades_ego.read_charades_ego(c)] == ["v0"]
    e = tmp_path / "EPIC_100_train.csv"
    header = "narration_id,participant_id,video_id,start_frame,stop_frame,verb_class,noun_class\n"
    e.write_text("\ufeff" + header + "P01_01_0,P01,P01_01,1,60,3,4\n", encoding="utf-8")
    assert [r.key for r in epic_kitchens.read_epic_annotations(str(e), "epic100")] == ["P01_01_0"]
    names = tmp_path / "classes.txt"
    names.write_text("\ufeffcat\ndog\n", encoding="utf-8")
    assert labels.load_class_names(str(names)) == ["cat", "dog"]


# ---- evaluation padding ------------------------------------------------------------------------
def test_eval_padding_decodes_no_extra_videos(tmp_path, monkeypatch):
    import fake_media as fm

    fm.write_kinetics_dataset(tmp_path, [40, 50])
    cfg = default_data_config("kinetics")
    cfg.update(
        path_to_data_dir=str(tmp_path),
        path_prefix=str(tmp_path),
        num_frames=4,
        sampling_rate=2,
        test_crop_size=32,
        num_ensemble_views=1,
        num_spatial_crops=1,
    )
    calls = []
    decode = samples.decode_clip
    monkeypatch.setattr(samples, "decode_clip", lambda *a, **k: calls.append(1) or decode(*a, **k))
    it, videos, views = eval_pipeline.make_eval_iterator(cfg, split="test", global_batch_size=64)
    batches = list(it)
    assert (videos, views, len(batches)) == (2, 1, 1)
    assert batches[0]["mask"].tolist() == [1.0, 1.0] + [0.0] * 62
    assert int(batches[0]["bad_inputs"].sum()) == 0
    assert len(calls) == 2  # one decode per real view; the 62 padding views copy a real sample


def test_epic55_lists_need_the_epic55_dataset():
    c = _tiny(**{"evaluate.epic55_s1": "s1.pkl"})
    with pytest.raises(config_schema.ConfigError, match=r"^config\.evaluate\.epic55_s1 .*expected 'epic55'"):
        config_schema.validate(c)
