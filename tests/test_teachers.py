"""Online teachers: torchvision 2D ResNet (counts, torch-free conversion vs a numpy reference),
Object/Ego teacher loaders and the frozen, jitted target function.

No torch: checkpoint files are written here in ``torch.save``'s zip and legacy layouts
(``write_torch_file``), and the reference forward is plain numpy (float64).
"""

import collections
import io
import logging
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from egoexo_jax import config_schema, models, teacher_loading
from egoexo_jax.checkpoint.converted import save_converted
from egoexo_jax.convert import pyslowfast
from egoexo_jax.convert.torch_zip import load_torch_file
from egoexo_jax.convert.torchvision_resnet import ConversionError, infer_architecture, load_torchvision_resnet
from egoexo_jax.models import presets, teachers
from egoexo_jax.models.resnet2d import ResNet2D, num_params

KEY = jax.random.key(0, impl="rbg")

# ----------------------------------------------------------------------------------------------
# torch.save writer (zip and legacy layouts), numpy only.


class _Global:
    """Pickled as the GLOBAL ``module.name`` (torch need not be importable)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce requires a callable
        raise NotImplementedError


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        return (
            _Global("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()),
        )


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


class _TorchPickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f, legacy):
        super().__init__(f, protocol=2)
        self.legacy = legacy

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = _save_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        kind = _Global("torch", _STORAGE_NAMES[obj.array.dtype])
        if self.legacy:
            return ("storage", kind, obj.key, "cpu", obj.array.size, None)
        return ("storage", kind, obj.key, "cpu", obj.array.size)


def write_torch_file(path, obj, layout="zip"):
    """``torch.save(obj, path)`` for containers of numpy arrays (float32 / int64)."""
    storages = []

    def wrap(x):
        if isinstance(x, np.ndarray):
            arr = np.ascontiguousarray(x)
            st = _Storage(str(len(storages)), arr)
            storages.append(st)
            return _Tensor(st, arr.shape)
        if isinstance(x, collections.OrderedDict):
            return collections.OrderedDict((k, wrap(v)) for k, v in x.items())
        if isinstance(x, dict):
            return {k: wrap(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(wrap(v) for v in x)
        return x

    buf = io.BytesIO()
    _TorchPickler(buf, legacy=layout == "legacy").dump(wrap(obj))
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", buf.getvalue())
            z.writestr("archive/byteorder", "little")
            z.writestr("archive/version", "3\n")
            for st in storages:
                z.writestr(f"archive/data/{st.key}", st.array.astype(st.array.dtype.newbyteorder("<")).tobytes())
        return
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(buf.getvalue())
        f.write(pickle.dumps([st.key for st in storages], protocol=2))
        for st in storages:
            f.write(struct.pack("<q", st.array.size) + st.array.tobytes())


# ----------------------------------------------------------------------------------------------
# torchvision-layout random state dicts and a numpy reference forward.

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _blocks_of(depth, width):
    """[(prefix, inplanes, planes, stride, has_downsample)] in torchvision order."""
    bottleneck = depth >= 50
    exp = 4 if bottleneck else 1
    out, inplanes = [], width
    for s, n in enumerate(BLOCKS[depth]):
        planes = width * 2**s
        for i in range(n):
            stride = 2 if s > 0 and i == 0 else 1
            out.append(
                (f"layer{s + 1}.{i}", inplanes, planes, stride, i == 0 and (stride != 1 or inplanes != planes * exp))
            )
            inplanes = planes * exp
    return out, inplanes


def random_torchvision_state(depth, width, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()

    def conv(name, o, i, k):
        sd[name + ".weight"] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(name, c):
        sd[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        sd[name + ".running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        sd[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".num_batches_tracked"] = np.array(7, np.int64)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    blocks, final = _blocks_of(depth, width)
    for prefix, inp, planes, _, down in blocks:
        if depth >= 50:
            conv(prefix + ".conv1", planes, inp, 1), bn(prefix + ".bn1", planes)
            conv(prefix + ".conv2", planes, planes, 3), bn(prefix + ".bn2", planes)
            conv(prefix + ".conv3", planes * 4, planes, 1), bn(prefix + ".bn3", planes * 4)
            out = planes * 4
        else:
            conv(prefix + ".conv1", planes, inp, 3), bn(prefix + ".bn1", planes)
            conv(prefix + ".conv2", planes, planes, 3), bn(prefix + ".bn2", planes)
            out = planes
        if down:
            conv(prefix + ".downsample.0", out, inp, 1), bn(prefix + ".downsample.1", out)
    sd["fc.weight"] = (rng.standard_normal((num_classes, final)) / np.sqrt(final)).astype(np.float32)
    sd["fc.bias"] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    return sd


def np_conv(x, w, stride, pad):
    """``[N, H, W, C]`` x torch ``[O, I, kh, kw]`` -> ``[N, Ho, Wo, O]`` by a loop over kernel offsets."""
    n, h, wd, _ = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, ho, wo, o))
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[:, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nhwc,oc->nhwo", patch, w[:, :, dy, dx])
    return out


def np_bn(x, sd, name):
    return (x - sd[name + ".running_mean"]) / np.sqrt(sd[name + ".running_var"].astype(np.float64) + 1e-5) * sd[
        name + ".weight"
    ] + sd[name + ".bias"]


def np_maxpool(x):
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    return np.max(
        [xp[:, dy : dy + 2 * (ho - 1) + 1 : 2, dx : dx + 2 * (wo - 1) + 1 : 2] for dy in range(3) for dx in range(3)],
        axis=0,
    )


def np_resnet(sd, depth, width, x):
    """torchvision ResNet forward in eval mode, float64, NHWC input."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    x = relu(np_bn(np_conv(x.astype(np.float64), sd["conv1.weight"], 2, 3), sd, "bn1"))
    x = np_maxpool(x)
    for prefix, _, _, stride, down in _blocks_of(depth, width)[0]:
        if depth >= 50:
            y = relu(np_bn(np_conv(x, sd[prefix + ".conv1.weight"], 1, 0), sd, prefix + ".bn1"))
            y = relu(np_bn(np_conv(y, sd[prefix + ".conv2.weight"], stride, 1), sd, prefix + ".bn2"))
            y = np_bn(np_conv(y, sd[prefix + ".conv3.weight"], 1, 0), sd, prefix + ".bn3")
        else:
            y = relu(np_bn(np_conv(x, sd[prefix + ".conv1.weight"], stride, 1), sd, prefix + ".bn1"))
            y = np_bn(np_conv(y, sd[prefix + ".conv2.weight"], 1, 1), sd, prefix + ".bn2")
        if down:
            x = np_bn(np_conv(x, sd[prefix + ".downsample.0.weight"], stride, 0), sd, prefix + ".downsample.1")
        x = relu(x + y)
    return x.mean(axis=(1, 2)) @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"]


