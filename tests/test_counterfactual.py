"""Counterfactuals: only the root line changes, the answer changes (CPython checks), lengths stay equal."""

from __future__ import annotations

import random

import pytest
from bpe_tokenizer import tiny_bpe
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.counterfactual import create_counterfactual_program, run_program
from debug.generators import GENERATORS, make_exception_program, make_variable_binding_program
from debug.programs import Program
from debug.tokenizer import build_char_tokenizer

CHAR = build_char_tokenizer()


@settings(max_examples=150, deadline=None)
@given(
    seq_len=st.integers(1, 24),
    seed=st.integers(0, 2**32),
    cf_seed=st.integers(0, 2**32),
    style=st.sampled_from(["paper", "spaced"]),
)
def test_changes_answer_and_only_the_root_line(seq_len, seed, cf_seed, style):
    program = make_variable_binding_program(seq_len, random.Random(seed), style=style)
    cf = create_counterfactual_program(program, cf_seed, CHAR)
    meta = cf.metadata
    assert meta["original_answer"] == program.answer != cf.answer == meta["expected_counterfactual"]
    assert run_program(cf.text, meta["answer_var"]) == cf.answer
    before, after = program.text.split("\n"), cf.text.split("\n")
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [program.metadata["root_line"]] == [meta["changed_line"]]
    assert len(CHAR(cf.text)["input_ids"]) == len(CHAR(program.text)["input_ids"])
    assert create_counterfactual_program(program, cf_seed, CHAR) == cf


def test_different_seeds_choose_different_constants():
    program = make_variable_binding_program(16, random.Random(0))
    values = {create_counterfactual_program(program, seed).answer for seed in range(40)}
    assert len(values) == 9 and program.answer not in values


def test_seed_readme_style_program():
    cf = create_counterfactual_program(Program("x = 5\ny = x * 2\n#y:", 10, {"answer_var": "y"}), 3)
    assert cf.text.split("\n")[1:] == ["y = x * 2", "#y:"]
    assert cf.answer == 2 * int(cf.text.split("\n")[0].split(" = ")[1]) != 10
    assert cf.metadata["original_answer"] == 10


def test_bare_text_uses_the_query_line():
    cf = create_counterfactual_program("a=3\nb=a\nc=7\n#b:", 0)
    assert cf.metadata["answer_var"] == "b" and cf.text.split("\n")[0] != "a=3"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x = 0\nfor i in range(3):\n    x += 1\n#x:", "line 2 is a For"),
        ("a = 1\nb = 2\nc = a + b\n#c:", "reads several variables"),
        ("a = 1\nb = 2\n", "cannot tell which variable is queried"),
        ("y = x\n#y:", "'x' is read but never assigned"),
        ("x = 5\ny = x * 0\n#y:", "does not depend on it"),
    ],
)
def test_refuses_clearly(text, reason):
    with pytest.raises(ValueError, match=reason):
        create_counterfactual_program(text, 0)


def test_refuses_a_program_whose_answer_is_wrong():
    with pytest.raises(ValueError, match="CPython gives"):
        create_counterfactual_program(Program("a=3\n#a:", 4, {"answer_var": "a"}), 0)


def test_loop_family_is_refused_with_the_alternative():
    with pytest.raises(ValueError, match="make_counterfactual_pair"):
        create_counterfactual_program(make_exception_program(2, random.Random(0)), 0)


class DigitSplittingTokenizer:
    """Tokenizes one token per character, except that any digit other than 3 costs two tokens."""

    def __call__(self, text, add_special_tokens=False):
        ids: list[int] = []
        for char in text:
            ids += [0, 0] if char.isdigit() and char != "3" else [0]
        return {"input_ids": ids}


def test_tokenizer_that_cannot_keep_the_length_gets_an_explanation():
    with pytest.raises(ValueError, match=r"changes the token count \(\d+\)"):
        create_counterfactual_program("a=3\nb=a\n#b:", 0, DigitSplittingTokenizer())


def test_bpe_tokenizer_keeps_token_length_or_explains():
    bpe, rng = tiny_bpe(), random.Random(4)
    kept = refused = 0
    for seed in range(60):
        program = make_variable_binding_program(16, rng)
        try:
            cf = create_counterfactual_program(program, seed, bpe)
        except ValueError as exc:
            assert "token count" in str(exc)
            refused += 1
            continue
        assert len(bpe(cf.text)["input_ids"]) == len(bpe(program.text)["input_ids"])
        kept += 1
    assert kept > 0, f"all {refused} counterfactuals were refused"


def test_token_length_is_checked_inside_the_prompt_template():
    program = make_variable_binding_program(8, random.Random(0))
    cf = create_counterfactual_program(program, 1, CHAR, template="Q:\n{code}")
    assert len(CHAR("Q:\n" + cf.text)["input_ids"]) == len(CHAR("Q:\n" + program.text)["input_ids"])


# -- run_program: the one place program text is executed, with restricted builtins --------------------------


@pytest.mark.parametrize(
    "text",
    [
        "import os\nx = 1",
        "x = __import__('os').getcwd()",
        "x = open('/etc/hostname').read()",
        "x = eval('1')",
        "exec('x = 1')",
        "x = compile('1', '<s>', 'eval')",
        "x = getattr(1, 'real')",
        "x = globals()",
        "x = print",
    ],
)
def test_programs_cannot_import_open_or_evaluate(text):
    with pytest.raises(ValueError, match=r"^the program raised (ImportError|NameError): "):
        run_program(text, "x")


def test_a_program_writing_to_its_builtins_changes_only_its_own():
    run_program("__builtins__['range'] = None\nx = 1", "x")
    assert run_program("x = sum(range(4))", "x") == 6


def test_bad_programs_fail_with_one_line():
    with pytest.raises(ValueError, match=r"^the program raised SyntaxError: "):
        run_program("x = (", "x")
    with pytest.raises(ValueError, match=r"^the program raised ZeroDivisionError: "):
        run_program("x = 1 // 0", "x")
    with pytest.raises(ValueError, match=r"^the program never assigns 'y'$"):
        run_program("x = 1", "y")
    assert run_program("x = 1\ny = x + 1") == {"x": 1, "y": 2}


@settings(max_examples=120, deadline=None)
@given(
    name=st.sampled_from(sorted(GENERATORS)),
    seq_len=st.integers(1, 26),
    seed=st.integers(0, 2**32),
    query=st.booleans(),
)
def test_every_generator_program_runs_with_the_restricted_builtins(name, seq_len, seed, query):
    knobs = {"kinds": "all", "p_raise": 0.5} if name == "make_exception_program" else {}
    program = GENERATORS[name](seq_len, random.Random(seed), query=query, **knobs)
    value = run_program(program.text, program.metadata["answer_var"])
    assert value == program.answer and type(value) is type(program.answer)
    if "counterfactual" in program.metadata:  # make_counterfactual_pair's program B
        assert (
            run_program(program.metadata["counterfactual"], "x") == program.metadata["counterfactual_answer"]
        )
