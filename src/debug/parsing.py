"""Parsers: model text -> answer value, or None when nothing parses.

They are written for what models actually emit after a prompt: a bare value (" 5"), an echo of the code
("x = 5"), a query echo ("#d: 5"), a phrase ("The answer is: 5."), or reasoning that ends in
"Final answer: 5". Rules, in order: an explicit answer marker ("answer is", "answer:", "final answer")
wins and its last occurrence is used (reasoning states intermediate values first); otherwise the value at the
start of the text; otherwise the first value after `=`, `:` or "is"; otherwise the first value anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# An integer that is not part of a word or a decimal ("x1", "2.5" do not count; "5." at a sentence end does).
_INT = r"[-\u2212]?\d+(?!\.\d)(?!\w)"
_INT_RE = re.compile(rf"(?<![\w.]){_INT}")
_BOOL_RE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_MARKER_RE = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*(?:\*\*)?", re.IGNORECASE)
_LEAD_INT_RE = re.compile(rf"\s*(?:\*\*)?({_INT})")
_CUE_INT_RE = re.compile(rf"(?:[:=]|\bis\b)\s*({_INT})", re.IGNORECASE)


def _to_int(token: str) -> int:
    return int(token.replace("\u2212", "-"))


def _after_last_marker(text: str) -> str | None:
    markers = list(_MARKER_RE.finditer(text))
    return text[markers[-1].end() :] if markers else None


def parse_integer(text: Any) -> int | None:
    """The integer a model's answer states, or None.

    Examples: "5" -> 5, " -3\\n" -> -3, "x = 5" -> 5, "is: 5" -> 5, "#d: 5" -> 5,
    "x = 1 ... Final answer: 12" -> 12, "no idea" -> None.
    """
    if not isinstance(text, str):
        return None
    tail = _after_last_marker(text)
    if tail is not None:
        found = _LEAD_INT_RE.match(tail)
        if found:
            return _to_int(found.group(1))
    for pattern in (_LEAD_INT_RE.match(text), _CUE_INT_RE.search(text), _INT_RE.search(text)):
        if pattern:
            return _to_int(pattern.group(1) if pattern.groups() else pattern.group(0))
    return None


def parse_boolean(text: Any) -> bool | None:
    """True or False as a model's answer states it (any case), or None.

    After an answer marker the last marker's value is used; otherwise the first True/False in the text.
    """
    if not isinstance(text, str):
        return None
    tail = _after_last_marker(text)
    if tail is not None:
        found = _BOOL_RE.match(tail.lstrip(" *"))
        if found:
            return found.group(1).lower() == "true"
    found = _BOOL_RE.search(text)
    return None if found is None else found.group(1).lower() == "true"


def parse_variable_binding(text: Any) -> int | None:
    """The value a model gives after a binding query `#q:`, or None.

    The model usually writes the digit straight away ("5", " 5\\n#b:"); it may also echo the query or an
    assignment ("#d: 5", "x = 5", "is: 5"). Negative and multi-digit values parse too.
    """
    return parse_integer(text)


def parse_text(text: Any) -> str | None:
    """The first non-empty line, stripped (for answers that are neither int nor bool), or None."""
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def parser_for(answer: Any) -> Callable[[Any], Any]:
    """The parser suiting an expected answer: bool -> parse_boolean, int -> parse_integer, else parse_text."""
    if isinstance(answer, bool):
        return parse_boolean
    if isinstance(answer, int):
        return parse_integer
    return parse_text
