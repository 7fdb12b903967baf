"""Tests for debug.train.cli: bounded options, where a run saves, what it refuses to replace, resuming."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import torch

from debug import models
from debug.models import EMBEDDED, EMBEDDED_DIR
from debug.train import PRESETS, train
from debug.train.cli import (
    main_report,
    main_train,
    prepare_train,
    report_parser,
    resolve_outputs,
    run_name,
    train_parser,
)

TINY = PRESETS["tiny"]
PARSERS = {"debug train": train_parser, "debug train-report": report_parser}


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _numeric(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.type in (int, float) or hasattr(a.type, "range")]


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_numeric_option_is_bounded(
    prog: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = PARSERS[prog]()
    numeric = _numeric(parser)
    assert len(numeric) >= (15 if prog == "debug train" else 3)
    for action in numeric:
        assert hasattr(action.type, "range"), f"{action.option_strings[0]} takes a number without bounds"
        option = action.option_strings[0]
        for value in ("0", "-1", str(10**12), "nan", "inf"):
            try:
                parsed = parser.parse_args([option, value])
            except SystemExit as err:
                assert err.code == 2
                lines = capsys.readouterr().err.strip().splitlines()
                assert f"argument {option}: must be " in lines[-1] and value in lines[-1]
                assert not action.type.range.contains(float(value))
                continue
            assert action.type.range.contains(float(value)), f"{option} {value} was accepted"
            assert getattr(parsed, action.dest) == float(value)
            if prog == "debug train":
                _accepted_or_refused_in_one_line([option, value], tmp_path)


def _accepted_or_refused_in_one_line(args: list[str], tmp_path: Path) -> None:
    # In range for the option: the checks before any work either pass or refuse in one line naming a flag.
    try:
        prepare_train(["--preset", "tiny", "--out-dir", str(tmp_path / "never"), *args])
    except SystemExit as err:
        message = str(err.code)
        assert message.startswith("debug train: ") and "\n" not in message and "--" in message, message
    assert not (tmp_path / "never").exists()  # the checks write nothing


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--steps", "-5"], "argument --steps: must be an integer from 0 to"),
        (["--batch-size", "0"], "argument --batch-size: must be an integer from 1 to 65536; got 0"),
        (["--lr", "0"], "argument --lr: must be a number > 0 and <= 1; got 0"),
        (["--data-workers", "-1"], "argument --data-workers: must be an integer from 0 to 256"),
        (["--steps", "many"], "argument --steps: must be an integer from 0 to"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setattr("debug.train.cli.train", _never)
    with pytest.raises(SystemExit) as exit_info:
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_counts_are_refused_before_any_work(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr("debug.train.cli.training_report", _never)
    with pytest.raises(SystemExit) as exit_info:
        main_report(["--per-hop", "0"])
    assert exit_info.value.code == 2
    assert "argument --per-hop: must be an integer from 1 to 100000; got 0" in capsys.readouterr().err


def test_cross_field_checks_name_the_flags(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"hidden \(--hidden\) must be a multiple of heads \(3\); got 32$"):
        prepare_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--heads", "3"])
    with pytest.raises(SystemExit, match=r"checkpoint \(--checkpoint STEP:NAME\) step must be 1 to"):
        prepare_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--checkpoint", "0:early"])
    with pytest.raises(SystemExit, match=r"name \(--name\) must be one folder name"):
        prepare_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--name", "../escape"])


def _never(*args, **kwargs):
    raise AssertionError("work started")


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_shows_its_default_in_help(prog: str) -> None:
    for action in PARSERS[prog]()._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and "default" in action.help, action.dest


def test_cli_trains_tiny_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--preset", "tiny", "--out-dir", str(tmp_path), "--name", "cli-tiny"]
    assert main_train([*args, "--steps", "3", "--checkpoint", "2:cli-early"]) == 0
    assert (tmp_path / "cli-tiny" / "model.safetensors").is_file()
    assert (tmp_path / "cli-early" / "model.safetensors").is_file()
    assert '"saved"' in capsys.readouterr().out


def test_cli_rejects_bad_checkpoint_spec(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="STEP:NAME"):
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--checkpoint", "early"])


def test_without_out_dir_a_run_saves_under_runs_and_never_into_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = _snapshot(EMBEDDED_DIR)
    assert main_train(["--preset", "tiny", "--steps", "2"]) == 0
    assert (tmp_path / "runs" / "tiny" / "tiny" / "model.safetensors").is_file()
    assert _snapshot(EMBEDDED_DIR) == before


def test_ship_targets_the_package_and_refuses_to_replace_a_shipped_model(monkeypatch) -> None:
    if "embedded:binder-4l" not in EMBEDDED:
        pytest.skip("embedded models not trained yet")
    monkeypatch.setattr("debug.train.cli.train", _never)
    args = train_parser().parse_args(["--ship"])
    assert run_name(args) == "binder-4l"  # a preset's name is its ship name
    assert resolve_outputs(args, PRESETS["default"])[0] == EMBEDDED_DIR
    with pytest.raises(SystemExit, match="embedded/binder-early exists; pass --overwrite"):
        main_train(["--ship"])


def test_the_saved_name_follows_the_run_not_the_preset(tmp_path: Path) -> None:
    grown = ["--start-from", "embedded:binder-4l", "--layers", "6"]
    config, _, out_dir, _ = prepare_train([*grown, "--out-dir", str(tmp_path / "out" / "m")])
    assert config.name == "m" and out_dir == tmp_path / "out" / "m" and config.layers == 6
    config, *_ = prepare_train([*grown, "--out-dir", str(tmp_path / "out" / "m"), "--name", "six"])
    assert config.name == "six"
    assert run_name(train_parser().parse_args(grown)) == "default"  # never the ship name binder-4l


def test_an_existing_model_folder_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "m" / "m").mkdir(parents=True)
    monkeypatch.setattr("debug.train.cli.train", _never)
    with pytest.raises(SystemExit, match=r"m/m exists; pass --overwrite to replace it"):
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path / "m")])
    config, *_ = prepare_train(["--preset", "tiny", "--out-dir", str(tmp_path / "m"), "--overwrite"])
    assert config.name == "m"


def test_a_new_run_refuses_a_run_folder_that_holds_one(tmp_path: Path) -> None:
    common = ["--preset", "tiny", "--out-dir", str(tmp_path / "a"), "--save-every", "4", "--stop-after", "4"]
    assert main_train(common) == 0
    with pytest.raises(SystemExit, match=r"holds a run already; continue it with --resume"):
        main_train([*common, "--name", "other"])


def test_cli_resumes_a_run_cut_by_stop_after(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--out-dir", str(tmp_path)]
    first = [
        "--preset",
        "tiny",
        "--name",
        "tiny",
        "--stop-after",
        "7",
        "--save-every",
        "5",
        "--run-dir",
        str(run),
    ]
    assert main_train([*first, *common]) == 0
    assert (run / "LATEST").read_text() == "step-0000007"
    with pytest.raises(SystemExit, match="drop --lr"):
        main_train(["--resume", str(run), "--lr", "0.1", *common])
    # A resumed sitting may add a named copy at a step still ahead: it does not change the weights.
    assert (
        main_train(["--resume", str(run), "--data-workers", "1", "--checkpoint", "9:tiny-mid", *common]) == 0
    )
    resumed = _weights(models.load(str(tmp_path / "tiny")).model)
    full = _weights(train(TINY, log=lambda _: None).model)
    assert all(torch.equal(resumed[k], full[k]) for k in full)
    assert "Steps: 12 of 12" in (tmp_path / "tiny" / "MODEL_CARD.md").read_text()
    mid = _weights(models.load(str(tmp_path / "tiny-mid")).model)
    stopped = _weights(train(dataclasses.replace(TINY, stop_after=9), log=lambda _: None).model)
    assert all(torch.equal(mid[k], stopped[k]) for k in stopped)
    assert "--checkpoint 9:tiny-mid" in (tmp_path / "tiny" / "MODEL_CARD.md").read_text()
    models.unload(str(tmp_path / "tiny"))
    models.unload(str(tmp_path / "tiny-mid"))


def test_a_resumed_run_saves_where_its_run_folder_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = _snapshot(EMBEDDED_DIR)
    out = tmp_path / "a" / "tiny-run"
    assert (
        main_train(["--preset", "tiny", "--out-dir", str(out), "--save-every", "5", "--stop-after", "5"]) == 0
    )
    assert (out / "LATEST").is_file()  # the run folder defaults to the out-dir
    assert main_train(["--resume", str(out)]) == 0  # no --out-dir: the run folder's own record
    record = json.loads((out / "tiny-run" / "training_history.json").read_text())
    assert record["step"] == TINY.steps
    assert _snapshot(EMBEDDED_DIR) == before


def test_a_run_that_ships_is_resumed_only_with_ship(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("debug.train.cli.train", _never)
    run = tmp_path / "run"
    (run / "step-0000004").mkdir(parents=True)
    (run / "step-0000004" / "trainer.json").write_text("{}")
    (run / "LATEST").write_text("step-0000004")
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(TINY)))
    (run / "output.json").write_text(json.dumps({"out_dir": str(EMBEDDED_DIR)}))
    with pytest.raises(SystemExit, match="saves into the installed package.*resume it with --ship"):
        main_train(["--resume", str(run)])


@pytest.mark.parametrize("model_id", sorted(EMBEDDED))
def test_shipped_cards_reproduce_into_runs_not_the_package(
    model_id: str, tmp_path: Path, monkeypatch
) -> None:
    card = (EMBEDDED[model_id] / "MODEL_CARD.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("- Reproduce: `"))
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["debug", "train"] and "--ship" not in command
    monkeypatch.chdir(tmp_path)
    args = train_parser().parse_args(command[2:])
    config = PRESETS[args.preset]
    out_dir, _ = resolve_outputs(args, dataclasses.replace(config, name=run_name(args)))
    assert not out_dir.resolve().is_relative_to(EMBEDDED_DIR.resolve())
    record = json.loads((EMBEDDED[model_id] / "training_history.json").read_text())
    assert run_name(args) == record["config"]["name"]  # the replay saves under the recorded run's name
