"""Chat templates: prompts rendered through the tokenizer's own template, hashed and cached as rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
from chat_model import save_chat_binder

from debug import models, prompts
from debug.cache import AnswerCache
from debug.chat import ChatTemplateError, check_chat_template_kwargs, render_chat
from debug.config import quick_experiment
from debug.generators import make_variable_binding_program
from debug.programs import generate_programs, text_hash
from debug.runner import ExperimentRunner
from debug.scoring import score_programs

NO_THINKING = {"enable_thinking": False}


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_chat_binder(tmp_path_factory.mktemp("chat-binder"))


@pytest.fixture(scope="module")
def programs() -> list:
    return generate_programs(make_variable_binding_program, 8, 6, base_seed=3)


def test_kwargs_are_a_json_object() -> None:
    assert check_chat_template_kwargs(None) is None
    assert check_chat_template_kwargs('{"enable_thinking": false}') == NO_THINKING
    assert check_chat_template_kwargs({"a": [1, "x"]}) == {"a": [1, "x"]}
    for bad in ("{not json", "[1, 2]", '"text"', {1: True}, {"x": object()}):
        with pytest.raises(ChatTemplateError, match="--chat-template-kwargs takes a JSON object") as info:
            check_chat_template_kwargs(bad, "--chat-template-kwargs")
        assert "\n" not in str(info.value)


def test_a_model_without_a_template_is_refused_in_one_line(programs: list) -> None:
    loaded = models.load("embedded:binder-4l", device="cpu")
    with pytest.raises(ChatTemplateError, match="has no chat template") as info:
        score_programs(loaded, programs, prompts.VARIABLE_BINDING, chat_template=True)
    assert "\n" not in str(info.value) and "embedded:binder-4l" in str(info.value)


def test_the_rendered_prompt_is_scored_hashed_and_cached(
    chat_dir: Path, programs: list, tmp_path: Path
) -> None:
    loaded = models.load(str(chat_dir), device="cpu")
    cache = AnswerCache(tmp_path / "cache")
    plain = score_programs(loaded, programs, prompts.VARIABLE_BINDING, cache=cache)
    chat = score_programs(loaded, programs, prompts.VARIABLE_BINDING, chat_template=True, cache=cache)
    # This template renders the message unchanged, so the model sees the same text and answers the same ...
    assert [s.prompt for s in chat] == [p.text for p in programs]
    assert [s.raw_output for s in chat] == [s.raw_output for s in plain]
    assert [s.answer_logprob for s in chat] == pytest.approx([s.answer_logprob for s in plain])
    # ... but a chat answer is cached under its own settings, never served from the plain run's entry.
    assert not any(s.cached for s in chat)
    thinking_off = score_programs(
        loaded,
        programs,
        prompts.VARIABLE_BINDING,
        chat_template=True,
        chat_template_kwargs=NO_THINKING,
        cache=cache,
    )
    for sample, program in zip(thinking_off, programs):
        assert sample.prompt == "#no thinking\n" + program.text
        assert sample.prompt == render_chat(loaded.tokenizer, program.text, NO_THINKING)
        assert sample.prompt_hash == text_hash(sample.prompt)
    again = score_programs(
        loaded,
        programs,
        prompts.VARIABLE_BINDING,
        chat_template=True,
        chat_template_kwargs=NO_THINKING,
        cache=cache,
    )
    assert all(s.cached for s in again)
    assert [s.raw_output for s in again] == [s.raw_output for s in thinking_off]


def test_python_api_takes_the_chat_template(chat_dir: Path, tmp_path: Path) -> None:
    config = quick_experiment(
        "chat",
        prompts.VARIABLE_BINDING,
        make_variable_binding_program,
        models=[str(chat_dir)],
        num_seqs=3,
        seq_lens=[6],
        chat_template=True,
        chat_template_kwargs=NO_THINKING,
    )
    assert config.to_dict()["chat_template_kwargs"] == NO_THINKING
    runner = ExperimentRunner(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    result = runner.run(config, save=False)
    assert all(r["prompt"].startswith("#no thinking\n") for r in result["results"])


def test_python_api_refuses_bad_chat_settings() -> None:
    common = ("chat", prompts.VARIABLE_BINDING, make_variable_binding_program)
    with pytest.raises(ValueError, match="chat_template_kwargs needs chat_template=True"):
        quick_experiment(*common, chat_template_kwargs=NO_THINKING)
    with pytest.raises(ValueError, match="chat_template_kwargs takes a JSON object"):
        quick_experiment(*common, chat_template=True, chat_template_kwargs="{oops")
    with pytest.raises(ValueError, match="chat_template must be True or False"):
        quick_experiment(*common, chat_template="yes")
