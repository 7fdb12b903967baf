"""ExperimentConfig / quick_experiment: the seed's calls work, bad settings are refused when built."""

from __future__ import annotations

import re

import pytest

import debug
from debug import generators, prompts
from debug.config import ExperimentConfig
from debug.core import parse_boolean, parse_integer, quick_experiment


def my_generator(seq_len, rng):
    program = f"x = 0\nfor i in range({seq_len}):\n    x += 2"
    return program, seq_len * 2, {"operation": "addition", "increment": 2}


def test_seed_readme_calls():
    config = quick_experiment(
        name="range_tracking",
        prompt_template=prompts.RANGE_TRACKING,
        program_generator=generators.make_range_program,
        models=["some/model"],
        num_seqs=10,
        seq_lens=[2, 3, 4, 5, 6],
    )
    assert config.models == ["some/model"] and config.seq_lens == [2, 3, 4, 5, 6]
    default = quick_experiment("my_test", prompts.MINIMAL, my_generator)
    assert default.models == [debug.DEFAULT_MODEL]
    assert default.num_seqs > 0 and default.seq_lens and default.parser is None


def test_programs_are_deterministic_and_sized():
    config = quick_experiment(
        "b", prompts.VARIABLE_BINDING, generators.make_variable_binding_program, num_seqs=4
    )
    first = config.programs(8)
    assert len(first) == 4 and first == config.programs(8)
    assert config.programs(8) != quick_experiment(
        "b", prompts.VARIABLE_BINDING, generators.make_variable_binding_program, num_seqs=4, base_seed=1
    ).programs(8)


def test_generator_kwargs_reach_the_generator():
    config = quick_experiment(
        "hops",
        prompts.VARIABLE_BINDING,
        generators.make_variable_binding_program,
        seq_lens=[6, 9],
        generator_kwargs={"num_hops": 3},
    )
    assert {p.metadata["hops"] for p in config.programs(6)} == {3}


def test_parser_defaults_by_answer_type_and_can_be_overridden():
    config = quick_experiment("x", prompts.MINIMAL, my_generator)
    assert config.parser_for(True) is parse_boolean and config.parser_for(4) is parse_integer
    custom = quick_experiment("x", prompts.MINIMAL, my_generator, parser=str.strip)
    assert custom.parser_for(4) is str.strip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_template": "no placeholder"}, "{code}"),
        ({"seq_lens": []}, "seq_lens must be a non-empty list"),
        ({"seq_lens": [2, 0]}, "seq_lens must be positive integers"),
        ({"seq_lens": [-1]}, "seq_lens must be positive integers"),
        ({"num_seqs": 0}, "num_seqs must be a positive integer"),
        ({"num_seqs": -3}, "num_seqs must be a positive integer"),
        ({"models": []}, "models must be a non-empty list"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_settings_are_refused_when_built(kwargs, message):
    settings = {"name": "t", "prompt_template": prompts.MINIMAL, "program_generator": my_generator, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        quick_experiment(**settings)


def test_length_the_generator_cannot_honour_is_refused_with_its_range():
    with pytest.raises(ValueError, match=re.escape("1 <= seq_len <= 26")):
        quick_experiment(
            "b",
            prompts.VARIABLE_BINDING,
            generators.make_variable_binding_program,
            seq_lens=[4, 30],
            generator_kwargs={"style": "spaced"},
        )


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="num_seq"):
        quick_experiment("x", prompts.MINIMAL, my_generator, num_seq=3)


def test_to_dict_names_the_generator():
    config = ExperimentConfig("x", prompts.MINIMAL, my_generator)
    assert config.to_dict()["program_generator"] == "my_generator"


def test_numpy_integers_are_accepted():
    import numpy as np

    config = quick_experiment(
        "x", prompts.MINIMAL, my_generator, num_seqs=np.int64(3), seq_lens=np.array([2, 4])
    )
    assert config.num_seqs == 3 and config.seq_lens == [2, 4]


def test_a_generator_that_crashes_is_reported_when_built():
    def broken(seq_len, rng):
        return rng.no_such_method()

    with pytest.raises(ValueError, match=r"seq_len 2: generator broken failed .*AttributeError"):
        quick_experiment("x", prompts.MINIMAL, broken, seq_lens=[2])