# ----------------------------------------------------------------------------------------------
# 2D ResNet and converter.


@pytest.mark.parametrize(
    "depth,expected", [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)]
)
def test_parameter_counts_match_torchvision(depth, expected):
    assert num_params(ResNet2D(depth=depth)) == expected


@pytest.mark.parametrize(
    "depth,width,layout",
    [
        (18, 16, "zip"),
        (50, 8, "zip"),
        (18, 4, "legacy"),  # legacy layout: storages follow the pickle
    ],
)
def test_converter_parity_with_numpy_reference(tmp_path, depth, width, layout):
    sd = random_torchvision_state(depth, width, num_classes=10, seed=depth)
    path = tmp_path / f"resnet{depth}.pth"
    write_torch_file(path, sd, layout)
    module, variables = load_torchvision_resnet(path)  # depth inferred
    assert (module.depth, module.width, module.num_classes) == (depth, width, 10)
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer2_0"]["downsample_1"]["var"], sd["layer2.0.downsample.1.running_var"]
    )
    # 40 px: odd intermediate sizes (5 -> 3) exercise the symmetric stride-2 padding.
    x = np.random.default_rng(1).standard_normal((2, 40, 40, 3)).astype(np.float32)
    ours = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
    ref = np_resnet(sd, depth, width, x)
    assert ours.dtype == np.float32 and ours.shape == (2, 10)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"ResNet-{depth} width {width} ({layout}): max|ours - ref| / max|ref| = {err:.2e}")
    assert err <= 1e-4


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    sd = random_torchvision_state(18, 4, num_classes=6, seed=3)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    write_torch_file(path, sd)
    return path, sd


