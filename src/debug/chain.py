"""Static tracing of a straight-line program's binding chain: which lines carry the queried value.

Used by `debug.counterfactual` (which constant to change) and `debug.token_analyzer` (which tokens to
target). It reads the program with `ast`, follows the queried variable back through its last assignment
before each read, and stops at the assignment whose right-hand side holds a literal and no variable: the
chain's root. It handles paper-style programs (`a=5`, re-assignment) and the seed's style
(`x = 5\\ny = x * 2\\n#y:`), and refuses, with a reason, programs it cannot trace unambiguously (loops, a
line reading two variables, a literal-free root).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_QUERY = re.compile(r"^#\s*([A-Za-z_]\w*)\s*:\s*$")


class ChainError(ValueError):
    """The program is not a straight-line chain this module can trace; the message says why."""


@dataclass(frozen=True)
class Span:
    """A character span inside one line: 1-based `line`, 0-based `start`/`end` columns (end exclusive)."""

    line: int
    start: int
    end: int


@dataclass(frozen=True)
class Chain:
    """The binding chain of a queried variable.

    Attributes:
        variables: From the queried variable back to the root's variable.
        lines: 1-based line assigning each variable (same order).
        rhs: The span of each of those lines' right-hand side (same order).
        root: The span of the root line's integer literal.
        root_value: That literal's value.
        query: The span of the variable name in the trailing `#q:` comment, or None if there is none.
    """

    variables: list[str]
    lines: list[int]
    rhs: list[Span]
    root: Span
    root_value: int
    query: Span | None


def query_variable(text: str) -> str | None:
    """The variable named by a trailing `#q:` comment line, or None."""
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    found = _QUERY.match(last.strip())
    return found.group(1) if found else None


def trace_chain(text: str, answer_var: str | None = None) -> Chain:
    """Trace the chain that determines `answer_var` (default: the `#q:` query variable).

    Raises:
        ChainError: When the program does not parse, is not straight-line single-target assignments, has no
            query, or its chain is ambiguous; the message names the line and the reason.
    """
    query = query_variable(text)
    var = answer_var or query
    if var is None:
        raise ChainError(
            "cannot tell which variable is queried: end the program with '#x:' or pass answer_var"
        )
    try:
        module = ast.parse(text)
    except SyntaxError as exc:
        raise ChainError(f"the program is not valid Python (line {exc.lineno}: {exc.msg})") from None
    assigns: list[ast.Assign] = []
    for stmt in module.body:
        if not (
            isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        ):
            raise ChainError(
                f"line {stmt.lineno} is a {type(stmt).__name__}, not `name = expression`: only straight-line "
                "assignment programs have a binding chain (use make_counterfactual_pair for loop programs)"
            )
        assigns.append(stmt)
    lines = text.split("\n")

    variables: list[str] = []
    line_numbers: list[int] = []
    rhs: list[Span] = []
    before = len(assigns)
    while True:
        index = next((i for i in range(before - 1, -1, -1) if assigns[i].targets[0].id == var), None)
        if index is None:
            raise ChainError(f"variable {var!r} is read but never assigned before it")
        stmt = assigns[index]
        if stmt.lineno != stmt.end_lineno:
            raise ChainError(f"line {stmt.lineno}: an assignment spanning several lines is not supported")
        line = lines[stmt.lineno - 1]
        variables.append(var)
        line_numbers.append(stmt.lineno)
        rhs.append(_span(line, stmt.lineno, stmt.value))
        names = sorted({n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)})
        if len(names) > 1:
            raise ChainError(
                f"line {stmt.lineno} reads several variables ({', '.join(names)}): ambiguous chain"
            )
        if names:
            var, before = names[0], index
            continue
        literals = [
            n
            for n in ast.walk(stmt.value)
            if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool)
        ]
        if len(literals) != 1:
            raise ChainError(
                f"line {stmt.lineno} is the chain's root but holds {len(literals)} integer literals; "
                "it needs exactly one"
            )
        root = _span(line, stmt.lineno, literals[0])
        query_span = None
        if query is not None and query == (answer_var or query):
            last = max(i for i, text_line in enumerate(lines) if text_line.strip())
            col = lines[last].index(query, lines[last].index("#"))
            query_span = Span(last + 1, col, col + len(query))
        return Chain(variables, line_numbers, rhs, root, int(literals[0].value), query_span)


def _span(line: str, lineno: int, node: ast.expr) -> Span:
    # ast columns count UTF-8 bytes; convert to character columns.
    raw = line.encode("utf-8")
    start = len(raw[: node.col_offset].decode("utf-8"))
    end = len(raw[: node.end_col_offset].decode("utf-8"))
    return Span(lineno, start, end)


def line_offsets(text: str) -> list[int]:
    """Character offset where each line starts (index 0 is line 1)."""
    offsets, position = [], 0
    for line in text.split("\n"):
        offsets.append(position)
        position += len(line) + 1
    return offsets


#: One assignment line of a binding program: `name = literal` or `name = name`.
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(-?\d+|[A-Za-z_]\w*)\s*$")


def values_by_line(text: str) -> list[str | None]:
    """The value each line's variable holds right after that line, one entry per line of `text`.

    The program is run line by line the way Python would (a name takes the value its right-hand side holds
    at that point). A line of any other shape, or one reading a name with no known value, gives None; such a
    line leaves the values alone, or forgets its variable's.
    """
    values: dict[str, str] = {}
    out: list[str | None] = []
    for line in text.split("\n"):
        match = _ASSIGNMENT.match(line)
        value = None
        if match:
            name, rhs = match.groups()
            value = rhs if rhs[0].isdigit() or rhs[0] == "-" else values.get(rhs)
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        out.append(value)
    return out
