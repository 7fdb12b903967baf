"""The rng adapter: every accepted source drives generators deterministically; anything else is refused."""

from __future__ import annotations

import random

import numpy as np
import pytest

from debug.rng import as_random


def test_random_random_is_used_as_is():
    rng = random.Random(3)
    assert as_random(rng) is rng


@pytest.mark.parametrize("make", [np.random.RandomState, np.random.default_rng, int])
def test_same_seed_same_stream_and_numpy_state_advances(make):
    a, b = as_random(make(5)), as_random(make(5))
    assert [a.random() for _ in range(3)] == [b.random() for _ in range(3)]
    if make is not int:
        source = make(5)
        assert as_random(source).random() != as_random(source).random()


@pytest.mark.parametrize("bad", [None, True, "3", 2.5])
def test_other_types_are_refused_with_the_accepted_ones(bad):
    with pytest.raises(
        TypeError, match="random.Random, np.random.RandomState, np.random.Generator or an int"
    ):
        as_random(bad)
