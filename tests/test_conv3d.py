"""The 3D ResNets' convolutions (2D convs over frames, temporal taps as one matmul, patch-matmul
kernel gradients) against XLA's own 3D convolution: forward, input gradient and kernel gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax.models import resnet3d


def _reference(x, w, stride):
    pad = [(k // 2, k // 2) for k in w.shape[:3]]
    return jax.lax.conv_general_dilated(x, w, stride, pad, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


@pytest.mark.parametrize("x_shape, kernel, out, stride", [
    ((2, 6, 9, 8, 3), (3, 3, 3), 5, (1, 1, 1)),      # frame conv, 3 taps stacked on the outputs
    ((2, 5, 7, 6, 16), (3, 3, 1), 4, (1, 1, 1)),     # frame conv, non-square kernel
    ((2, 5, 7, 6, 4), (1, 1, 1), 6, (1, 1, 1)),      # matmul
    ((1, 6, 5, 5, 6), (3, 1, 1), 2, (1, 1, 1)),      # temporal conv, C <= kt * O
    ((2, 5, 3, 4, 16), (3, 1, 1), 4, (1, 1, 1)),     # temporal conv, C > kt * O
    ((2, 4, 3, 3, 5), (5, 1, 1), 3, (1, 1, 1)),      # temporal conv, kernel longer than T
    ((2, 4, 11, 10, 3), (5, 7, 7), 8, (1, 2, 2)),    # the fast stem: strided frame conv, 5 taps
    ((2, 2, 9, 12, 3), (1, 7, 7), 16, (1, 2, 2)),    # the slow stem
    ((2, 8, 6, 6, 8), (7, 1, 1), 4, (4, 1, 1)),      # the lateral fast -> slow conv (space-to-depth)
    ((2, 3, 7, 7, 8), (1, 3, 3), 8, (1, 2, 2)),      # a strided res-block conv
    ((2, 3, 4, 4, 8), (1, 3, 3), 8, (1, 2, 2)),      # onto a 2x2 map: space-to-depth
    ((2, 3, 7, 7, 8), (1, 1, 1), 16, (1, 2, 2)),     # a strided shortcut
    ((2, 2, 3, 3, 160), (1, 3, 3), 24, (1, 1, 1)),   # the interaction head's small wide map (patches)
    ((2, 3, 5, 4, 6), (3, 3, 3), 4, (2, 2, 2)),      # temporal and spatial stride (space-to-depth)
])
def test_conv_and_gradients_match_xla(x_shape, kernel, out, stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    fan_in = np.prod(kernel) * x_shape[-1]  # unit-scale outputs: sin() stays well conditioned
    w = jnp.asarray(rng.standard_normal((*kernel, x_shape[-1], out)) / np.sqrt(fan_in), jnp.float32)
    _check_against_xla(lambda a, b: resnet3d.padded_conv(a, b, kernel, stride),
                       lambda a, b: _reference(a, b, stride), x, w)


@pytest.mark.parametrize("x_shape, kernel, out", [
    ((2, 6, 9, 8, 3), (3, 3, 3), 5),      # patches of x (C <= O)
    ((2, 4, 12, 10, 16), (3, 3, 1), 4),   # patches of dy (C > O, more than 64 positions)
    ((1, 1, 5, 5, 40), (1, 3, 3), 8),     # few positions: the patches are transposed
])
def test_valid_conv3d_kernel_gradient_branches(x_shape, kernel, out):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, x_shape[-1], out)) / np.sqrt(np.prod(kernel) * x_shape[-1]),
                    jnp.float32)
    valid = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1, 1), "VALID",
                                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    _check_against_xla(resnet3d.valid_conv3d, valid, x, w)


def _check_against_xla(conv, reference, x, w):
    def grads(f):
        return jax.value_and_grad(lambda a, b: jnp.sum(jnp.sin(f(a, b))), argnums=(0, 1))(x, w)

    (v, (dx, dw)) = grads(jax.jit(conv))
    (rv, (rdx, rdw)) = grads(reference)
    np.testing.assert_allclose(v, rv, rtol=1e-4)
    for got, want in ((dx, rdx), (dw, rdw)):
        assert got.shape == want.shape
        assert float(jnp.abs(got - want).max()) <= 1e-4 * float(jnp.abs(want).max())


@pytest.mark.parametrize("shape", [(2, 3, 8, 10, 4), (1, 2, 7, 9, 3)])
def test_stem_max_pool_matches_flax_with_first_max_gradient(shape):
    import flax.linen as nn

    rng = np.random.default_rng(1)
    # ReLU-like input: many tied zeros, whose gradient must go to one element only.
    x = jnp.asarray(np.maximum(rng.standard_normal(shape), 0), jnp.float32)
    ref = lambda a: nn.max_pool(a, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
    y, vjp = jax.vjp(resnet3d.stem_max_pool, x)
    ry, rvjp = jax.vjp(ref, x)
    np.testing.assert_array_equal(y, ry)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_allclose(vjp(dy)[0], rvjp(dy)[0], atol=1e-6)
    counts = vjp(jnp.ones_like(y))[0]
    assert float(counts.sum()) == y.size  # one winner per window

