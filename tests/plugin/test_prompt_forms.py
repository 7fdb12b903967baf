"""Prompt forms: every family has a query task and an instruction task; `--prompt-form` picks per model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from debug.generators import GENERATORS
from debug.plugin import Task
from debug.plugin.cases import build_params, resolve_form, resolve_generator
from debug.programs import generate_programs

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
FORMED = ["boolean_logic", "exception_handling", "integer_tracking", "range_tracking"]


def _tasks(family: str) -> list[Task]:
    path = ROOT / "evals" / f"test_{family}.py"
    spec = importlib.util.spec_from_file_location(f"evals_forms_{family}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TASKS


@pytest.mark.parametrize("family", FORMED)
def test_every_instruction_task_has_a_query_twin_on_the_same_generator(family):
    tasks = _tasks(family)
    query = {t.generator_name: t for t in tasks if t.form == "query"}
    instruction = {t.generator_name: t for t in tasks if t.form == "instruction"}
    assert query and set(query) == set(instruction) and len(query) + len(instruction) == len(tasks)
    for name, task in query.items():
        assert task.prompt == "{code}" and task.knobs == {**instruction[name].knobs, "query": True}
        assert task.seq_lens == instruction[name].seq_lens
        for program in generate_programs(
            resolve_generator(task.generator), task.seq_lens[0], 5, **task.knobs
        ):
            assert program.text.endswith(f"\n#{program.metadata['answer_var']}:")


def test_binding_has_one_task_in_every_form_and_it_is_the_query_form():
    [task] = _tasks("variable_binding")
    assert task.form is None
    program = generate_programs(GENERATORS[task.generator], 8, 1)[0]
    assert program.text.endswith(f"\n#{program.metadata['answer_var']}:")


def _picked(prompt_form: str, models=("embedded:binder", "Qwen/Qwen3-0.6B")) -> dict[str, list[str]]:
    tasks = _tasks("range_tracking") + _tasks("variable_binding")
    params = build_params(
        tasks, models=models, seq_lens=(3,), num_seqs=1, seed=0, family="f", prompt_form=prompt_form
    )
    picked: dict[str, list[str]] = {m: [] for m in models}
    for param in params:
        [case] = param.values
        picked[case.model].append(case.task.name)
    return picked


def test_auto_measures_embedded_models_in_query_form_and_others_in_instruction_form():
    assert resolve_form("embedded:binder") == "query" and resolve_form("Qwen/Qwen3-0.6B") == "instruction"
    assert _picked("auto") == {
        "embedded:binder": ["RANGE_TRACKING_QUERY", "RANGE_LINES_QUERY", "VARIABLE_BINDING"],
        "Qwen/Qwen3-0.6B": ["RANGE_TRACKING", "RANGE_LINES", "VARIABLE_BINDING"],
    }


@pytest.mark.parametrize("form", ["query", "instruction"])
def test_a_forced_form_measures_every_model_on_the_same_tasks(form):
    picked = _picked(form)
    assert picked["embedded:binder"] == picked["Qwen/Qwen3-0.6B"]
    suffix = "_QUERY" if form == "query" else ""
    assert picked["embedded:binder"] == [
        f"RANGE_TRACKING{suffix}",
        f"RANGE_LINES{suffix}",
        "VARIABLE_BINDING",
    ]


def test_bad_forms_and_a_generator_without_a_query_form_are_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r"^--prompt-form must be one of auto, query, instruction; got 'raw'$"
    ):
        resolve_form("embedded:binder", "raw")
    with pytest.raises(ValueError, match=r"^Task 'T': form must be one of"):
        Task("T", generator="make_range_program", prompt="{code}", form="raw")

    def make_count(seq_len, rng):
        return "n = 0", 0

    with pytest.raises(ValueError, match=r"^Task 'T': generator make_count has no query form") as info:
        Task("T", generator=make_count, prompt="{code}", knobs={"query": True}, form="query")
    assert "\n" not in str(info.value)
    Task("T", generator=make_count, prompt="{code}", form="query")  # no query knob: nothing to refuse


def test_prompt_form_option_selects_tasks_at_collection(pytester: pytest.Pytester):
    args = [str(ROOT / "evals"), "--collect-only", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}"]
    default = pytester.runpytest(*args, "-k", "range_tracking and 4")
    default.stdout.fnmatch_lines(
        [
            "*test_range_tracking[[]embedded:binder-RANGE_TRACKING_QUERY-4[]]",
            "*test_range_tracking[[]embedded:binder-RANGE_LINES_QUERY-4[]]",
            "2/* tests collected*",
        ]
    )
    worded = pytester.runpytest(*args, "-k", "range_tracking and 4", "--prompt-form", "instruction")
    worded.stdout.fnmatch_lines(
        [
            "*test_range_tracking[[]embedded:binder-RANGE_TRACKING-4[]]",
            "*test_range_tracking[[]embedded:binder-RANGE_LINES-4[]]",
            "2/* tests collected*",
        ]
    )
    hub = pytester.runpytest(*args, "-k", "exception", "--model", "m1", "--prompt-form", "query")
    hub.stdout.fnmatch_lines(
        ["*test_exception_handling[[]m1-EXCEPTION_HANDLING_QUERY-1[]]", "3/* tests collected*"]
    )
    bad = pytester.runpytest(*args, "--prompt-form", "raw")
    assert bad.ret != 0
    bad.stderr.fnmatch_lines(["*--prompt-form: invalid choice: 'raw'*"])
