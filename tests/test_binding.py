"""Variable binding generator: CPython is the oracle; hops, balance and the line-1 confound are measured."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.baselines import copy_line_1
from debug.generators import make_variable_binding_program

LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")


def run_python(text: str) -> dict:
    namespace: dict = {}
    exec(compile(text, "<program>", "exec"), {}, namespace)  # noqa: S102 - the interpreter is the oracle
    return namespace


def trace_chain(text: str) -> tuple[list[str], list[int]]:
    """Independent tracer: follow the query back through the last assignment before each read."""
    *body, query = text.split("\n")
    parsed = [LINE.match(line).groups() for line in body]
    var, before, chain, lines = query[1:-1], len(parsed), [], []
    while True:
        line = max(i for i in range(before) if parsed[i][0] == var)
        chain.append(var)
        lines.append(line + 1)
        rhs = parsed[line][1]
        if rhs.isdigit():
            return chain, lines
        var, before = rhs, line


@settings(max_examples=300, deadline=None)
@given(
    seq_len=st.integers(1, 40),
    seed=st.integers(0, 2**32),
    style=st.sampled_from(["paper", "spaced"]),
    data=st.data(),
)
def test_interpreter_agrees_and_metadata_is_the_true_chain(seq_len, seed, style, data):
    seq_len = min(seq_len, 26) if style == "spaced" else seq_len
    num_hops = data.draw(st.one_of(st.none(), st.integers(1, min(seq_len, 6))))
    reassign = data.draw(st.floats(0, 1)) if style == "paper" else 0.0
    program = make_variable_binding_program(
        seq_len, random.Random(seed), num_hops, style=style, reassign=reassign
    )
    meta = program.metadata
    assert run_python(program.text)[meta["answer_var"]] == program.answer
    assert isinstance(program.answer, int) and 0 <= program.answer <= 9
    assert program.text.endswith(f"#{meta['query_var']}:")
    assert len(program.text.split("\n")) == seq_len + 1
    chain, lines = trace_chain(program.text)
    assert chain == meta["chain"] and lines == meta["chain_lines"]
    assert meta["hops"] == len(chain) and meta["root_line"] == lines[-1]
    assert meta["num_distractors"] == seq_len - meta["hops"]
    if num_hops is not None:
        assert meta["hops"] == num_hops
    else:
        assert 1 <= meta["hops"] <= min(4, seq_len)


def test_paper_style_lines_have_no_spaces_and_spaced_style_never_reassigns():
    for seed in range(50):
        paper = make_variable_binding_program(16, random.Random(seed)).text
        assert " " not in paper
        spaced = make_variable_binding_program(16, random.Random(seed), style="spaced").text
        lhs = [line.split(" = ")[0] for line in spaced.split("\n")[:-1]]
        assert len(set(lhs)) == len(lhs)


def test_paper_style_does_reassign_variables():
    reassigned = 0
    for seed in range(100):
        text = make_variable_binding_program(16, random.Random(seed)).text
        lhs = [line[0] for line in text.split("\n")[:-1]]
        reassigned += len(set(lhs)) < len(lhs)
    assert reassigned > 50


@pytest.mark.parametrize(
    "make_rng",
    [random.Random, np.random.RandomState, np.random.default_rng],
    ids=["random", "RandomState", "Generator"],
)
def test_same_seed_same_program_for_every_rng_kind(make_rng):
    first = make_variable_binding_program(16, make_rng(7), 2)
    assert first == make_variable_binding_program(16, make_rng(7), 2)
    rng = make_rng(7)
    texts = {make_variable_binding_program(16, rng).text for _ in range(20)}
    assert len(texts) == 20


def test_seed_readme_call_shape():
    rng = np.random.RandomState(11)
    program, expected = make_variable_binding_program(5, rng, 1)
    assert isinstance(program, str) and run_python(program)[program.split("\n")[-1][1:-1]] == expected


def test_hops_and_root_line_are_balanced():
    """Tolerance: each hop count within 3 points of 25%; each root line within 25% of its expected share."""
    n, seq_len = 8000, 16
    rng = random.Random(0)
    programs = [make_variable_binding_program(seq_len, rng) for _ in range(n)]
    hops = Counter(p.metadata["hops"] for p in programs)
    assert set(hops) == {1, 2, 3, 4}
    for count in hops.values():
        assert abs(count / n - 0.25) < 0.03
    # Expected share of root line r: mean over hops h of 1/(seq_len-h+1) when r fits, i.e. r <= seq_len-h+1.
    roots = Counter(p.metadata["root_line"] for p in programs)
    for line in range(1, seq_len + 1):
        expected = sum(1 / (seq_len - h + 1) for h in range(1, 5) if line <= seq_len - h + 1) / 4
        assert abs(roots[line] / n - expected) < 0.25 * expected, (line, roots[line] / n, expected)


def test_copy_line_1_scores_near_chance_not_81_percent():
    rng = random.Random(1)
    programs = [make_variable_binding_program(16, rng) for _ in range(4000)]
    # Line 1 is right when the root sits there (mean over hops of 1/(17-h)) or by a 1-in-10 coincidence.
    p_root_first = sum(1 / (17 - h) for h in range(1, 5)) / 4
    expected = p_root_first + (1 - p_root_first) * 0.1  # about 0.163
    assert abs(copy_line_1(programs) - expected) < 0.025
    answers = Counter(p.answer for p in programs)
    assert all(abs(c / len(programs) - 0.1) < 0.025 for c in answers.values()) and len(answers) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq_len": 0}, "seq_len >= 1"),
        ({"seq_len": 27, "style": "spaced"}, "1 <= seq_len <= 26"),
        ({"seq_len": 3, "num_hops": 4}, "1 <= num_hops <= 3"),
        ({"seq_len": 3, "style": "compact"}, "style must be one of"),
        ({"seq_len": 3, "max_hops": 0}, "1 <= max_hops <= 26"),
        ({"seq_len": 3, "reassign": 1.5}, "reassign must be in [0, 1]"),
        ({"seq_len": 3, "reassign": 0.5, "style": "spaced"}, "reassign needs style='paper'"),
    ],
)
def test_out_of_range_requests_name_the_valid_range(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_variable_binding_program(rng=random.Random(0), **kwargs)


def test_max_hops_knob_caps_sampled_depth():
    rng = random.Random(3)
    depths = {make_variable_binding_program(16, rng, max_hops=2).metadata["hops"] for _ in range(200)}
    assert depths == {1, 2}


def test_numpy_integer_knobs_are_accepted():
    program = make_variable_binding_program(np.int64(8), np.random.RandomState(0), np.int64(3))
    assert program.metadata["hops"] == 3 and program.metadata["seq_len"] == 8


def _chain_reassignments(program) -> int:
    """Lines off the chain that assign one of the chain's names."""
    lhs = [line[0] for line in program.text.split("\n")[:-1]]
    chain_lines = set(program.metadata["chain_lines"])
    return sum(name in program.metadata["chain"] for i, name in enumerate(lhs, 1) if i not in chain_lines)