def test_infer_architecture():
    for depth in (18, 34, 50, 101, 152):
        sd = {k: np.zeros(1) for k in random_torchvision_state(depth, 1, 3, seed=0)}
        sd["conv1.weight"], sd["fc.weight"] = np.zeros((1, 3, 7, 7)), np.zeros((3, 8))
        assert infer_architecture(sd) == {"depth": depth, "width": 1, "num_classes": 3}


def test_wrong_depth_is_named(r18_file):
    path, _ = r18_file
    with pytest.raises(ConversionError) as e:
        load_torchvision_resnet(path, depth=34)
    msg = str(e.value)
    assert str(path) in msg and "layer1.2.bn1.weight" in msg and "look like a ResNet-18" in msg
    with pytest.raises(ConversionError, match="layer1.0.conv3.weight"):
        load_torchvision_resnet(path, depth=50)


def test_unmapped_missing_and_mismatched_keys_are_named(r18_file, tmp_path):
    _, sd = r18_file
    bad = collections.OrderedDict(sd)
    bad["extra.layer.weight"] = np.zeros(3, np.float32)
    del bad["layer2.0.downsample.1.running_var"]
    bad["layer3.1.conv2.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    path = tmp_path / "bad.pth"
    write_torch_file(path, bad)
    with pytest.raises(ConversionError) as e:
        load_torchvision_resnet(path)
    msg = str(e.value)
    assert str(path) in msg
    for key in ("extra.layer.weight", "layer2.0.downsample.1.running_var", "layer3.1.conv2.weight"):
        assert key in msg


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    write_torch_file(path, [np.zeros(3, np.float32)])
    with pytest.raises(ConversionError, match="not a torchvision ResNet state_dict"):
        load_torchvision_resnet(path)
    path = tmp_path / "other.pth"
    write_torch_file(path, collections.OrderedDict(w=np.zeros(3, np.float32)))
    with pytest.raises(ConversionError, match="do not describe a torchvision ResNet"):
        load_torchvision_resnet(path)


def test_load_object_teacher(r18_file, tiny_object):
    path, sd = r18_file
    module, variables = teacher_loading.load_object_teacher(str(path), depth=18, num_classes=6)
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)
    with pytest.raises(teachers.TeacherError, match="6 classes; expected 1000"):
        teacher_loading.load_object_teacher(str(path), depth=18)
    with pytest.raises(ConversionError):
        teacher_loading.load_object_teacher(str(path), depth=50, num_classes=6)
    module, variables, logged = tiny_object  # random init (weights=None)
    assert any("RANDOMLY initialised" in r.getMessage() for r in logged)
    assert variables["params"]["fc"]["kernel"].shape == (32, 7)
    assert set(variables) == {"params", "batch_stats"}


# ----------------------------------------------------------------------------------------------
# Teacher functions.


def _student_clip(b=2, t=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, t, size, size, 3)).astype(np.float32)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def tiny_object():
    """Random-init ResNet-18 width 4, 7 classes (one jitted init for the whole file) + its log."""
    handler = _Records()
    logging.getLogger("absl").addHandler(handler)
    try:
        module, variables = teacher_loading.load_object_teacher(None, depth=18, width=4, num_classes=7)
    finally:
        logging.getLogger("absl").removeHandler(handler)
    return module, variables, handler.records


