"""Every registered generator: CPython is the oracle; same seed, same program; bad lengths explain.

The query form (`query=True`, the program followed by `#<answer_var>:`) is checked the same way, and the
default programs are pinned by digest: held-out sets and saved baselines depend on them.
"""

from __future__ import annotations

import hashlib
import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debug import generators
from debug.generators import GENERATORS, check_query_support, supports_query
from debug.parsing import parser_for
from debug.programs import Program, generate_programs


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
@given(
    name=st.sampled_from(sorted(GENERATORS)),
    seq_len=st.integers(1, 26),
    seed=st.integers(0, 2**32),
    query=st.one_of(st.none(), st.booleans()),
)
def test_cpython_agrees_with_every_generator(name, seq_len, seed, query):
    knobs = {} if query is None else {"query": query}
    program = GENERATORS[name](seq_len, random.Random(seed), **knobs)
    assert isinstance(program, Program)
    value = run_python(program.text)[program.metadata["answer_var"]]
    assert value == program.answer and type(value) is type(program.answer)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(sorted(GENERATORS)), seq_len=st.integers(1, 26), seed=st.integers(0, 2**32))
def test_query_form_is_the_program_then_a_query_naming_the_answer_variable(name, seq_len, seed):
    asked = GENERATORS[name](seq_len, random.Random(seed), query=True)
    plain = GENERATORS[name](seq_len, random.Random(seed), query=False)
    var = asked.metadata["answer_var"]
    *body, last = asked.text.split("\n")
    assert last == f"#{var}:" and "\n".join(body) == plain.text
    assert asked.answer == plain.answer
    # Same draws, so the same metadata (a pair's counterfactual text carries the query line too).
    if name == "make_counterfactual_pair":
        assert asked.metadata["counterfactual"] == plain.metadata["counterfactual"] + f"\n#{var}:"
        assert {k: v for k, v in asked.metadata.items() if k != "counterfactual"} == {
            k: v for k, v in plain.metadata.items() if k != "counterfactual"
        }
    else:
        assert asked.metadata == plain.metadata
    # The query is a comment: the program runs the same with or without it, and the queried variable's
    # final value is the answer.
    for text in (asked.text, plain.text):
        value = run_python(text)[var]
        assert value == asked.answer and type(value) is type(asked.answer)


def _digest(name: str) -> str:
    digest = hashlib.sha256()
    for seq_len in range(1, 13):
        for seed in range(8):
            for rng in (random.Random(seed), np.random.RandomState(seed)):
                p = GENERATORS[name](seq_len, rng)
                meta = sorted((k, repr(v)) for k, v in p.metadata.items())
                digest.update(repr((p.text, p.answer, meta)).encode())
    return digest.hexdigest()[:16]


#: Digests of every generator's default programs (seq_len 1..12, seeds 0..7, random.Random and RandomState).
DEFAULT_DIGESTS = {
    "make_arithmetic_sequence": "5e6dd05dfe436a02",
    "make_boolean_program": "ab0b70abf9586f1d",
    "make_counter_program": "0d412387d84d7abd",
    "make_counterfactual_pair": "903c6a0d155c3159",
    "make_exception_program": "c68f9c9b43fb8677",
    "make_fibonacci_program": "de026104a5cb22e4",
    "make_range_program": "713b6a655351e10c",
    "make_range_program_lines": "e4918e3a1b211681",
    "make_variable_binding_program": "808a71d3e686490b",
    "make_variable_increments": "c38e5a693b7577e0",
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_default_programs_are_unchanged(name):
    assert _digest(name) == DEFAULT_DIGESTS[name]


def test_binding_programs_are_in_query_form_by_default_and_every_other_family_is_not():
    for name, fn in GENERATORS.items():
        assert supports_query(fn), name
        program = fn(6, random.Random(1))
        queried = program.text.endswith(f"\n#{program.metadata['answer_var']}:")
        assert queried == (name == "make_variable_binding_program"), name


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_query_answers_parse_back_with_the_evals_parser(name):
    # The answer text right after `#var:` is `str(answer)` (debug.scoring.answer_continuation).
    for program in generate_programs(GENERATORS[name], 5, 30, query=True):
        parsed = parser_for(program.answer)(str(program.answer))
        assert parsed == program.answer and type(parsed) is type(program.answer)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_query_programs_use_only_the_embedded_tokenizer_alphabet(name):
    from debug.tokenizer import CHARACTERS  # imports transformers

    alphabet = set(CHARACTERS)
    knobs = {"kinds": "all"} if name == "make_exception_program" else {}
    for program in generate_programs(GENERATORS[name], 8, 30, query=True, **knobs):
        assert set(program.text + str(program.answer)) <= alphabet


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_query_must_be_a_bool(name):
    with pytest.raises(ValueError, match=rf"^{name}: query must be True or False; got 'yes'$"):
        GENERATORS[name](3, random.Random(0), query="yes")


def test_a_generator_without_a_query_form_is_refused_in_one_line():
    def make_count(seq_len, rng):
        return "n = 0", 0

    def make_any(seq_len, rng, **knobs):
        return "n = 0", 0

    for fn in (make_count, make_any, len):
        assert not supports_query(fn)
    with pytest.raises(ValueError, match=r"^generator make_count has no query form") as info:
        check_query_support(make_count)
    assert "\n" not in str(info.value)
    check_query_support(GENERATORS["make_range_program"])


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
