"""Checks every generator shares: a seq_len it cannot honour is refused with the valid range."""

from __future__ import annotations

import numbers
from typing import Any


def check_seq_len(name: str, seq_len: Any, lo: int, hi: int | None = None) -> int:
    """Return `seq_len` as an int, or raise ValueError stating the range `name` accepts.

    Args:
        name: The generator's name, for the message.
        seq_len: The requested length.
        lo: Smallest accepted value.
        hi: Largest accepted value, or None for no upper bound.
    """
    valid = f"{lo} <= seq_len <= {hi}" if hi is not None else f"seq_len >= {lo}"
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        try:
            as_int = int(seq_len)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: seq_len must be an integer with {valid}; got {seq_len!r}") from None
        if as_int != seq_len:
            raise ValueError(f"{name}: seq_len must be an integer with {valid}; got {seq_len!r}")
        seq_len = as_int
    if seq_len < lo or (hi is not None and seq_len > hi):
        raise ValueError(f"{name}: seq_len must satisfy {valid}; got {seq_len}")
    return seq_len


def check_int(name: str, knob: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Validate an integer knob the same way as `check_seq_len`."""
    valid = f"{lo} <= {knob} <= {hi}" if hi is not None else f"{knob} >= {lo}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: {knob} must be an integer with {valid}; got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}: {knob} must be an integer with {valid}; got {value!r}")
    return value


def check_query(name: str, query: Any) -> bool:
    """Return `query` if it is a bool, or raise ValueError naming the generator.

    Args:
        name: The generator's name, for the message.
        query: The requested `query` flag.
    """
    if not isinstance(query, bool):
        raise ValueError(f"{name}: query must be True or False; got {query!r}")
    return query


def add_query(text: str, answer_var: str, query: bool) -> str:
    """`text` followed by the query line `#<answer_var>:` when `query` is set, else `text` unchanged.

    The query is a Python comment, so the program runs the same with it; it has no trailing space, so the
    answer is the very next text after it.
    """
    return f"{text}\n#{answer_var}:" if query else text
