"""Static chain tracing agrees with CPython-style semantics on hand-written programs."""

from __future__ import annotations

import pytest

from debug.chain import ChainError, Span, query_variable, trace_chain


def test_reassignment_follows_the_last_assignment_before_each_read():
    chain = trace_chain("a=1\nb=a\na=2\nc=b\na=3\n#c:")
    assert chain.variables == ["c", "b", "a"]
    assert chain.lines == [4, 2, 1] and chain.root_value == 1
    assert chain.root == Span(1, 2, 3) and chain.query == Span(6, 1, 2)


def test_expression_lines_with_one_variable_are_followed():
    chain = trace_chain("x = 12\ny = x * 2\nz = -y\n#z:")
    assert chain.variables == ["z", "y", "x"] and chain.root == Span(1, 4, 6) and chain.root_value == 12
    assert chain.rhs[0] == Span(3, 4, 6)


def test_answer_var_overrides_the_query_line():
    chain = trace_chain("a=1\nb=2\n#a:", answer_var="b")
    assert chain.variables == ["b"] and chain.query is None


def test_query_variable():
    assert query_variable("a=1\n#a:") == "a" and query_variable("a=1\n#a:\n") == "a"
    assert query_variable("a=1") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a=(1\n#a:", "not valid Python"),
        ("a = 1 + 2\n#a:", "holds 2 integer literals"),
        ("a = 'x'\n#a:", "holds 0 integer literals"),
        ("while False:\n    pass\na=1\n#a:", "While"),
    ],
)
def test_untraceable_programs_say_why(text, reason):
    with pytest.raises(ChainError, match=reason):
        trace_chain(text)
