"""`debug patch` and `debug seeds`: bounded numeric flags, defaults in --help, context checks before work."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import debug.causal.pairs as pairs
import debug.causal.runner as runner
from debug.causal.cli import BoundedInt, build_patch_parser, build_seeds_parser, main_patch, main_seeds
from debug.cli import main as debug_main

PARSERS = {"debug patch": build_patch_parser, "debug seeds": build_seeds_parser}
HUGE = 10**13


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _numeric(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in _options(parser) if isinstance(a.default, int) or isinstance(a.type, BoundedInt)]


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_numeric_option_is_bounded(prog: str) -> None:
    numeric = _numeric(PARSERS[prog]())
    assert numeric, "the walk below would check nothing"
    for action in numeric:
        assert isinstance(action.type, BoundedInt), f"{prog} {action.option_strings[0]} takes any integer"


@pytest.mark.parametrize("prog", sorted(PARSERS))
@pytest.mark.parametrize("value", [0, -1, HUGE], ids=["zero", "minus-one", "huge"])
def test_out_of_range_values_are_refused_in_one_line(prog: str, value: int, capsys) -> None:
    for action in _numeric(PARSERS[prog]()):
        flag, bounds = action.option_strings[0], action.type
        if bounds.low <= value <= bounds.high:
            assert getattr(PARSERS[prog]().parse_args([flag, str(value)]), action.dest) == value
            continue
        with pytest.raises(SystemExit) as refused:
            PARSERS[prog]().parse_args([flag, str(value)])
        err = capsys.readouterr().err
        assert refused.value.code == 2
        assert err.count("\n") == 1, err  # one line, no usage block
        assert flag in err and f"{bounds.low}..{bounds.high}" in err and str(value) in err


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_help_shows_every_default(prog: str) -> None:
    text = PARSERS[prog]().format_help()
    assert text.count("(default:") == len(_options(PARSERS[prog]()))


def test_non_integers_and_bad_seed_ranges_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        build_seeds_parser().parse_args(["--count", "two"])
    assert "--count: must be an integer in 1..10000; got 'two'" in capsys.readouterr().err
    # Both in range alone, together past the last numpy seed: refused before the model loads.
    assert main_seeds(["--model", "embedded:nothing", "--start", str(2**32 - 5), "--max-seeds", "10"]) == 2
    assert "passes the last seed 4294967295" in capsys.readouterr().err


def test_the_debug_command_dispatches_to_both(capsys) -> None:
    for command in ("patch", "seeds"):
        with pytest.raises(SystemExit) as done:
            debug_main([command, "--help"])
        assert done.value.code == 0 and f"usage: debug {command}" in capsys.readouterr().out


def _lines(err: str, prog: str) -> list[str]:
    # Loading a model may draw a progress bar on stderr too; the command's own lines start with its name.
    return [line for line in err.splitlines() if line.startswith(prog)]


def _no_counterfactual(*_, **__):
    raise AssertionError("a counterfactual was built for a program that does not fit the context")


def test_patch_refuses_a_program_longer_than_the_context_at_once(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(pairs, "create_counterfactual_program", _no_counterfactual)
    monkeypatch.setattr(runner, "sweep_pairs", _no_counterfactual)
    assert main_patch(["--seq-len", "200", "--results-dir", str(tmp_path)]) == 2
    (err,) = _lines(capsys.readouterr().err, "debug patch")
    # 200 lines of 4 characters + "#q:" = 803 tokens under the char tokenizer; the binder takes 512.
    assert "803 tokens" in err and "at most 512" in err and "embedded:binder" in err
    # A huge program is generated and tokenized once (about a second), then refused: no counterfactual.
    assert main_patch(["--seq-len", "100000", "--results-dir", str(tmp_path)]) == 2
    assert "400003 tokens" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_seeds_refuses_a_program_longer_than_the_context(monkeypatch, capsys) -> None:
    monkeypatch.setattr(pairs, "create_counterfactual_program", _no_counterfactual)
    monkeypatch.setattr(pairs, "teacher_forced_correct", _no_counterfactual)
    assert main_seeds(["--seq-len", "200"]) == 2
    (err,) = _lines(capsys.readouterr().err, "debug seeds")
    assert "804 tokens" in err and "at most 512" in err  # the program and its answer digit


@pytest.mark.filterwarnings("error::debug.causal.result.UnsolvedPairWarning")
def test_patch_prints_one_warning_line_for_a_pair_the_model_gets_wrong(
    tiny_gpt2_dir: Path, tmp_path: Path, capsys
) -> None:
    # An untrained model answers neither run right: the sweep runs, and says so once, in one line.
    argv = [
        "--model",
        str(tiny_gpt2_dir),
        "--seq-len",
        "3",
        "--num-hops",
        "1",
        "--results-dir",
        str(tmp_path),
    ]
    assert main_patch(argv) == 0
    (err,) = _lines(capsys.readouterr().err, "debug patch")
    assert err.startswith("debug patch: warning: ") and "wrong" in err
    saved = next(tmp_path.iterdir()) / "intervention_results.json"
    assert '"original_correct": false' in saved.read_text()
