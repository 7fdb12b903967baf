"""Eval cases: what an eval module declares (`Task`) and what one parametrized test runs (`Case`).

An eval module lists its tasks at module level::

    from debug.plugin import Task

    TASKS = [Task("VARIABLE_BINDING", generator="make_variable_binding_program", prompt="VARIABLE_BINDING",
                  seq_lens=(16,))]

    def test_variable_binding(debug_case, debug_model, measure):
        measure.evaluate(debug_case, debug_model)

`pytest_generate_tests` crosses the tasks with the `--model` and `--seq-lens` options; each combination is one
test whose id reads `test_variable_binding[embedded:binder-VARIABLE_BINDING-16]`, so `-k variable_binding` or
`-k "binding and 16"` selects naturally. Nothing heavy happens at collection time (no model, no programs),
so a 10,000-case `--collect-only` stays fast.

Prompt forms. A task may say which form it measures: `form="query"` (the raw program ending in the query
line `#<answer_var>:`, generated with `knobs={"query": True}` and prompted as `{code}`: what the embedded
models are trained on) or `form="instruction"` (a template from `debug.prompts` that asks the question in
words). A task without a form (binding, whose raw program is the paper's prompt for every model) runs in
either.
`--prompt-form` picks per model: `query`, `instruction`, or `auto` (the default), which is `query` for
`embedded:*` models and `instruction` for every other model. Why instruction for those: a hub or local model
was never taught that a trailing `#x:` comment is a question, so the query form would measure its guess at the
format as much as its tracing, and an instruction model under `--chat-template` would get a bare program with
no question at all; the instruction tasks are also what those models were measured on before, so their case
ids, cached answers and saved baselines stay comparable. Under `auto` a run of an embedded and a hub model
measures them on different tasks of the same family (only form-less tasks pair); pass `--prompt-form query`
(or `instruction`) to measure both on the same prompts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from debug import prompts
from debug.generators import GENERATORS, check_query_support
from debug.models import EMBEDDED_PREFIX

#: What a task's `form` may be (None: the task runs in every form).
TASK_FORMS = ("query", "instruction")
#: What `--prompt-form` accepts; "auto" is "query" for `embedded:*` models and "instruction" for the rest.
PROMPT_FORMS = ("auto", *TASK_FORMS)


@dataclass(frozen=True)
class Task:
    """One (generator, prompt) pairing of an eval family.

    Attributes:
        name: The label in case ids, e.g. "VARIABLE_BINDING" or "counter".
        generator: A key of `debug.generators.GENERATORS` or a generator callable `(seq_len, rng, **knobs)`.
        prompt: The name of a template in `debug.prompts` (e.g. "VARIABLE_BINDING") or a literal template
            containing `{code}`.
        seq_lens: The sequence lengths measured when `--seq-lens` is not given.
        knobs: Extra keyword arguments for the generator.
        parser: Answer parser; None picks `debug.parsing.parser_for(expected answer)`.
        form: "query" (raw program ending in `#<answer_var>:`), "instruction" (a worded template), or None
            (runs whatever `--prompt-form` says). `--prompt-form` measures only the tasks of its form.

    Raises:
        ValueError: For an unknown form, or `knobs={"query": True}` on a generator without a query form.
    """

    name: str
    generator: str | Callable[..., Any]
    prompt: str
    seq_lens: tuple[int, ...] = (4, 8, 16)
    knobs: dict[str, Any] = field(default_factory=dict)
    parser: Callable[[str], Any] | None = None
    form: str | None = None

    def __post_init__(self) -> None:
        if self.form is not None and self.form not in TASK_FORMS:
            raise ValueError(
                f"Task {self.name!r}: form must be one of {TASK_FORMS} or None; got {self.form!r}"
            )
        if self.knobs.get("query"):
            # Checked here, at collection, so a generator without a query form fails before any model loads.
            generator = GENERATORS.get(self.generator) if isinstance(self.generator, str) else self.generator
            if generator is not None:
                try:
                    check_query_support(generator)
                except ValueError as exc:
                    raise ValueError(f"Task {self.name!r}: {exc}") from None

    @property
    def generator_name(self) -> str:
        """The generator's registry name (or callable name)."""
        if isinstance(self.generator, str):
            return self.generator
        return getattr(self.generator, "__name__", type(self.generator).__name__)

    @property
    def prompt_name(self) -> str:
        """The prompt's name in `debug.prompts`, or "custom" for a literal template."""
        return "custom" if "{code}" in self.prompt else self.prompt


