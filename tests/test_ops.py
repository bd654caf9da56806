"""The backend kernels (egoexo_jax.ops): every op's ``cpu`` form equals its plain ``xla`` form in
value and in both gradients (float32, CPU), over the shapes SlowFast, Slow and MViT use; the plain
forms match independent references (PyTorch's first-maximum pool gradient, float64 BatchNorm)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax import ops
from egoexo_jax.ops import cpu_conv, space_to_depth, xla


def _check(fn, ref, args, argnums, rtol=1e-4):
    """``fn`` == ``ref``: value of ``sum(sin(.))`` and its gradients w.r.t. ``argnums``, each
    gradient within ``rtol`` of its largest entry."""

    def grads(f):
        return jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=argnums)(*args)

    v, g = grads(jax.jit(fn))
    rv, rg = grads(ref)
    np.testing.assert_allclose(v, rv, rtol=rtol)
    for got, want in zip(g, rg):
        assert got.shape == want.shape
        assert float(jnp.abs(got - want).max()) <= rtol * float(jnp.abs(want).max())


def _conv_args(x_shape, kernel, out, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    fan_in = np.prod(kernel) * x_shape[-1]  # unit-scale outputs: sin() stays well conditioned
    w = jnp.asarray(rng.standard_normal((*kernel, x_shape[-1], out)) / np.sqrt(fan_in), jnp.float32)
    return x, w


def _lax_conv3d(x, w, stride):
    """Independent reference: XLA's 3D convolution written out here."""
    pad = [(k // 2, k // 2) for k in w.shape[:3]]
    return jax.lax.conv_general_dilated(
        x, w, stride, pad, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=jax.lax.Precision.HIGHEST
    )


CONV_CASES = [
    # (x shape, kernel, out channels, stride): every route of cpu_conv.padded_conv
    ((2, 6, 9, 8, 3), (3, 3, 3), 5, (1, 1, 1)),  # frame conv, 3 taps stacked on the outputs
    ((2, 5, 7, 6, 16), (3, 3, 1), 4, (1, 1, 1)),  # frame conv, non-square kernel
    ((2, 5, 7, 6, 4), (1, 1, 1), 6, (1, 1, 1)),  # matmul
    ((1, 6, 5, 5, 6), (3, 1, 1), 2, (1, 1, 1)),  # temporal conv, C <= kt * O
    ((2, 5, 3, 4, 16), (3, 1, 1), 4, (1, 1, 1)),  # temporal conv, C > kt * O
    ((2, 4, 3, 3, 5), (5, 1, 1), 3, (1, 1, 1)),  # temporal conv, kernel longer than T
    ((2, 4, 11, 10, 3), (5, 7, 7), 8, (1, 2, 2)),  # the fast stem: strided frame conv, 5 taps
    ((2, 2, 9, 12, 3), (1, 7, 7), 16, (1, 2, 2)),  # the slow stem
    ((2, 8, 6, 6, 8), (7, 1, 1), 4, (4, 1, 1)),  # the lateral fast -> slow conv (space-to-depth)
    ((2, 8, 6, 6, 8), (5, 1, 1), 4, (4, 1, 1)),  # the R101 lateral conv (kernel 5)
    ((2, 3, 7, 7, 8), (1, 3, 3), 8, (1, 2, 2)),  # a strided res-block conv
    ((2, 3, 4, 4, 8), (1, 3, 3), 8, (1, 2, 2)),  # onto a 2x2 map: space-to-depth
    ((2, 3, 7, 7, 8), (1, 1, 1), 16, (1, 2, 2)),  # a strided shortcut
    ((2, 2, 3, 3, 160), (1, 3, 3), 24, (1, 1, 1)),  # the interaction head's small wide map (patches)
    ((2, 3, 5, 4, 6), (3, 3, 3), 4, (2, 2, 2)),  # temporal and spatial stride (space-to-depth)
    ((1, 4, 8, 8, 3), (3, 7, 7), 6, (2, 4, 4)),  # the MViT patch stem's geometry
]


@pytest.mark.parametrize("x_shape, kernel, out, stride", CONV_CASES)
def test_conv3d_cpu_equals_xla(x_shape, kernel, out, stride):
    x, w = _conv_args(x_shape, kernel, out)
    _check(lambda a, b: ops.CPU.conv3d(a, b, stride), lambda a, b: _lax_conv3d(a, b, stride), (x, w), (0, 1))
    _check(
        lambda a, b: ops.XLA.conv3d(a, b, stride, jax.lax.Precision.HIGHEST),
        lambda a, b: _lax_conv3d(a, b, stride),
        (x, w),
        (0, 1),
    )


@pytest.mark.parametrize(
    "x_shape, kernel, out",
    [
        ((2, 6, 9, 8, 3), (3, 3, 3), 5),  # patches of x (C <= O)
        ((2, 4, 12, 10, 16), (3, 3, 1), 4),  # patches of dy (C > O, more than 64 positions)
        ((1, 1, 5, 5, 40), (1, 3, 3), 8),  # few positions: the patches are transposed
    ],
)
def test_cpu_valid_conv3d_kernel_gradient_branches(x_shape, kernel, out):
    x, w = _conv_args(x_shape, kernel, out, seed=2)
    valid = lambda a, b: jax.lax.conv_general_dilated(
        a,
        b,
        (1, 1, 1),
        "VALID",  # noqa: E731
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )
    _check(cpu_conv.valid_conv3d, valid, (x, w), (0, 1))


@pytest.mark.parametrize("shape", [(2, 3, 8, 10, 4), (1, 2, 7, 9, 3), (2, 4, 12, 12, 8)])
@pytest.mark.parametrize("kernels", [ops.CPU, ops.XLA], ids=["cpu", "xla"])
def test_stem_max_pool_first_maximum_gradient(shape, kernels):
    """Both forms: the max-pool's values, and each window's gradient on its first maximum only
    (PyTorch's rule; ties after a ReLU are common)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(np.maximum(rng.standard_normal(shape), 0), jnp.float32)  # many tied zeros
    y, vjp = jax.vjp(kernels.stem_max_pool, x)
    ry, rvjp = jax.vjp(ops.XLA.stem_max_pool, x)
    np.testing.assert_array_equal(y, ry)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_allclose(vjp(dy)[0], rvjp(dy)[0], atol=1e-6)
    counts = np.asarray(vjp(jnp.ones_like(y))[0])
    assert counts.sum() == y.size  # one winner per window
    # The winner is the first maximum in row-major order of its padded 3x3 window.
    b, t, h, w, c = shape
    xp = np.pad(np.asarray(x), [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    want = np.zeros((b, t, h + 2, w + 2, c))
    for r in range(y.shape[2]):
        for s in range(y.shape[3]):
            win = xp[:, :, 2 * r : 2 * r + 3, 2 * s : 2 * s + 3].reshape(b, t, 9, c)
            first = win.argmax(axis=2)
            for bi, ti, ci in np.ndindex(b, t, c):
                i, j = divmod(first[bi, ti, ci], 3)
                want[bi, ti, 2 * r + i, 2 * s + j, ci] += 1
    np.testing.assert_array_equal(counts, want[:, :, 1:-1, 1:-1])


BN_SHAPES = [(2, 4, 3, 5, 6, 16), (1, 8, 2, 3, 3, 32), (4, 2, 2, 4, 4, 8)]  # [G, g, T, H, W, C]


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_group_batch_norm_cpu_equals_xla(shape):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(shape) * 2 + 0.5, jnp.float32)
    g = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32)
    b = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
    for got, want in zip(ops.CPU.group_batch_norm(x, g, b, 1e-5), ops.XLA.group_batch_norm(x, g, b, 1e-5)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _check(
        lambda *a: ops.CPU.group_batch_norm(*a, 1e-5)[0],
        lambda *a: ops.XLA.group_batch_norm(*a, 1e-5)[0],
        (x, g, b),
        (0, 1, 2),
    )


@pytest.mark.parametrize("offset", [2.0, 300.0])
@pytest.mark.parametrize(
    "kernels", [ops.CPU, ops.XLA, ops.select("xla", rewrites="on")], ids=["cpu", "xla", "xla-rewrites"]
)
def test_group_batch_norm_gradient_matches_float64(offset, kernels):
    """Every form's gradients (cpu, plain xla, xla's one-pass statistics) == float64 autodiff of
    (x - mean) / std * g + b, also for activations whose mean is 100 standard deviations from 0
    (the cpu backward takes mean(dy * x_hat) from mean(dy * x); the one-pass statistics sum
    squares of x minus a shift)."""
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((2, 3, 4, 5, 6)) * 3 + offset
    g64, b64 = rng.standard_normal(6), rng.standard_normal(6)
    w = rng.standard_normal(x64.shape)

    def plain(x, g, b):
        m = x.mean((1, 2, 3), keepdims=True)
        v = jnp.mean(jnp.square(x - m), (1, 2, 3), keepdims=True)
        return (x - m) / jnp.sqrt(v + 1e-5) * g + b

    loss = lambda f, w: lambda *a: jnp.sum(jnp.sin(f(*a)) * w)  # noqa: E731
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = jax.grad(loss(lambda *a: kernels.group_batch_norm(*a, 1e-5)[0], f32(w)), (0, 1, 2))(
        f32(x64), f32(g64), f32(b64)
    )
    with jax.enable_x64():
        want = jax.grad(loss(plain, jnp.asarray(w)), (0, 1, 2))(jnp.asarray(x64), jnp.asarray(g64), jnp.asarray(b64))
        want = [np.asarray(e) for e in want]
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * float(np.abs(e).max()))


@pytest.mark.parametrize(
    "shape, kernel, stride",
    [
        ((2, 3, 7, 6, 5), (3, 3, 3), (1, 1, 1)),
        ((2, 3, 7, 6, 5), (3, 3, 3), (1, 2, 2)),  # a Q pooling stride
        ((1, 4, 9, 9, 4), (3, 3, 3), (1, 4, 4)),  # the first KV pooling stride
        ((2, 8, 14, 14, 12), (3, 3, 3), (1, 8, 8)),  # MViT-v2's 8x KV stride at stage 1
        ((2, 5, 6, 7, 3), (3, 1, 3), (2, 1, 2)),
    ],
)
def test_depthwise_conv3d_cpu_equals_xla(shape, kernel, stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, 1, shape[-1])) / np.sqrt(np.prod(kernel)), jnp.float32)
    grouped = lambda a, b: jax.lax.conv_general_dilated(  # noqa: E731
        a,
        b,
        stride,
        [(k // 2, k // 2) for k in kernel],
        feature_group_count=shape[-1],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    _check(lambda a, b: ops.CPU.depthwise_conv3d(a, b, stride), grouped, (x, w), (0, 1))
    _check(lambda a, b: ops.XLA.depthwise_conv3d(a, b, stride, jax.lax.Precision.HIGHEST), grouped, (x, w), (0, 1))


def test_selection_is_by_config_and_backend():
    assert ops.select("cpu").name == "cpu" and ops.select("xla").name == "xla"
    assert ops.select("auto").name == ("cpu" if jax.default_backend() == "cpu" else "xla")
    assert ops.select("xla", "highest").precision == jax.lax.Precision.HIGHEST
    assert ops.select("xla", "default").precision is None
    with pytest.raises(ValueError, match="model.kernels='gpu'"):
        ops.select("gpu")
    with pytest.raises(ValueError, match="model.precision"):
        ops.select("auto", "fp8")
    hash(ops.select("cpu", "high"))  # a static module field must be hashable


def test_xla_module_defaults_are_plain():
    """A module built without egoexo_jax.models.build (e.g. by a user) runs the plain XLA ops."""
    from egoexo_jax.models.resnet3d import Conv3D

    assert Conv3D(4, (1, 3, 3), (1, 1, 1)).kernels is ops.XLA
    assert xla.conv3d is ops.XLA.conv3d


# ---------------------------------------------------------------------------------------------
# The exact TPU rewrites (model.rewrites): space-to-depth stems, one-pass BatchNorm statistics.

STEM_CASES = [
    # (frames shape, temporal kernel, out channels)
    ((2, 4, 12, 10, 3), 5, 8),  # the fast stem (5x7x7, 3 -> 8)
    ((2, 2, 10, 12, 3), 1, 16),  # the slow stem (1x7x7)
    ((1, 3, 11, 9, 3), 5, 8),  # odd H and W: the fold pads them to even
    ((2, 1, 7, 8, 3), 1, 4),  # odd H only, one frame
]


@pytest.mark.parametrize("x_shape, kt, out", STEM_CASES)
@pytest.mark.parametrize("folded", [False, True], ids=["frames", "folded"])
def test_space_to_depth_stem_equals_strided_conv(x_shape, kt, out, folded):
    """The 4x4 stride-1 convolution over the 2x2 fold == the 7x7 stride-2 convolution, in value
    and in the gradients w.r.t. the (official-shape) weight and the frames; a host-folded input
    gives the same values and its gradient is the fold of the frames' gradient."""
    x, w = _conv_args(x_shape, (kt, 7, 7), out, seed=4)
    plain = lambda a, b: xla.conv3d(a, b, (1, 2, 2), jax.lax.Precision.HIGHEST)  # noqa: E731
    rewritten = lambda a, b: space_to_depth.stem_conv(a, b, jax.lax.Precision.HIGHEST)  # noqa: E731
    assert rewritten(x, w).shape == plain(x, w).shape
    if not folded:
        _check(rewritten, lambda a, b: _lax_conv3d(a, b, (1, 2, 2)), (x, w), (0, 1))
        _check(plain, lambda a, b: _lax_conv3d(a, b, (1, 2, 2)), (x, w), (0, 1))
        return
    z = jnp.asarray(space_to_depth.fold(np.asarray(x)))
    assert z.shape == (*x_shape[:2], -(-x_shape[2] // 2), -(-x_shape[3] // 2), 12)
    # Weight gradient and value: the same function of the weight.
    _check(lambda b: rewritten(z, b), lambda b: _lax_conv3d(x, b, (1, 2, 2)), (w,), (0,))
    # Input gradient: d/dz of the folded form == fold(d/dx of the plain form) on the frames'
    # positions (the zero slots past an odd edge stand for padding: their gradient is unused).
    loss = lambda f: lambda a: jnp.sum(jnp.sin(f(a, w)))  # noqa: E731
    gz = jax.grad(loss(rewritten))(z)
    gx = jax.grad(loss(lambda a, b: _lax_conv3d(a, b, (1, 2, 2))))(x)
    want = space_to_depth.fold(gx)
    real = space_to_depth.fold(np.ones(x_shape, np.float32)) > 0
    assert float(jnp.abs(jnp.where(real, gz, 0.0) - want).max()) <= 1e-4 * float(jnp.abs(want).max())


@pytest.mark.parametrize("shape", [(2, 3, 8, 6, 3), (1, 2, 7, 9, 3), (5, 4, 2)])
def test_space_to_depth_fold_numpy_equals_jax(shape):
    """The host (numpy) fold and the device (jax) fold agree element for element, keep the dtype,
    and put x[..., 2i + p, 2j + q, c] at channel (2p + q) * C + c (zeros past an odd edge)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    host = space_to_depth.fold(x)
    device = space_to_depth.fold(jnp.asarray(x))
    assert isinstance(host, np.ndarray) and host.dtype == np.float32 and host.flags.c_contiguous
    assert host.shape == space_to_depth.folded_shape(shape) == device.shape
    np.testing.assert_array_equal(host, np.asarray(device))
    *_, h, w, c = shape
    padded = np.zeros((*shape[:-3], h + h % 2, w + w % 2, c), np.float32)
    padded[..., :h, :w, :] = x
    for p in range(2):
        for q in range(2):
            k = 2 * p + q
            np.testing.assert_array_equal(host[..., k * c : (k + 1) * c], padded[..., p::2, q::2, :])
    assert space_to_depth.fold(x.astype(np.float16)).dtype == np.float16


def test_space_to_depth_stem_rejects_other_shapes():
    x, w = _conv_args((1, 2, 8, 8, 3), (1, 7, 7), 4)
    with pytest.raises(ValueError, match=r"input shape \(1, 2, 8, 8, 5\).*\[B, T, H, W, 3\].*12\]"):
        space_to_depth.stem_conv(jnp.zeros((1, 2, 8, 8, 5)), w)
    with pytest.raises(ValueError, match=r"input shape \(2, 8, 8, 3\)"):
        space_to_depth.stem_conv(x[0], w)
    with pytest.raises(ValueError, match=r"weight shape \(1, 3, 3, 3, 4\)"):
        space_to_depth.stem_conv(x, w[:, :3, :3])


def _bn_data(shape, offset, seed=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) + offset
    x[..., 0] = offset  # a constant channel: variance 0
    g = rng.uniform(0.5, 1.5, shape[-1])
    b = rng.standard_normal(shape[-1])
    return tuple(jnp.asarray(a, jnp.float32) for a in (x, g, b))


@pytest.mark.parametrize("shift", ["running", "none"])
@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_one_pass_batch_norm_equals_two_pass(shape, offset, shift):
    """xla.group_batch_norm_one_pass == xla.group_batch_norm: outputs, statistics (mean, biased
    variance) and gradients, also for data at mean 1e3 with std 1, where the one-pass form stays
    within 1e-4 of float64 (unshifted sums of squares would lose the variance: 1e6 * 6e-8 = 0.06),
    and a constant channel (variance 0: no NaN, output = bias). Shift: a running mean off the batch
    mean by up to 0.5 (what the model passes), or none (each group's first value). Tolerances at
    offset 1e3 allow a few float32 spacings of 1e3 (6e-5), which the plain form's own mean is off by."""
    x, g, b = _bn_data(shape, offset)
    if shift == "running":
        batch_mean = np.asarray(x, np.float64).reshape(-1, shape[-1]).mean(0)
        run = jnp.asarray(batch_mean + np.random.default_rng(7).uniform(-0.5, 0.5, shape[-1]), jnp.float32)
    else:
        run = None
    one = jax.jit(xla.group_batch_norm_one_pass, static_argnums=3)(x, g, b, 1e-5, run)
    two = jax.jit(xla.group_batch_norm, static_argnums=3)(x, g, b, 1e-5)
    assert all(np.all(np.isfinite(np.asarray(t))) for t in one)
    if shift == "none":
        assert float(jnp.abs(one[2][..., 0]).max()) == 0.0  # the constant channel, exactly
    assert float(jnp.abs(one[2][..., 0]).max()) <= 1e-5
    np.testing.assert_allclose(one[0][..., 0], jnp.broadcast_to(b[0], one[0][..., 0].shape), atol=2e-3)
    spacing = 8 * float(np.spacing(np.float32(offset)))
    for got, want, tol in zip(one, two, (2e-5 + spacing, 2e-6 + spacing, 2e-6)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol)
    x64 = np.asarray(x, np.float64)
    axes = tuple(range(1, x64.ndim - 1))
    m64 = x64.mean(axes, keepdims=True)
    v64 = np.square(x64 - m64).mean(axes, keepdims=True)
    y64 = (x64 - m64) / np.sqrt(v64 + 1e-5) * np.asarray(g, np.float64) + np.asarray(b, np.float64)
    for got, want in zip(one, (y64, m64, v64)):
        assert float(np.abs(np.asarray(got, np.float64) - want).max()) <= 1e-4
    _check(
        lambda *a: xla.group_batch_norm_one_pass(*a, 1e-5, run)[0],
        lambda *a: xla.group_batch_norm(*a, 1e-5)[0],
        (x, g, b),
        (0, 1, 2),
        rtol=1e-4 if offset == 0 else 5e-4,
    )


def test_rewrites_select_the_rewritten_xla_kernels():
    """model.rewrites=on swaps in the space-to-depth stem and one-pass BatchNorm for the xla kernels
    only; off (and auto on CPU) keeps the plain ones; the cpu kernels are never rewritten."""
    on = ops.select("xla", rewrites="on")
    assert on.space_to_depth and on.group_batch_norm is xla.group_batch_norm_one_pass
    assert on.conv3d is xla.conv3d and on.stem_max_pool is xla.stem_max_pool
    assert ops.select("xla", rewrites="off") == ops.select("xla", "auto")
    assert not ops.select("xla", rewrites="off").space_to_depth
    assert ops.select("cpu", rewrites="on") == ops.select("cpu", rewrites="off")
    if jax.default_backend() == "cpu":
        assert not ops.select("xla", rewrites="auto").space_to_depth
    with pytest.raises(ValueError, match="model.rewrites='yes'"):
        ops.select("xla", rewrites="yes")
    hash(on)
