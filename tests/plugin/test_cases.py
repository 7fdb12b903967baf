"""The shipped eval suite (evals/): every task resolves, ids read well, -k selects, collection is cheap."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from debug.plugin import Task
from debug.plugin.cases import model_labels, resolve_generator, resolve_prompt

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
EVAL_MODULES = sorted((ROOT / "evals").glob("test_*.py"))
FAMILIES = ["boolean_logic", "exception_handling", "integer_tracking", "range_tracking", "variable_binding"]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"evals_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_module_per_family() -> None:
    assert [p.stem[5:] for p in EVAL_MODULES if p.stem[5:] in FAMILIES] == FAMILIES


@pytest.mark.parametrize("path", EVAL_MODULES, ids=lambda p: p.stem)
def test_every_task_names_a_real_generator_and_prompt(path: Path) -> None:
    module = _load(path)
    assert module.TASKS and all(isinstance(t, Task) for t in module.TASKS)
    for task in module.TASKS:
        generator = resolve_generator(task.generator)
        template = resolve_prompt(task.prompt)
        assert "{code}" in template
        from debug.programs import generate_programs

        for seq_len in task.seq_lens:
            programs = generate_programs(generator, seq_len, 2, **task.knobs)
            assert len(programs) == 2 and programs[0].text


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown generator 'nope'; known: .*make_variable_binding_program"):
        resolve_generator("nope")
    with pytest.raises(ValueError, match="unknown prompt 'NOPE'; debug.prompts has: .*VARIABLE_BINDING"):
        resolve_prompt("NOPE")


def test_model_labels_shorten_paths_unless_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "a" / "m").mkdir(parents=True)
    (tmp_path / "b" / "m").mkdir(parents=True)
    labels = model_labels(["embedded:binder", str(tmp_path / "a" / "m"), "Qwen/Qwen3-0.6B"])
    assert list(labels.values()) == ["embedded:binder", "m", "Qwen/Qwen3-0.6B"]
    clash = [str(tmp_path / "a" / "m"), str(tmp_path / "b" / "m")]
    assert model_labels(clash) == {m: m for m in clash}


def test_real_eval_ids_and_k_selection(pytester: pytest.Pytester) -> None:
    args = [str(ROOT / "evals"), "--collect-only", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}"]
    everything = pytester.runpytest(*args)
    everything.stdout.fnmatch_lines(["*test_variable_binding[[]embedded:binder-VARIABLE_BINDING-16[]]"])
    picked = pytester.runpytest(*args, "-k", "variable_binding and 16")
    picked.stdout.fnmatch_lines(
        [
            "*test_variable_binding.py::test_variable_binding[[]embedded:binder-VARIABLE_BINDING-16[]]",
            "1/* tests collected*",
        ]
    )
    # "binding" names two families: behavioural variable binding and the causal binding evals (4 hop counts),
    # which run after it so they read its answers from the answer cache.
    both = pytester.runpytest(*args, "-k", "binding and 16")
    both.stdout.fnmatch_lines(
        [
            "*test_variable_binding[[]embedded:binder-VARIABLE_BINDING-16[]]",
            "*test_causal_binding[[]embedded:binder-hops1-16[]]",
            "5/* tests collected*",
        ]
    )
    every = [line for line in everything.stdout.lines if "::" in line]
    causal = [i for i, line in enumerate(every) if "test_causal_" in line]
    assert causal and causal == list(range(len(every) - len(causal), len(every)))  # the causal cases last
    ranged = pytester.runpytest(
        *args, "-k", "range_tracking", "--model", "m1", "--model", "m2", "--seq-lens", "3"
    )
    ranged.stdout.fnmatch_lines(
        [
            "*test_range_tracking[[]m1-RANGE_TRACKING-3[]]",
            "*test_range_tracking[[]m2-RANGE_LINES-3[]]",
            "4/* tests collected*",
        ]
    )


def test_a_shipped_causal_module_measures_with_the_runs_num_seqs_and_remote(
    pytester: pytest.Pytester,
) -> None:
    import json

    pytester.makepyfile(test_causal_range=(ROOT / "evals" / "test_causal_range.py").read_text())
    args = ["--model", "embedded:binder-4l", "--num-seqs", "2", "--remote", "local", "-p", "no:cacheprovider"]
    # A subprocess: an in-process inner run would import torch's and nnsight's extensions for the first time,
    # and pytester would forget them after it (a second import of them fails).
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    (case,) = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())["cases"]
    assert (
        case["family"] == "causal_range"
        and case["info"]["program_family"] == "range"
        and case["metrics"]["swept_pairs"]["n"] == 2
    )
    # --num-seqs given: every measured pair is patched; the pictures are attached (SVG).
    assert case["metrics"]["swept_pairs"]["k"] >= 1 and {i["name"] for i in case["images"]} >= {
        "layer x token"
    }
    assert set(case["info"]["seconds"]) >= {"answers", "exact sweep", "attribution map and pictures"}
