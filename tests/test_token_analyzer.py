"""TokenAnalyzer: labels land on the right characters under a char tokenizer and a locally trained BPE."""

from __future__ import annotations

import random
import re

import pytest
from bpe_tokenizer import tiny_bpe

from debug import prompts
from debug.causal.inputs import prepare_inputs
from debug.counterfactual import create_counterfactual, mark_change
from debug.generators import (
    make_boolean_program,
    make_range_program,
    make_range_program_lines,
    make_variable_binding_program,
)
from debug.programs import Program
from debug.token_analyzer import TokenAnalyzer
from debug.token_analyzer import TokenAnalyzer as SeedNameAnalyzer
from debug.tokenizer import build_char_tokenizer

BPE = tiny_bpe()
CHAR = build_char_tokenizer()


def expected_chars(program, template: str) -> dict[str, int]:
    """Character index of each label, from the metadata and the paper-style line shape `v=x`."""
    starts, position = [], prompts.code_offset(template)
    for line in program.text.split("\n"):
        starts.append(position)
        position += len(line) + 1
    meta = program.metadata
    chars = {
        f"ref depth {k}": starts[line - 1] + 2 for k, line in enumerate(reversed(meta["chain_lines"]), 1)
    }
    chars["query"] = starts[-1] + 1
    return chars


@pytest.mark.parametrize("tokenizer", [CHAR, BPE], ids=["char", "bpe"])
@pytest.mark.parametrize("template", [prompts.VARIABLE_BINDING, prompts.MINIMAL, prompts.STEP_BY_STEP])
def test_labels_cover_the_labelled_characters(tokenizer, template):
    rng = random.Random(1)
    analyzer = TokenAnalyzer(tokenizer)
    for _ in range(40):
        program = make_variable_binding_program(16, rng)
        targets = analyzer.analyze(program, template)
        assert targets.positions["final"] == len(targets.input_ids) - 1
        assert targets.prompt == prompts.render(template, program.text)
        chars = expected_chars(program, template)
        assert set(targets.positions) == set(chars) | {"final"}
        assert len(chars) == program.metadata["hops"] + 1
        for label, char in chars.items():
            lo, hi = targets.offsets[targets.positions[label]]
            assert lo <= char < hi, (label, program.text)


def test_char_tokenizer_labels_are_the_chain_characters():
    program = make_variable_binding_program(12, random.Random(5), 3)
    targets = TokenAnalyzer(CHAR).analyze(program)
    chain = program.metadata["chain"]  # query -> root
    labelled = [targets.tokens[targets.positions[f"ref depth {k}"]] for k in (1, 2, 3)]
    assert labelled == [str(program.answer), chain[2], chain[1]]
    assert targets.tokens[targets.positions["query"]] == chain[0]
    assert targets.tokens[targets.positions["final"]] == ":"
    assert targets.label_of(targets.positions["query"]) == "query"


def test_bpe_really_merges_characters():
    program = make_variable_binding_program(16, random.Random(2))
    targets = TokenAnalyzer(BPE).analyze(program)
    assert len(targets.input_ids) < len(program.text)


def test_seed_style_program_and_seed_module_name():
    targets = SeedNameAnalyzer(CHAR).analyze("x = 5\ny = x * 2\n#y:")
    assert {k: targets.tokens[v] for k, v in targets.positions.items()} == {
        "ref depth 1": "5",
        "ref depth 2": "x",
        "query": "y",
        "final": ":",
    }


def test_untraceable_program_is_refused():
    with pytest.raises(ValueError, match="For"):
        TokenAnalyzer(CHAR).analyze("x = 0\nfor i in range(3):\n    x += 1\n#x:")


# -- range and boolean targets: the changed constant, the accumulator or operands, the query, the final token


def line_starts(text: str, template: str) -> list[int]:
    starts, position = [], prompts.code_offset(template)
    for line in text.split("\n"):
        starts.append(position)
        position += len(line) + 1
    return starts


def covers(targets, label: str, char: int) -> bool:
    lo, hi = targets.offsets[targets.positions[label]]
    return lo <= char < hi


