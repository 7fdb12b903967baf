"""Every registered generator: CPython is the oracle; same seed, same program; bad lengths explain."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debug import generators
from debug.generators import GENERATORS
from debug.programs import Program


def run_python(text: str) -> dict:
    namespace: dict = {}
    exec(compile(text, "<program>", "exec"), {}, namespace)  # noqa: S102 - the interpreter is the oracle
    return namespace


def test_registry_holds_every_seed_family():
    expected = {
        "make_range_program",
        "make_range_program_lines",
        "make_variable_increments",
        "make_arithmetic_sequence",
        "make_counter_program",
        "make_fibonacci_program",
        "make_variable_binding_program",
        "make_counterfactual_pair",
        "make_exception_program",
        "make_boolean_program",
    }
    assert set(GENERATORS) == expected
    assert all(getattr(generators, name) is fn for name, fn in GENERATORS.items())


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(GENERATORS)), seq_len=st.integers(1, 26), seed=st.integers(0, 2**32))
def test_cpython_agrees_with_every_generator(name, seq_len, seed):
    program = GENERATORS[name](seq_len, random.Random(seed))
    assert isinstance(program, Program)
    value = run_python(program.text)[program.metadata["answer_var"]]
    assert value == program.answer and type(value) is type(program.answer)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize(
    "make_rng", [random.Random, np.random.RandomState, np.random.default_rng], ids=["random", "RS", "Gen"]
)
def test_same_seed_same_program(name, make_rng):
    assert GENERATORS[name](5, make_rng(3)) == GENERATORS[name](5, make_rng(3))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_seq_len_zero_is_refused_with_the_valid_range(name):
    with pytest.raises(ValueError, match=r"seq_len (>= 1|must satisfy 1 <= seq_len)"):
        GENERATORS[name](0, random.Random(0))


def test_boolean_program_caps_at_26_lines():
    with pytest.raises(ValueError, match=re.escape("1 <= seq_len <= 26")):
        generators.make_boolean_program(27, random.Random(0))


def test_range_program_matches_the_seed_shape():
    program, expected = generators.make_range_program(3, np.random.RandomState(0))
    z = int(program.rsplit("+= ", 1)[1])
    assert program == f"x = 0\nfor i in range(3):\n    x += {z}" and expected == 3 * z


@settings(max_examples=40, deadline=None)
@given(seq_len=st.integers(1, 20), seed=st.integers(0, 2**32), data=st.data())
def test_counterfactual_pair_differs_in_one_line_and_in_answer(seq_len, seed, data):
    split = data.draw(st.one_of(st.none(), st.integers(0, seq_len - 1)))
    program = generators.make_counterfactual_pair(seq_len, random.Random(seed), split)
    meta = program.metadata
    a_lines, b_lines = program.text.split("\n"), meta["counterfactual"].split("\n")
    differing = [i + 1 for i, (a, b) in enumerate(zip(a_lines, b_lines)) if a != b]
    assert differing == [meta["divergence_line"]]
    assert run_python(meta["counterfactual"])["x"] == meta["counterfactual_answer"] != program.answer
    if split is not None:
        assert meta["divergence_index"] == split


def test_counterfactual_pair_accepts_the_seed_argument_order():
    seed_order = generators.make_counterfactual_pair(6, 2, np.random.RandomState(4))
    assert seed_order.metadata["divergence_index"] == 2
    with pytest.raises(ValueError, match=re.escape("0 <= divergence_index <= 5")):
        generators.make_counterfactual_pair(6, random.Random(0), 6)


@settings(max_examples=40, deadline=None)
@given(seq_len=st.integers(1, 12), seed=st.integers(0, 2**32), p_raise=st.floats(0, 1))
def test_exception_program_all_kinds_agree_with_cpython(seq_len, seed, p_raise):
    program = generators.make_exception_program(seq_len, random.Random(seed), p_raise=p_raise, kinds="all")
    assert run_python(program.text)["result"] == program.answer
    assert len(program.metadata["raised"]) == seq_len


def test_exception_program_raises_as_often_as_asked():
    rng = random.Random(0)
    raised = [r for _ in range(300) for r in generators.make_exception_program(10, rng).metadata["raised"]]
    assert abs(sum(raised) / len(raised) - 0.3) < 0.03
    with pytest.raises(ValueError, match="kinds must be"):
        generators.make_exception_program(3, rng, kinds=("overflow",))


def test_boolean_answers_are_not_lopsided():
    rng = random.Random(0)
    answers = [generators.make_boolean_program(8, rng).answer for _ in range(2000)]
    assert 0.35 < sum(answers) / len(answers) < 0.65


def test_unknown_rng_type_is_refused():
    with pytest.raises(TypeError, match="rng must be"):
        generators.make_range_program(3, None)
