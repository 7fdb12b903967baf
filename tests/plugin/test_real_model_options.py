"""Plugin options for users' real models: chat templates, devices, memory budgets, served concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_model import save_chat_binder

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from debug import models
from debug.plugin.options import describe_options, resolve_options

pytest_plugins = ["pytester"]

EVAL = """
from debug.plugin import Task

TASKS = [Task("VARIABLE_BINDING", generator="make_variable_binding_program", prompt="VARIABLE_BINDING",
              seq_lens=(6,))]


def test_variable_binding(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
"""


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_chat_binder(tmp_path_factory.mktemp("chat-binder"))
    # Loaded out here first: pytester forgets modules an inner run imports (transformers' Qwen3 classes).
    models.load(str(folder), device="cpu")
    return folder


@pytest.fixture(autouse=True)
def _cache_in_the_test_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEBUG_CACHE_DIR", raising=False)


def test_defaults_and_parsed_values(pytester: pytest.Pytester) -> None:
    options = resolve_options(pytester.parseconfig())
    assert options.max_concurrency == 8 and options.chat_template is False
    assert options.chat_template_kwargs is None and options.devices is None and options.max_memory is None
    options = resolve_options(
        pytester.parseconfig(
            "--chat-template",
            '--chat-template-kwargs={"enable_thinking": false}',
            "--max-memory=0=20GiB,1=20GiB",
            "--max-concurrency=32",
        )
    )
    assert options.chat_template_kwargs == {"enable_thinking": False}
    assert options.max_memory == {0: "20GiB", 1: "20GiB"} and options.max_concurrency == 32
    described = describe_options(options)
    assert described["max_memory"] == {"0": "20GiB", "1": "20GiB"} and described["chat_template"] is True
    json.dumps(described)
    assert resolve_options(pytester.parseconfig("--devices=cuda:0,cuda:1")).devices == ("cuda:0", "cuda:1")


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["--chat-template", "--chat-template-kwargs={oops"], "--chat-template-kwargs takes a JSON object"),
        (["--chat-template", "--chat-template-kwargs=[1]"], "--chat-template-kwargs takes a JSON object"),
        (['--chat-template-kwargs={"a": 1}'], "--chat-template-kwargs needs --chat-template"),
        (["--devices=gpu0"], "--devices takes comma-separated devices"),
        (["--max-memory=20GiB"], "--max-memory takes DEVICE=SIZE pairs"),
        (["--devices=cuda:0", "--max-memory=0=2GiB"], "--devices puts each worker's models on one device"),
        (["--max-concurrency=0"], "--max-concurrency takes a positive integer in [1, 1024]"),
    ],
)
def test_bad_values_are_refused_in_one_line(pytester: pytest.Pytester, args: list[str], refusal: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        resolve_options(pytester.parseconfig(*args))
    assert str(info.value).startswith(refusal) and "\n" not in str(info.value)


def test_a_chat_template_run_records_the_rendered_prompt_and_the_device(
    pytester: pytest.Pytester, chat_folder: Path
) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    result = pytester.runpytest(
        "--model",
        str(chat_folder),
        "--num-seqs",
        "3",
        "--prompt-form",
        "query",
        "--devices",
        "cpu",
        "--chat-template",
        '--chat-template-kwargs={"enable_thinking": false}',
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    )
    result.assert_outcomes(passed=1)
    latest = pytester.path / "reports" / "latest"
    results = json.loads((latest / "results.json").read_text())
    case = results["cases"][0]
    assert case["info"]["device"] == "cpu"
    assert case["info"]["chat_template"] is True
    assert case["info"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert results["run"]["options"]["chat_template_kwargs"] == {"enable_thinking": False}
    samples = [json.loads(line) for line in (latest / "samples.jsonl").read_text().splitlines()]
    assert all(s["prompt"] == "#no thinking\n" + s["program"] for s in samples)


def test_a_model_without_a_template_errors_its_cases_in_one_line(
    pytester: pytest.Pytester, chat_folder: Path
) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    result = pytester.runpytest(
        "--model",
        "embedded:binder-4l",
        "--num-seqs",
        "2",
        "--chat-template",
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ChatTemplateError*'embedded:binder-4l' has no chat template*"])