def test_object_teacher_logits_equal_manual_loop(tiny_object):
    module, variables, _ = tiny_object
    clip = _student_clip()
    mean, std = (0.40, 0.45, 0.50), 0.225  # per channel, in the clip's (BGR) order
    got = jax.jit(
        lambda v, c: teachers.object_teacher_logits(
            module, v, c, num_frames_k=3, input_mean=mean, input_std=std, input_bgr=True
        )
    )(variables, clip)
    assert got.shape == (2, 7) and got.dtype == jnp.float32

    one = jax.jit(lambda v, f: module.apply(v, f[None], train=False)[0])
    want = np.zeros((2, 7))
    for b in range(2):
        for t in (0, 2, 4):  # floor(linspace(0, 4, 3))
            unit_bgr = clip[b, t] * std + np.asarray(mean, np.float32)
            rgb = unit_bgr[..., ::-1]
            frame = (rgb - np.asarray(teachers.IMAGENET_MEAN)) / np.asarray(teachers.IMAGENET_STD)
            want[b] += np.asarray(one(variables, frame.astype(np.float32))) / 3
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_frame_indices():
    np.testing.assert_array_equal(teachers.frame_indices(32, 8), [0, 4, 8, 13, 17, 22, 26, 31])
    with pytest.raises(ValueError, match="cannot take 9 frames of a 8-frame clip"):
        teachers.frame_indices(8, 9)


def _tiny_video_cfg(num_classes=(2,)):
    return presets.slow(
        18, width_per_group=4, num_frames=2, crop_size=32, num_classes=num_classes, dropout_rate=0.5, bn_group_size=0
    )


@pytest.fixture(scope="module")
def tiny_ego():
    """2-way Slow R18 (width 4, 2 frames): random numpy variables of the right shapes (no compile)."""
    cfg = _tiny_video_cfg()
    module = models.build(cfg)
    shapes = jax.eval_shape(lambda: module.init(KEY, [jnp.zeros((1, 2, 32, 32, 3))], train=False))
    rng = np.random.default_rng(5)

    def fill(path, x):
        name = path[-1].key
        if name == "kernel":
            return (rng.standard_normal(x.shape) * np.sqrt(2.0 / np.prod(x.shape[:-1]))).astype(np.float32)
        if name in ("scale", "var"):  # non-trivial running stats: eval BN != batch-statistics BN
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(x.shape)).astype(np.float32)

    return cfg, jax.tree_util.tree_map_with_path(fill, dict(shapes))


def test_ego_teacher_from_variables_and_converted_dir(tiny_ego, tmp_path):
    cfg, variables = tiny_ego
    module, v = teacher_loading.ego_teacher_from_variables(cfg, variables, jnp.bfloat16)
    assert module.dtype == jnp.bfloat16 and cfg.dtype == "float32"  # caller's config untouched
    conv = pyslowfast.Conversion(
        module=models.build(cfg),
        variables=variables,
        model_config=cfg,
        report={"mapped": []},
        pyslowfast_cfg={},
        epoch=None,
    )
    save_converted(conv, str(tmp_path / "conv"), "memory")
    module, loaded = teacher_loading.load_ego_teacher(str(tmp_path / "conv"))
    assert module.num_classes == (2,)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)

    bad = jax.tree.map(lambda x: x, variables)
    bad["params"]["s1"]["pathway0_stem"]["conv"]["kernel"] = np.zeros((1, 7, 7, 3, 5), np.float32)
    with pytest.raises(teachers.TeacherError, match="pathway0_stem.*conv.*kernel"):
        teacher_loading.ego_teacher_from_variables(cfg, bad)
    with pytest.raises(teachers.TeacherError, match="first head has 3 classes"):
        teacher_loading.ego_teacher_from_variables(_tiny_video_cfg((3,)), variables)


