"""The slow-frame rule (egoexo_jax/slow_frames.py) and its three users: the SlowFast slow pathway,
the slow-frame Interaction-Map targets and the teachers' frames all pick the same frames."""

import numpy as np
import pytest

from egoexo_jax.data import interaction_maps, transforms
from egoexo_jax.models import teachers
from egoexo_jax.slow_frames import slow_indices

# (T_fast, T_slow) where float64 floor(linspace(...)) drops an index that is an exact integer
# (31 -> 23: i = 11 is 15 exactly, float64 gives 14.999...). The SlowFast case: T = 119, alpha 2.
FLOAT_DROPS = ((31, 23), (119, 59))


def test_known_values_and_small_cases():
    np.testing.assert_array_equal(slow_indices(32, 8), [0, 4, 8, 13, 17, 22, 26, 31])
    np.testing.assert_array_equal(slow_indices(16, 4), [0, 5, 10, 15])
    np.testing.assert_array_equal(slow_indices(8, 8), np.arange(8))
    np.testing.assert_array_equal(slow_indices(8, 1), [0])
    assert slow_indices(8, 0).shape == (0,) and slow_indices(8, 2).dtype == np.int64


def test_exact_floor_of_linspace():
    for t_fast in range(1, 70):
        for t_slow in range(2, t_fast + 1):
            ref = np.floor(np.linspace(0, t_fast - 1, t_slow) + 1e-9).astype(int)
            np.testing.assert_array_equal(slow_indices(t_fast, t_slow), ref)
    for t_fast, t_slow in FLOAT_DROPS:
        exact = [i * (t_fast - 1) // (t_slow - 1) for i in range(t_slow)]
        float64 = np.linspace(0.0, t_fast - 1, t_slow).astype(np.int64)
        assert not np.array_equal(float64, exact)  # the rounding case this rule exists for
        np.testing.assert_array_equal(slow_indices(t_fast, t_slow), exact)


@pytest.mark.parametrize("t_fast", [4, 8, 16, 32, 64, 128])
def test_same_as_the_former_float_rule_for_power_of_two_clips(t_fast):
    # Every shipped recipe (8, 16, 32, 64 frames) sees the frames it saw with float64 linspace.
    for t_slow in range(1, t_fast + 1):
        np.testing.assert_array_equal(
            slow_indices(t_fast, t_slow), np.linspace(0.0, t_fast - 1, t_slow).astype(np.int64)
        )


@pytest.mark.parametrize("t_fast,t_slow", [(32, 8), (16, 4), *FLOAT_DROPS])
def test_pathways_targets_and_teachers_use_the_one_rule(t_fast, t_slow):
    want = slow_indices(t_fast, t_slow)
    clip = np.arange(t_fast)[:, None, None, None] * np.ones((t_fast, 1, 1, 3), np.int64)
    alpha = t_fast // t_slow
    if t_fast // alpha == t_slow:  # the slow pathway takes T // alpha frames
        slow, _ = transforms.pack_pathways(clip, arch="slowfast", alpha=alpha)
        np.testing.assert_array_equal(slow[:, 0, 0, 0], want)
    np.testing.assert_array_equal(teachers.frame_indices(t_fast, t_slow), want)
    # One object box per clip frame t, in map cell (t % 7, 0): the kept maps show which frames.
    rows = np.array([[0.0, (t % 7) / 7, 0.01, (t % 7) / 7, 1.0, t] for t in range(t_fast)], np.float32)
    maps = interaction_maps.build_targets(np.zeros((0, 6)), rows, t_fast, 7, slow_frames=t_slow)
    np.testing.assert_array_equal(np.argmax(maps[:, :, 0, 1], axis=1), want % 7)