def test_reassign_knob_puts_the_chain_names_on_distractor_lines():
    plain = [make_variable_binding_program(16, random.Random(s), 3) for s in range(200)]
    hard = [make_variable_binding_program(16, random.Random(s), 3, reassign=0.5) for s in range(200)]
    # 13 distractor lines; a chain name comes up about 3/26 of the time at 0 and about half the time at 0.5.
    assert sum(map(_chain_reassignments, plain)) / (200 * 13) < 0.2
    assert sum(map(_chain_reassignments, hard)) / (200 * 13) > 0.4
    assert plain == [make_variable_binding_program(16, random.Random(s), 3, reassign=0.0) for s in range(200)]


@pytest.mark.parametrize(
    "knobs", [{}, {"style": "spaced"}, {"reassign": 0.5}], ids=["paper", "spaced", "reassign"]
)
def test_query_is_the_default_and_query_false_only_drops_the_query_line(knobs):
    for seed in range(50):
        default = make_variable_binding_program(12, random.Random(seed), **knobs)
        assert make_variable_binding_program(12, random.Random(seed), query=True, **knobs) == default
        bare = make_variable_binding_program(12, random.Random(seed), query=False, **knobs)
        assert default.text == f"{bare.text}\n#{bare.metadata['query_var']}:"
        assert (bare.answer, bare.metadata) == (default.answer, default.metadata)
        assert run_python(bare.text)[bare.metadata["answer_var"]] == bare.answer