def test_ego_teacher_pyth_two_way_and_not(fixtures_dir, tmp_path):
    src = fixtures_dir / "pyslowfast" / "slow_r50" / "checkpoint.pyth"
    with pytest.raises(teachers.TeacherError) as e:
        teacher_loading.load_ego_teacher(str(src))
    assert str(src) in str(e.value) and "first head has 10 classes" in str(e.value)

    ckpt = load_torch_file(src)
    cfg = yaml.safe_load(ckpt["cfg"])
    cfg["MODEL"]["NUM_CLASSES"] = 2
    state = collections.OrderedDict(ckpt["model_state"])
    state["head.projection.weight"] = state["head.projection.weight"][:2]
    state["head.projection.bias"] = state["head.projection.bias"][:2]
    path = tmp_path / "ego.pyth"
    write_torch_file(path, {"epoch": 1, "model_state": state, "optimizer_state": {}, "cfg": yaml.safe_dump(cfg)})
    module, variables = teacher_loading.load_ego_teacher(str(path), jnp.bfloat16)
    assert module.num_classes == (2,) and module.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        variables["params"]["head"]["projection"]["kernel"], state["head.projection.weight"].T
    )
    with pytest.raises(teachers.TeacherError, match="no such file"):
        teacher_loading.load_ego_teacher(str(tmp_path / "nope.pyth"))


def test_ego_teacher_pathways_layout_and_renormalisation():
    spec = teachers.EgoTeacher(module=None, num_pathways=2, num_frames=8, alpha=4)
    slow, fast = jnp.asarray(_student_clip(1, 2, 8)), jnp.asarray(_student_clip(1, 8, 8, seed=1))
    same = teachers.ego_teacher_pathways(spec, [slow, fast], input_mean=0.45, input_std=0.225, input_bgr=False)
    assert same[0] is slow and same[1] is fast
    # Slow-only student with 16 frames -> SlowFast teacher 8 fast / 2 slow, BGR-trained.
    clip = jnp.asarray(_student_clip(1, 16, 8, seed=2))
    bgr = teachers.EgoTeacher(module=None, num_pathways=2, num_frames=8, alpha=4, input_bgr=True)
    s, f = teachers.ego_teacher_pathways(bgr, [clip], input_mean=0.45, input_std=0.225, input_bgr=False)
    fi = teachers.frame_indices(16, 8)
    np.testing.assert_allclose(f, clip[:, fi][..., ::-1], atol=1e-6)  # scalar norm: only the order changes
    np.testing.assert_allclose(s, clip[:, fi[teachers.frame_indices(8, 2)]][..., ::-1], atol=1e-6)


@pytest.fixture(scope="module")
def online(tiny_ego, tiny_object):
    cfg, ego_vars = tiny_ego
    ego_module, ego_vars = teacher_loading.ego_teacher_from_variables(cfg, ego_vars)
    obj_module, obj_vars, _ = tiny_object
    spec = teachers.OnlineTeachers(
        ego=teachers.EgoTeacher.from_module(ego_module), object=teachers.ObjectTeacher(obj_module, num_frames=2)
    )
    hash(spec)  # static-argument friendly
    return spec, {"ego": ego_vars, "object": obj_vars}


NORM = dict(input_mean=0.45, input_std=0.225, input_bgr=False)


@pytest.fixture(scope="module")
def student_pathways():
    """SlowFast-like student batch: slow [4, 2, 32, 32, 3], fast [4, 8, 32, 32, 3]."""
    return [jnp.asarray(_student_clip(4, 2, 32)), jnp.asarray(_student_clip(4, 8, 32, seed=1))]


@pytest.fixture(scope="module")
def f32_targets(online, student_pathways):
    spec, tvars = online
    fn = jax.jit(lambda v, p: teachers.online_teacher_targets(spec, v, p, **NORM))
    return fn, fn(tvars, student_pathways)


