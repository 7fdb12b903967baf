"""`ExperimentConfig` and `quick_experiment`: one experiment's settings, validated when built.

As in the seed, `quick_experiment` only builds and returns the config; `ExperimentRunner().run(config)`
runs it.
A bad setting is refused at construction with a one-line message that names the fix, so a typo never costs a
model load.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from debug.chat import check_chat_template_kwargs
from debug.models import DEFAULT_MODEL
from debug.parsing import parser_for
from debug.programs import (
    GeneratorError,
    GeneratorFn,
    Program,
    generate,
    generate_programs,
    generator_name,
    program_seed,
)
from debug.prompts import check_template

DEFAULT_NUM_SEQS = 10
DEFAULT_SEQ_LENS = (2, 3, 4, 5, 6)


def _default_models() -> list[str]:
    return [DEFAULT_MODEL]


@dataclass
class ExperimentConfig:
    """What to run: which programs, in which prompt, on which models.

    Attributes:
        name: Experiment name (results are filed under it).
        prompt_template: Prompt with one `{code}` placeholder (see `debug.prompts`).
        program_generator: `(seq_len, rng, **knobs) -> Program | (text, answer[, metadata])`.
        models: Model ids; default `[debug.DEFAULT_MODEL]`, the embedded model.
        num_seqs: Programs per sequence length (> 0).
        seq_lens: Sequence lengths to generate (non-empty, each > 0).
        base_seed: Program i at length L is generated with `programs.program_seed(base_seed, L, i)`.
        generator_kwargs: Knobs passed to the generator (e.g. `{"num_hops": 2}`).
        parser: Model text -> answer; None picks `parsing.parser_for(expected answer)` per program.
        max_new_tokens: Generation budget per answer; None lets the scorer choose its default.
        chat_template: Render each prompt as one user message through the model's own chat template
            (a served `openai:` model gets it on `/v1/chat/completions`); a model without one is refused.
        chat_template_kwargs: Arguments of the chat template, e.g. `{"enable_thinking": False}`.
    """

    name: str
    prompt_template: str
    program_generator: GeneratorFn
    models: list[str] = field(default_factory=_default_models)
    num_seqs: int = DEFAULT_NUM_SEQS
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULT_SEQ_LENS))
    base_seed: int = 0
    generator_kwargs: dict[str, Any] = field(default_factory=dict)
    parser: Callable[[str], Any] | None = None
    max_new_tokens: int | None = None
    chat_template: bool = False
    chat_template_kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("ExperimentConfig: name must be a non-empty string")
        check_template(self.prompt_template)
        if not callable(self.program_generator):
            raise ValueError(
                "ExperimentConfig: program_generator must be callable as (seq_len, rng) -> Program"
            )
        if isinstance(self.models, str):
            self.models = [self.models]
        self.models = list(self.models) if self.models is not None else []
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError(
                "ExperimentConfig: models must be a non-empty list of model ids, e.g. ['embedded:binder']"
            )
        if not _is_int(self.num_seqs) or self.num_seqs <= 0:
            raise ValueError(f"ExperimentConfig: num_seqs must be a positive integer; got {self.num_seqs!r}")
        self.seq_lens = _check_seq_lens(self.seq_lens)
        if not _is_int(self.base_seed):
            raise ValueError(f"ExperimentConfig: base_seed must be an integer; got {self.base_seed!r}")
        if not isinstance(self.generator_kwargs, dict):
            raise ValueError("ExperimentConfig: generator_kwargs must be a dict of generator knobs")
        if self.parser is not None and not callable(self.parser):
            raise ValueError("ExperimentConfig: parser must be callable (text -> answer) or None")
        if self.max_new_tokens is not None and (not _is_int(self.max_new_tokens) or self.max_new_tokens <= 0):
            raise ValueError(
                "ExperimentConfig: max_new_tokens must be a positive integer or None; "
                f"got {self.max_new_tokens!r}"
            )
        if not isinstance(self.chat_template, bool):
            raise ValueError(
                f"ExperimentConfig: chat_template must be True or False; got {self.chat_template!r}"
            )
        self.chat_template_kwargs = check_chat_template_kwargs(
            self.chat_template_kwargs, "ExperimentConfig: chat_template_kwargs"
        )
        if self.chat_template_kwargs is not None and not self.chat_template:
            raise ValueError("ExperimentConfig: chat_template_kwargs needs chat_template=True")
        # One dry run per length, with the seed the run will use, so a length the generator refuses (or a
        # wrong knob) fails here with the generator's own message instead of mid-run.
        self.num_seqs, self.base_seed = int(self.num_seqs), int(self.base_seed)
        for seq_len in self.seq_lens:
            seed = program_seed(self.base_seed, seq_len, 0)
            try:
                generate(self.program_generator, seq_len, seed, **self.generator_kwargs)
            except (ValueError, GeneratorError) as exc:
                raise ValueError(f"ExperimentConfig {self.name!r}: seq_len {seq_len}: {exc}") from None

    @property
    def generator_name(self) -> str:
        """The generator's name (`__name__`)."""
        return generator_name(self.program_generator)

    def programs(self, seq_len: int) -> list[Program]:
        """The `num_seqs` programs at `seq_len` (deterministic: same config, same programs)."""
        return generate_programs(
            self.program_generator, seq_len, self.num_seqs, self.base_seed, **self.generator_kwargs
        )

    def parser_for(self, answer: Any) -> Callable[[str], Any]:
        """The parser for a program with this expected answer: `parser` if set, else chosen by answer type."""
        return self.parser if self.parser is not None else parser_for(answer)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary for reports (callables by name)."""
        return {
            "name": self.name,
            "prompt_template": self.prompt_template,
            "program_generator": self.generator_name,
            "models": list(self.models),
            "num_seqs": self.num_seqs,
            "seq_lens": list(self.seq_lens),
            "base_seed": self.base_seed,
            "generator_kwargs": {k: repr(v) for k, v in self.generator_kwargs.items()},
            "parser": None if self.parser is None else getattr(self.parser, "__name__", repr(self.parser)),
            "max_new_tokens": self.max_new_tokens,
            "chat_template": self.chat_template,
            "chat_template_kwargs": self.chat_template_kwargs,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_seq_lens(seq_lens: Any) -> list[int]:
    if _is_int(seq_lens):
        seq_lens = [seq_lens]
    if isinstance(seq_lens, str | bytes) or not isinstance(seq_lens, Iterable):
        raise ValueError(
            f"ExperimentConfig: seq_lens must be a non-empty list of positive integers; got {seq_lens!r}"
        )
    values = list(seq_lens)
    if not values:
        raise ValueError("ExperimentConfig: seq_lens must be a non-empty list of positive integers; got []")
    bad = [n for n in values if not _is_int(n) or n <= 0]
    if bad:
        raise ValueError(f"ExperimentConfig: seq_lens must be positive integers; got {bad!r} in {values!r}")
    return [int(n) for n in values]


def quick_experiment(
    name: str,
    prompt_template: str,
    program_generator: GeneratorFn,
    models: Sequence[str] | str | None = None,
    num_seqs: int = DEFAULT_NUM_SEQS,
    seq_lens: Sequence[int] | None = None,
    **kwargs: Any,
) -> ExperimentConfig:
    """Build a validated `ExperimentConfig` (the seed's helper; it does not run anything).

    Example:
        `quick_experiment("my_test", prompts.MINIMAL, generators.make_range_program)` gives 10 programs
        at each of seq_lens 2..6 on `[debug.DEFAULT_MODEL]`.

    Args:
        name: Experiment name.
        prompt_template: Template with `{code}`.
        program_generator: The generator.
        models: Model ids (default `[debug.DEFAULT_MODEL]`).
        num_seqs: Programs per length (default 10).
        seq_lens: Lengths (default [2, 3, 4, 5, 6]).
        **kwargs: Other `ExperimentConfig` fields: base_seed, generator_kwargs, parser, max_new_tokens,
            chat_template, chat_template_kwargs.

    Raises:
        ValueError: For any invalid setting (the message says which and how to fix it).
    """
    known = (
        "base_seed",
        "generator_kwargs",
        "parser",
        "max_new_tokens",
        "chat_template",
        "chat_template_kwargs",
    )
    unknown = set(kwargs) - set(known)
    if unknown:
        raise ValueError(f"quick_experiment: unknown setting(s) {sorted(unknown)}; known: {', '.join(known)}")
    return ExperimentConfig(
        name=name,
        prompt_template=prompt_template,
        program_generator=program_generator,
        models=_default_models() if models is None else models,
        num_seqs=num_seqs,
        seq_lens=list(DEFAULT_SEQ_LENS) if seq_lens is None else seq_lens,
        **kwargs,
    )