@pytest.mark.parametrize("tokenizer", [CHAR, BPE], ids=["char", "bpe"])
@pytest.mark.parametrize("template", ["{code}", prompts.MINIMAL])
@pytest.mark.parametrize("generator", [make_range_program, make_range_program_lines])
def test_range_labels_cover_the_changed_constant_and_the_accumulator(tokenizer, template, generator):
    rng, analyzer = random.Random(3), TokenAnalyzer(tokenizer)
    for seed in range(20):
        program = generator(rng.randint(1, 12), rng, query=True)
        cf = create_counterfactual(program, seed, tokenizer, template=template)
        targets = analyzer.analyze(mark_change(program, cf), template)
        assert set(targets.positions) == {"changed constant", "accumulator", "query", "final"}
        assert targets.positions["final"] == len(targets.input_ids) - 1
        lines, starts = program.text.split("\n"), line_starts(program.text, template)
        line, start, _ = cf.metadata["original_span"]
        assert covers(targets, "changed constant", starts[line - 1] + start)
        last_update = max(i for i, text in enumerate(lines) if "x += " in text)
        assert covers(targets, "accumulator", starts[last_update] + lines[last_update].index("x"))
        assert covers(targets, "query", starts[-1] + 1)


@pytest.mark.parametrize("tokenizer", [CHAR, BPE], ids=["char", "bpe"])
def test_boolean_labels_cover_the_flipped_constant_and_the_operands(tokenizer):
    rng, analyzer, seen = random.Random(4), TokenAnalyzer(tokenizer), 0
    for seed in range(40):
        program = make_boolean_program(rng.randint(2, 12), rng, query=True)
        try:
            cf = create_counterfactual(program, seed, tokenizer)
        except ValueError:
            continue  # no flip changes the answer
        seen += 1
        targets = analyzer.analyze(mark_change(program, cf))
        lines, starts = program.text.split("\n"), line_starts(program.text, "{code}")
        line, start, _ = cf.metadata["original_span"]
        assert covers(targets, "changed constant", starts[line - 1] + start)
        answer_line = max(
            i for i, text in enumerate(lines) if text.startswith(f"{cf.metadata['answer_var']} = ")
        )
        rhs_start = lines[answer_line].index(" = ") + 3
        operands = [
            m.start()
            for m in re.finditer(r"[A-Za-z]+", lines[answer_line][rhs_start:])
            if m.group() not in {"not", "and", "or", "True", "False"}
        ]
        expected = {f"operand {k}" for k in range(1, len(operands) + 1)}
        assert set(targets.positions) == {"changed constant", "query", "final"} | expected
        for k, column in enumerate(operands, 1):
            assert covers(targets, f"operand {k}", starts[answer_line] + rhs_start + column)
    assert seen > 10


def test_char_tokenizer_range_and_boolean_tokens():
    program = Program("x = 0\nfor i in range(3):\n    x += 4\n#x:", 12, {"answer_var": "x"})
    cf = create_counterfactual(program, 0, CHAR, change="increment")
    targets = TokenAnalyzer(CHAR).analyze(mark_change(program, cf))
    tokens = {label: targets.tokens[index] for label, index in targets.positions.items()}
    assert tokens == {"changed constant": "4", "accumulator": "x", "query": "x", "final": ":"}
    assert (
        targets.positions["accumulator"] < targets.positions["changed constant"] < targets.positions["query"]
    )
    program = Program("a = True\nb = False\nc = a and b\n#c:", False, {"answer_var": "c"})
    cf = create_counterfactual(program, 0, CHAR)
    targets = TokenAnalyzer(CHAR).analyze(mark_change(program, cf))
    tokens = {label: targets.tokens[index] for label, index in targets.positions.items()}
    assert tokens == {"changed constant": "F", "operand 1": "a", "operand 2": "b", "query": "c", "final": ":"}
    # A counterfactual carries its own span (in its own text): its targets are the same tokens.
    assert TokenAnalyzer(CHAR).analyze(cf).positions == targets.positions


def test_range_program_without_a_change_still_gets_the_other_targets():
    program = Program("x = 0\nx += 2\nx += 2\n#x:", 4, {"family": "range", "answer_var": "x"})
    assert set(TokenAnalyzer(CHAR).analyze(program).positions) == {"accumulator", "query", "final"}


def test_unknown_family_and_missing_accumulator_are_refused():
    with pytest.raises(ValueError, match=r"family 'exceptions' has no token targets; choose one of binding"):
        TokenAnalyzer(CHAR).analyze(Program("x = 1\n#x:", 1, {"family": "exceptions"}))
    with pytest.raises(ValueError, match=r"the range program has no `x \+= \.\.\.` line"):
        TokenAnalyzer(CHAR).analyze(Program("x = 1\n#x:", 1, {"family": "range"}))


def test_a_marked_pair_gives_the_sweep_its_targets():
    program = make_range_program(3, random.Random(0), query=True)
    cf = create_counterfactual(program, 0, CHAR)
    pair = prepare_inputs(CHAR, mark_change(program, cf), cf)
    assert set(pair.targets) == {"changed constant", "accumulator", "query", "final"}
    assert pair.tokens[pair.targets["changed constant"]] == str(cf.metadata["original_value"])[0]