def test_online_targets_use_the_right_frames_and_eval_mode(online, student_pathways, f32_targets):
    spec, tvars = online
    fn, out = f32_targets
    assert set(out) == {"ego_target", "object_target"}
    assert out["ego_target"].shape == (4, 2) and out["object_target"].shape == (4, 7)
    assert all(x.dtype == jnp.float32 for x in out.values())
    assert float(jnp.std(out["ego_target"][:, 1] - out["ego_target"][:, 0])) > 0  # not constant

    # Both teachers read only fast frames floor(linspace(0, 7, 2)) = 0, 7 (the 2-frame ego
    # teacher and K = 2 object frames); and, in eval mode, a clip's targets do not depend on
    # the other clips of the batch. Same shapes: no recompilation.
    slow, fast = student_pathways
    noise = jnp.asarray(_student_clip(4, 8, 32, seed=9))
    keep = np.zeros((1, 8, 1, 1, 1), bool)
    keep[:, [0, 7]] = True
    fast2 = jnp.where(keep, fast, noise).at[2:].set(noise[2:])
    slow2 = jnp.asarray(_student_clip(4, 2, 32, seed=10))
    out2 = fn(tvars, [slow2, fast2])
    for k in out:
        np.testing.assert_allclose(out2[k][:2], out[k][:2], rtol=1e-5, atol=1e-5)
        assert not np.allclose(out2[k][2:], out[k][2:])


def test_online_targets_have_zero_gradient_and_mutate_nothing(online, student_pathways):
    spec, tvars = online
    before = jax.tree.map(np.array, tvars)
    loss = lambda v: sum(
        jnp.sum(x**2)
        for x in teachers.online_teacher_targets(spec, v, student_pathways, **NORM).values()  # noqa: E731
    )
    grads = jax.jit(jax.grad(loss))(tvars)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
    jax.tree.map(np.testing.assert_array_equal, tvars, before)  # batch_stats untouched


def test_bfloat16_teachers_return_float32(online, student_pathways, f32_targets):
    spec, tvars = online
    bf16 = teachers.OnlineTeachers(
        ego=teachers.EgoTeacher.from_module(spec.ego.module, dtype=jnp.bfloat16),
        object=teachers.ObjectTeacher(spec.object.module, num_frames=2, dtype=jnp.bfloat16),
    )
    out = jax.jit(lambda v, p: teachers.online_teacher_targets(bf16, v, p, **NORM))(tvars, student_pathways)
    ref = f32_targets[1]
    for k in ref:
        assert out[k].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out[k])))
        scale = float(jnp.abs(ref[k]).max())
        assert float(jnp.abs(out[k] - ref[k]).max()) <= 0.1 * scale + 1e-3


def test_from_config(tiny_ego, tmp_path):
    cfg, variables = tiny_ego
    conv = pyslowfast.Conversion(
        module=models.build(cfg),
        variables=variables,
        model_config=cfg,
        report={"mapped": []},
        pyslowfast_cfg={},
        epoch=None,
    )
    save_converted(conv, str(tmp_path / "ego"), "memory")
    c = config_schema.base_config()
    c.model = presets.slowfast(18, width_per_group=4, num_frames=8, crop_size=32, num_classes=(5,))
    c.model.ego_classes, c.model.object_classes = 2, 7
    c.data.num_frames, c.data.dataset, c.data.bgr = 8, "charades_ego", None
    c.teachers.ego.source, c.teachers.ego.checkpoint = "online", str(tmp_path / "ego")
    c.teachers.object.update(source="online", weights="", depth=18, width=4, num_frames=2)
    fn, tvars = teacher_loading.from_config(c, c.model)
    assert set(tvars) == {"ego", "object"}
    assert fn.keywords == {"input_mean": 0.45, "input_std": 0.225, "input_bgr": True}  # Charades-Ego: BGR
    spec = fn.args[0]
    assert spec.object.module.num_classes == 7 and spec.ego.num_frames == 2

    c.teachers.object.num_frames = 9
    with pytest.raises(ValueError, match="cannot take 9 frames"):
        teacher_loading.from_config(c, c.model)
    none_cfg = config_schema.base_config()
    assert teacher_loading.from_config(none_cfg) == (None, {})
    c.teachers.object.source, c.teachers.ego.checkpoint = "none", ""
    with pytest.raises(teachers.TeacherError, match="checkpoint is empty"):
        teacher_loading.from_config(c, c.model)
