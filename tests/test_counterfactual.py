"""Counterfactuals: only one line changes, the answer changes (CPython checks), token lengths stay equal."""

from __future__ import annotations

import random

import pytest
from bpe_tokenizer import tiny_bpe
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.counterfactual import (
    create_boolean_counterfactual,
    create_counterfactual,
    create_counterfactual_program,
    create_range_counterfactual,
    mark_change,
    program_family,
    run_program,
)
from debug.generators import (
    GENERATORS,
    make_arithmetic_sequence,
    make_boolean_program,
    make_counter_program,
    make_exception_program,
    make_fibonacci_program,
    make_range_program,
    make_range_program_lines,
    make_variable_binding_program,
    make_variable_increments,
)
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


class LetterTokenizer:
    """One token per letter, none for anything else: `True` and `False` differ by one however spaced."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [0 for char in text if char.isalpha()]}


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


# -- range and boolean counterfactuals, and the dispatcher ---------------------------------------------------

RANGE_GENERATORS = [
    make_range_program,
    make_range_program_lines,
    make_variable_increments,
    make_arithmetic_sequence,
    make_counter_program,
]


def changed_lines(program: Program, cf: Program) -> list[int]:
    before, after = program.text.split("\n"), cf.text.split("\n")
    return [i + 1 for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


def check_pair(program: Program, cf: Program, tokenizer, template: str = "{code}") -> None:
    """The guarantees every family shares, checked independently of the builder."""
    meta = cf.metadata
    var = meta["answer_var"]
    assert run_program(program.text, var) == program.answer == meta["original_answer"]
    assert run_program(cf.text, var) == cf.answer == meta["expected_counterfactual"] != program.answer
    assert changed_lines(program, cf) == [meta["changed_line"]]
    assert meta["original_line"] == program.text.split("\n")[meta["changed_line"] - 1]
    assert meta["counterfactual_line"] == cf.text.split("\n")[meta["changed_line"] - 1]
    line, start, end = meta["original_span"]
    assert program.text.split("\n")[line - 1][start:end] == str(meta["original_value"])
    line, start, end = meta["changed_span"]
    assert cf.text.split("\n")[line - 1][start:end] == str(meta["counterfactual_value"])
    assert meta["original_value"] != meta["counterfactual_value"]
    render = template.replace("{code}", "{}").format
    lengths = {
        len(tokenizer(render(t), add_special_tokens=False)["input_ids"]) for t in (program.text, cf.text)
    }
    assert len(lengths) == 1


@settings(max_examples=150, deadline=None)
@given(
    generator=st.sampled_from(RANGE_GENERATORS),
    seq_len=st.integers(1, 24),
    seed=st.integers(0, 2**32),
    cf_seed=st.integers(0, 2**32),
    query=st.booleans(),
    change=st.sampled_from([None, "increment", "bound"]),
)
def test_range_counterfactual_changes_one_constant_and_the_answer(
    generator, seq_len, seed, cf_seed, query, change
):
    program = generator(seq_len, random.Random(seed), query=query)
    has_loop = "for " in program.text
    if change == "bound" and not has_loop:
        with pytest.raises(ValueError, match=r"^create_range_counterfactual: the program has no loop bound"):
            create_range_counterfactual(program, cf_seed, CHAR, change=change)
        return
    cf = create_counterfactual(program, cf_seed, CHAR, change=change)
    check_pair(program, cf, CHAR)
    assert cf.metadata["family"] == "range" and cf.metadata["change"] in {
        change or "increment",
        change or "bound",
    }
    assert create_counterfactual(program, cf_seed, CHAR, change=change) == cf
    meta = cf.metadata  # the generator's own record of its constants stays true
    if generator is make_range_program:
        assert meta["increment"] * meta["iterations"] == cf.answer
    if generator is make_variable_increments:
        assert sum(meta["increments"]) == cf.answer


@settings(max_examples=150, deadline=None)
@given(
    seq_len=st.integers(1, 26), seed=st.integers(0, 2**32), cf_seed=st.integers(0, 2**32), query=st.booleans()
)
def test_boolean_counterfactual_flips_one_root_constant(seq_len, seed, cf_seed, query):
    program = make_boolean_program(seq_len, random.Random(seed), query=query)
    try:
        cf = create_counterfactual(program, cf_seed, CHAR)
    except ValueError as exc:
        # Some programs' answer depends on no root constant (`q = a or True`); that is said in one line.
        assert str(exc).startswith("create_boolean_counterfactual: no change of a root constant changes ")
        for line in range(1, seq_len + 1):  # CPython agrees: flipping any single constant keeps the answer
            text = program.text.split("\n")
            if text[line - 1].endswith(("= True", "= False")):
                flipped = text[line - 1].replace("True", "F").replace("False", "True").replace("F", "False")
                text[line - 1] = flipped
                assert run_program("\n".join(text), program.metadata["answer_var"]) == program.answer
        return
    check_pair(program, cf, CHAR)
    assert cf.answer is (not program.answer)
    assert cf.metadata["counterfactual_value"] is (not cf.metadata["original_value"])
    # Under the char tokenizer True/False differ by one token: the line's spacing absorbs it.
    assert cf.metadata["respaced"] is True
    assert create_counterfactual(program, cf_seed, CHAR) == cf


def test_boolean_flip_without_a_tokenizer_is_the_plain_flip():
    cf = create_boolean_counterfactual("a = True\nb = not a\n#b:", 0)
    assert cf.text == "a = False\nb = not a\n#b:" and cf.answer is True and cf.metadata["respaced"] is False


def test_boolean_respacing_keeps_the_character_count():
    assert create_counterfactual("a = True\nb = not a\n#b:", 0, CHAR).text == "a =False\nb = not a\n#b:"
    assert create_counterfactual("a = False\nb = not a\n#b:", 0, CHAR).text == "a = True \nb = not a\n#b:"


@pytest.mark.parametrize("generator", [make_range_program, make_range_program_lines, make_boolean_program])
def test_bpe_keeps_token_length_for_range_and_boolean(generator):
    bpe, kept = tiny_bpe(), 0
    for seed in range(30):
        program = generator(8, random.Random(seed), query=True)
        try:
            cf = create_counterfactual(program, seed, bpe)
        except ValueError as exc:
            assert "token count" in str(exc) or "does not depend" in str(exc)
            continue
        check_pair(program, cf, bpe)
        kept += 1
    assert kept > 0


def test_range_and_boolean_lengths_are_checked_inside_the_template():
    for program in (
        make_range_program(4, random.Random(0), query=True),
        make_boolean_program(6, random.Random(1)),
    ):
        cf = create_counterfactual(program, 2, CHAR, template="Q:\n{code}\nA:")
        check_pair(program, cf, CHAR, "Q:\n{code}\nA:")


def test_the_family_is_read_from_the_program():
    assert program_family(make_range_program(3, random.Random(0))) == "range"
    assert program_family(make_boolean_program(5, random.Random(0))) == "boolean"
    assert program_family(make_variable_binding_program(5, random.Random(0))) == "binding"
    assert program_family(make_exception_program(2, random.Random(0))) == "exceptions"
    assert program_family(Program("a = 1\n#a:", 1, {"family": "range"})) == "range"
    binding = make_variable_binding_program(6, random.Random(0))
    cf = create_counterfactual(binding, 1)
    assert cf.metadata["family"] == "binding"
    assert cf.text == create_counterfactual_program(binding, 1).text


def test_mark_change_puts_the_span_on_the_original():
    program = make_range_program(4, random.Random(0), query=True)
    cf = create_counterfactual(program, 0, CHAR)
    marked = mark_change(program, cf)
    assert (marked.text, marked.answer, marked.hash) == (program.text, program.answer, program.hash)
    assert marked.metadata["changed_span"] == cf.metadata["original_span"]
    assert marked.metadata["family"] == "range" and marked.metadata["change"] == cf.metadata["change"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: create_counterfactual(make_exception_program(2, random.Random(0)), 0),
            r"^create_counterfactual: family 'exceptions' has no counterfactual support; families with one: "
            r"binding, range, boolean \(pass family=\.\.\.\)$",
        ),
        (
            lambda: create_counterfactual("a = 1\n#a:", 0, family="loops"),
            r"^create_counterfactual: family 'loops' has no counterfactual support; families with one: ",
        ),
        (
            lambda: create_counterfactual("a = True\n#a:", 0, change="bound"),
            r"^create_counterfactual: change= applies to family 'range' only; got it with 'boolean'$",
        ),
        (
            lambda: create_range_counterfactual("x = 0\nx += 2\n#x:", 0, change="step"),
            r"^create_range_counterfactual: change must be one of increment, bound or None; got 'step'$",
        ),
        (
            lambda: create_range_counterfactual(make_fibonacci_program(3, random.Random(0), query=True), 0),
            r"^create_range_counterfactual: the program has no increment or loop bound to change",
        ),
        (
            lambda: create_range_counterfactual("x = 0\nx += 2", 0),
            r"^create_range_counterfactual: cannot tell which variable is queried",
        ),
        (
            lambda: create_range_counterfactual(Program("x = 0\nx += 2\n#x:", 3, {}), 0),
            r"^create_range_counterfactual: CPython gives x=2 but the program says 3",
        ),
        (
            lambda: create_range_counterfactual("x = 0\nfor i in range(3):\n    x += 1\nx = 7\n#x:", 0),
            r"^create_range_counterfactual: no change of the increment or loop bound changes x",
        ),
        (
            lambda: create_boolean_counterfactual("a = not 1\n#a:", 0),
            r"^create_boolean_counterfactual: the program has no root constant to flip",
        ),
        (
            lambda: create_boolean_counterfactual("a = (\n#a:", 0),
            r"^create_boolean_counterfactual: the program is not valid Python \(line 1",
        ),
        (
            lambda: create_boolean_counterfactual("a = True\nb = a or True\n#b:", 0),
            r"^create_boolean_counterfactual: no change of a root constant changes b",
        ),
        (
            lambda: create_counterfactual("a = True\nb = not a\n#b:", 0, LetterTokenizer()),
            r"changes the token count",
        ),
    ],
)
def test_range_and_boolean_refuse_in_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
