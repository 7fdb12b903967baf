"""One random source for every generator, whatever the caller hands in.

The seed's README calls generators with `np.random.RandomState(seed)`; the harness uses `random.Random(seed)`
(fast, pure Python); notebooks may hold a `np.random.Generator`. `as_random` turns any of them into a
`random.Random`, so generator code has a single, fast code path.

For numpy sources it draws one 62-bit integer from the numpy stream and seeds a fresh `random.Random` with it.
That keeps the seed's contract: the same numpy seed gives the same program, and successive calls on one numpy
source give different programs (each call advances the numpy state by one draw).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

#: Anything `as_random` accepts.
RngLike = random.Random | np.random.RandomState | np.random.Generator | int

_SEED_BOUND = 2**62


def as_random(rng: Any) -> random.Random:
    """Return a `random.Random` driven by `rng`.

    Args:
        rng: A `random.Random` (returned as is, so its state advances as the generator draws), a
            `np.random.RandomState` or `np.random.Generator` (one draw seeds a new `random.Random`), or an int
            seed.

    Raises:
        TypeError: For anything else (including None and bool), naming the accepted types.
    """
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.RandomState):
        return random.Random(int(rng.randint(0, _SEED_BOUND, dtype=np.int64)))
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, _SEED_BOUND)))
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return random.Random(int(rng))
    raise TypeError(
        "rng must be random.Random, np.random.RandomState, np.random.Generator or an int seed; "
        f"got {type(rng).__name__}"
    )
