"""Tests for debug.train.data: line-value targets against CPython, their label positions, workers."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.generators import make_variable_binding_program
from debug.tokenizer import build_char_tokenizer
from debug.train import PRESETS, DataSource, Stage
from debug.train.data import BatchStream, Curriculum, encode_lists, line_values, plan_programs


def _python_values(text: str) -> list[tuple[int, str]]:
    """The oracle: run the program line by line in CPython and read each line's variable after it."""
    scope: dict[str, object] = {}
    out, offset = [], 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        end = offset + len(line)
        if "=" in line and not line.lstrip().startswith("#") and number < len(lines) - 1:
            exec(line, {}, scope)
            out.append((end, str(scope[line.split("=", 1)[0].strip()])))
        offset = end + 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    style=st.sampled_from(["paper", "spaced"]),
)
def test_line_values_are_what_python_computes(seq_len: int, seed: int, style: str) -> None:
    program = make_variable_binding_program(seq_len, random.Random(seed), style=style)
    assert line_values(program.text) == _python_values(program.text)


def test_line_values_skip_other_lines_and_unknown_names() -> None:
    text = "a = 1\nprint(a)\nb = zz\nc = a\nb = c\n#b:"
    # `print(a)` is no assignment; `b = zz` reads an unbound name, so b is unknown until `b = c`.
    assert line_values(text) == [(5, "1"), (27, "1"), (33, "1")]
    assert {text[offset] for offset, _ in line_values(text)} == {"\n"}


def test_line_targets_label_each_newline_with_the_value_there() -> None:
    tokenizer = build_char_tokenizer()
    program = make_variable_binding_program(6, random.Random(3), num_hops=2)
    (row,), (dense,) = encode_lists([program], tokenizer, line_targets=True)
    (_,), (sparse,) = encode_lists([program], tokenizer)
    prompt = len(program.text)  # one token per character
    assert dense[prompt:] == sparse[prompt:]  # the answer and <eos> labels are unchanged
    assert all(label == -100 for label in sparse[:prompt])
    labelled = {i - 1: tokenizer.decode([label]) for i, label in enumerate(dense[:prompt]) if label != -100}
    # Labels are shifted: the label at i + 1 scores the output at i, and i is the line's newline.
    assert labelled == dict(line_values(program.text))
    assert all(program.text[i] == "\n" for i in labelled)
    assert len(row) == len(dense)


def test_workers_build_the_same_line_target_batches() -> None:
    tokenizer = build_char_tokenizer()
    mix = PRESETS["tiny"].mix
    inline = BatchStream(Curriculum(mix), random.Random(5), 8, tokenizer, line_targets=True)
    ahead = BatchStream(Curriculum(mix), random.Random(5), 8, tokenizer, workers=2, line_targets=True)
    with inline, ahead:
        for _ in range(3):
            a, b = inline.next(), ahead.next()
            assert all(torch.equal(a[k], b[k]) for k in a)
            assert (a["labels"] != -100).sum() > 2 * len(a["labels"])  # more than answer + eos per row


def test_a_curriculum_draws_each_stage_from_its_own_mix_then_the_final_one() -> None:
    recall = (DataSource(seq_lens=(2,), knobs={"max_hops": 1, "p_constant": 1.0}),)
    short = (DataSource(seq_lens=(3, 4)), DataSource(seq_lens=(5,), knobs={"style": "spaced"}))
    final = PRESETS["tiny"].mix
    curriculum = Curriculum(final, (Stage(2, recall), Stage(3, short)))
    assert [curriculum.stage(step) for step in range(1, 8)] == [0, 0, 1, 1, 1, 2, 2]
    assert curriculum.sources == recall + short + final
    rng = random.Random(1)
    for step in range(1, 8):
        mix = (recall, short, final)[curriculum.stage(step)]
        for index, seq_len, _ in curriculum.plan(rng, 20, step):
            assert curriculum.sources[index] in mix and seq_len in curriculum.sources[index].seq_lens
    # Without stages the plans are plan_programs' own: recipes without a curriculum keep their data.
    assert Curriculum(final).plan(random.Random(3), 9, 1) == plan_programs(final, random.Random(3), 9)
    with pytest.raises(ValueError, match="steps >= 1"):
        Curriculum(final, (Stage(0, recall),))


def test_a_restored_stream_continues_where_the_first_one_stopped() -> None:
    tokenizer = build_char_tokenizer()
    curriculum = Curriculum(PRESETS["tiny"].mix, (Stage(2, (DataSource(seq_lens=(2,)),)),))
    whole = BatchStream(curriculum, random.Random(4), 4, tokenizer)
    batches = [whole.next() for _ in range(4)]
    first = BatchStream(curriculum, random.Random(4), 4, tokenizer)
    first.next()
    second = BatchStream(curriculum, random.Random(99), 4, tokenizer)
    second.restore(1, first.rng_state())
    for expected in batches[1:]:
        got = second.next()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
