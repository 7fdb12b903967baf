"""The `Program`: one generated piece of code, its expected answer, and what the generator knows about it.

Every generator in `debug.generators` returns a `Program`. It unpacks like the seed's tuples
(`program, expected = make_variable_binding_program(16, rng, 2)`) and still carries `.metadata`, which always
names `answer_var`, the variable whose final value is the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Answer = int | bool | str


@dataclass(frozen=True)
class Program:
    """A program text, the value it computes, and generator metadata.

    Attributes:
        text: The program source, exactly as shown to the model (before any prompt template).
        answer: The value of `metadata["answer_var"]` after the program runs.
        metadata: Generator facts (always `answer_var`; binding programs add hops, chain, root_line, ...).
    """

    text: str
    answer: Answer
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        # Unpacks as (text, answer), the seed's tuple contract.
        yield self.text
        yield self.answer

    @property
    def hash(self) -> str:
        """A stable 16-hex-digit hash of the text and answer; pairs samples across runs."""
        return text_hash(f"{self.text}\x00{self.answer!r}")


def text_hash(text: str) -> str:
    """Stable short hash (sha256, 16 hex digits) of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


GeneratorFn = Callable[..., "Program | tuple[Any, ...]"]


def as_program(result: Program | tuple[Any, ...]) -> Program:
    """Normalise a generator's return value to a `Program`.

    A generator may return a `Program`, `(text, answer)` or `(text, answer, metadata)`.

    Raises:
        TypeError: When the value is none of those shapes.
    """
    if isinstance(result, Program):
        return result
    if isinstance(result, tuple) and len(result) in (2, 3):
        metadata = dict(result[2]) if len(result) == 3 else {}
        return Program(text=str(result[0]), answer=result[1], metadata=metadata)
    raise TypeError(
        "a generator must return Program, (text, answer) or (text, answer, metadata); "
        f"got {type(result).__name__}"
    )


class GeneratorError(RuntimeError):
    """A generator raised; the message names the generator, seq_len and seed so the case can be replayed."""


def generator_name(generator: GeneratorFn) -> str:
    """The registry-style name of a generator callable (its `__name__`, or its class name)."""
    return getattr(generator, "__name__", type(generator).__name__)


def program_seed(base_seed: int, seq_len: int, seq_id: int) -> int:
    """The seed of program `seq_id` at `seq_len`: independent of worker, order and process (no `hash()`)."""
    digest = hashlib.sha256(f"{base_seed}:{seq_len}:{seq_id}".encode()).hexdigest()
    return int(digest[:8], 16)  # 32 bits: the range np.random.RandomState accepts


def generate(generator: GeneratorFn, seq_len: int, seed: int, **knobs: Any) -> Program:
    """Run one generator call with `np.random.RandomState(seed)` and normalise the result.

    The seed project's generators (and users' custom ones) are written against numpy's `RandomState`; the
    built-in generators accept any rng (`debug.rng.as_random`), so numpy's is the one to pass.

    Raises:
        ValueError: Passed through when the generator refuses `seq_len` (its message gives the valid range).
        GeneratorError: When the generator raised anything else; names generator, seq_len and seed.
    """
    import numpy as np

    try:
        return as_program(generator(seq_len, np.random.RandomState(seed), **knobs))
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the replay coordinates
        raise GeneratorError(
            f"generator {generator_name(generator)} failed at seq_len={seq_len}, seed={seed}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def generate_programs(
    generator: GeneratorFn, seq_len: int, num_seqs: int, base_seed: int = 0, **knobs: Any
) -> list[Program]:
    """Generate `num_seqs` programs at `seq_len`, program i seeded by `program_seed(base_seed, seq_len, i)`.

    The same (generator, knobs, seq_len, base_seed) gives the same list on every machine and worker.
    """
    return [
        generate(generator, seq_len, program_seed(base_seed, seq_len, i), **knobs) for i in range(num_seqs)
    ]