@dataclass(frozen=True)
class Case:
    """One parametrized measurement: a model, a task and a sequence length.

    Attributes:
        model: The model id as given to `--model`.
        label: The model's label in the case id (a path is shortened to its folder name when unambiguous).
        task: The `Task` measured.
        seq_len: The sequence length of the generated programs.
        num_seqs: Programs per case.
        seed: Base seed; program i is seeded by `debug.programs.program_seed(seed, seq_len, i)`.
        family: The eval family (the module name without `test_`).
    """

    model: str
    label: str
    task: Task
    seq_len: int
    num_seqs: int
    seed: int
    family: str

    @property
    def param_id(self) -> str:
        """The parametrize id: `MODEL-TASK-SEQ_LEN`."""
        return f"{self.label}-{self.task.name}-{self.seq_len}"

    def describe(self) -> dict[str, Any]:
        """Plain-JSON facts about the case, stored with its measurement."""
        return {
            "model": self.model,
            "family": self.family,
            "task": self.task.name,
            "generator": self.task.generator_name,
            "prompt": self.task.prompt_name,
            "seq_len": self.seq_len,
            "num_seqs": self.num_seqs,
            "seed": self.seed,
            "knobs": {k: repr(v) for k, v in self.task.knobs.items()},
            "form": self.task.form,
        }


def model_labels(model_ids: Sequence[str]) -> dict[str, str]:
    """Readable id labels: local paths become their folder name unless two models would share one."""
    labels: dict[str, str] = {}
    for model_id in model_ids:
        trimmed = model_id.rstrip("/\\") or model_id
        is_path = trimmed.startswith((".", "/", "~")) or os.path.isdir(trimmed)
        labels[model_id] = os.path.basename(trimmed) if is_path else trimmed
    if len(set(labels.values())) != len(labels):
        return {m: m for m in model_ids}
    return labels


#: The families of causal eval modules start with this (`FAMILY = "causal_range"`); they run after the rest
#: of a session (`debug.plugin.hooks.pytest_collection_modifyitems`) to read their twins' cached answers.
CAUSAL_FAMILY_PREFIX = "causal_"


def family_of(module: Any) -> str:
    """The eval family of a test module: its `FAMILY` attribute, else its name without `test_`."""
    explicit = getattr(module, "FAMILY", None)
    if explicit:
        return str(explicit)
    name = module.__name__.rsplit(".", 1)[-1]
    return name[5:] if name.startswith("test_") else name


def resolve_form(model: str, prompt_form: str = "auto") -> str:
    """The prompt form measured for `model`: `prompt_form`, or for "auto" "query" on `embedded:*` models
    (trained on it) and "instruction" on any other (see the module docstring for why).

    Raises:
        ValueError: For a `prompt_form` outside `PROMPT_FORMS`.
    """
    if prompt_form not in PROMPT_FORMS:
        raise ValueError(f"--prompt-form must be one of {', '.join(PROMPT_FORMS)}; got {prompt_form!r}")
    if prompt_form != "auto":
        return prompt_form
    return "query" if model.startswith(EMBEDDED_PREFIX) else "instruction"


def build_params(
    tasks: Sequence[Task],
    *,
    models: Sequence[str],
    seq_lens: Sequence[int] | None,
    num_seqs: int,
    seed: int,
    family: str,
    prompt_form: str = "auto",
) -> list[Any]:
    """`pytest.param`s for every (model, task, seq_len), grouped by model for xdist's `loadgroup`.

    A model gets only the tasks of its form (`resolve_form(model, prompt_form)`) and the form-less ones.
    """
    labels = model_labels(models)
    params = []
    for model in models:
        # One xdist group per model: under `--dist loadgroup` all its cases run on one worker, which loads
        # it once.
        mark = pytest.mark.xdist_group(name=f"debug-model-{labels[model]}")
        form = resolve_form(model, prompt_form)
        for task in tasks:
            if task.form not in (None, form):
                continue
            for seq_len in seq_lens or task.seq_lens:
                case = Case(model, labels[model], task, int(seq_len), num_seqs, seed, family)
                params.append(pytest.param(case, id=case.param_id, marks=mark))
    return params


def resolve_generator(generator: str | Callable[..., Any]) -> Callable[..., Any]:
    """Look a generator up in `debug.generators.GENERATORS` (callables pass through).

    Raises:
        ValueError: When the name is unknown; the message lists the known names.
    """
    if callable(generator):
        return generator
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[generator]


def resolve_prompt(prompt: str) -> str:
    """A literal template (contains `{code}`) or the name of a template in `debug.prompts`.

    Raises:
        ValueError: When the name is not a template of `debug.prompts`.
    """
    if "{code}" in prompt:
        return prompt
    template = getattr(prompts, prompt, None)
    if not isinstance(template, str) or "{code}" not in template:
        known = sorted(n for n, v in vars(prompts).items() if isinstance(v, str) and "{code}" in v)
        raise ValueError(f"unknown prompt {prompt!r}; debug.prompts has: {', '.join(known)}")
    return template
