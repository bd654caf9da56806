"""The slow-frame rule: which of ``T_fast`` frames a ``T_slow``-frame view keeps.

``floor(linspace(0, T_fast - 1, T_slow))``, PySlowFast's rule, used for the SlowFast slow pathway
(``T_slow = T // alpha``), the slow-frame Interaction-Map targets and the frames the teachers
see. One implementation for the data pipeline and the models alike (a base module: numpy only).
"""

from __future__ import annotations

import numpy as np

__all__ = ["slow_indices"]


def slow_indices(t_fast: int, t_slow: int) -> np.ndarray:
    """``floor(linspace(0, t_fast - 1, t_slow))`` as ``[t_slow] int64``.

    Computed exactly in integers (``i * (t_fast - 1) // (t_slow - 1)``) so an index that is
    mathematically an integer can never drop by one through float rounding (float64 ``linspace``
    gives e.g. 14 instead of 15 for 31 -> 23; it agrees with this for every ``t_fast`` that is a
    power of two). For 32 -> 8 this is ``0, 4, 8, 13, 17, 22, 26, 31`` and for 16 -> 4
    ``0, 5, 10, 15``.
    """
    if t_slow <= 1:
        return np.zeros((max(t_slow, 0),), np.int64)
    i = np.arange(t_slow, dtype=np.int64)
    return (i * (t_fast - 1)) // (t_slow - 1)
