"""Tests for debug.train.checkpoint: resume state in safetensors + JSON, read back exactly, not unpickled."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from pathlib import Path

import pytest
import torch

from debug.train import PRESETS, train
from debug.train.checkpoint import (
    LEGACY_FILE,
    STATE_FILE,
    TENSORS_FILE,
    WEIGHTS_FILE,
    _decode,
    _encode,
    load_resume_state,
)
from debug.train.cli import main_train

TINY = dataclasses.replace(PRESETS["tiny"], log_every=1)


class _Planted:
    """Unpickling this opens (creates) `marker`: proof that a loader ran code from a file it read."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    torch.save(_Planted(marker), path)  # the format `trainer.pt` had: a zip holding a pickle


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_planted_pickle_runs_code_when_unpickled(tmp_path: Path) -> None:
    # The control: the payload the other tests plant is live, so its marker staying absent means something.
    marker = tmp_path / "ran"
    _plant(tmp_path / "probe.pt", marker)
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists()


def test_state_round_trips_exactly_through_json_and_safetensors() -> None:
    rng = random.Random(5)
    state = {
        "step": 7,
        "elapsed": 0.1 + 0.2,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "m": torch.randn(2, 3)}},
            "groups": [(0.9, 0.99)],
        },
        "data_rng": rng.getstate(),
        "cuda_rng": None,
        "history": [{"step": 5, "accuracy": 0.25}],
    }
    tensors: dict[str, torch.Tensor] = {}
    document = json.loads(json.dumps(_encode(state, tensors)))
    back = _decode(document, tensors)
    assert back["data_rng"] == state["data_rng"] and isinstance(back["data_rng"][1], tuple)
    restored = random.Random()
    restored.setstate(back["data_rng"])
    assert restored.random() == rng.random()
    assert list(back["optimizer"]["state"]) == [0]  # an int key stays an int
    assert torch.equal(back["optimizer"]["state"][0]["m"], state["optimizer"]["state"][0]["m"])
    assert back["optimizer"]["groups"] == [(0.9, 0.99)]
    assert back["elapsed"] == state["elapsed"] and back["history"] == state["history"]
    with pytest.raises(TypeError, match="cannot hold a set"):
        _encode({"bad": {1, 2}}, {})


def test_a_checkpoint_is_safetensors_and_json_only(tmp_path: Path) -> None:
    train(dataclasses.replace(TINY, stop_after=4), log=lambda _: None, run_dir=tmp_path, save_every=4)
    folder = tmp_path / "step-0000004"
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILE, TENSORS_FILE, STATE_FILE])
    assert json.loads((folder / STATE_FILE).read_text())["step"] == 4


def test_resume_never_unpickles_even_with_pickles_planted_beside_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = _weights(train(TINY, log=lambda _: None).model)
    run = tmp_path / "run"
    train(dataclasses.replace(TINY, stop_after=6), log=lambda _: None, run_dir=run, save_every=3)
    marker = tmp_path / "ran"
    folder = run / "step-0000006"
    _plant(folder / LEGACY_FILE, marker)  # where the older format kept its pickle
    for name in ("trainer.pkl", "optimizer.pt", "state.pt"):
        _plant(folder / name, marker)

    def refuse(*args, **kwargs):
        raise AssertionError("resume unpickled something")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    resumed = train(TINY, log=lambda _: None, run_dir=run, resume=True)
    assert not marker.exists()
    weights = _weights(resumed.model)
    assert all(torch.equal(weights[k], full[k]) for k in full)  # bit for bit, as if never interrupted


@pytest.mark.parametrize("victim", [STATE_FILE, TENSORS_FILE, WEIGHTS_FILE])
def test_a_pickle_in_place_of_a_state_file_fails_to_parse_and_runs_nothing(
    tmp_path: Path, victim: str
) -> None:
    train(dataclasses.replace(TINY, stop_after=3), log=lambda _: None, run_dir=tmp_path, save_every=3)
    marker = tmp_path / "ran"
    _plant(tmp_path / "step-0000003" / victim, marker)
    with pytest.raises(Exception) as caught:
        train(TINY, log=lambda _: None, run_dir=tmp_path, resume=True)
    assert not isinstance(caught.value, AssertionError)
    assert not marker.exists()


def _old_run_folder(tmp_path: Path, marker: Path) -> Path:
    run = tmp_path / "old"
    train(dataclasses.replace(TINY, stop_after=3), log=lambda _: None, run_dir=run, save_every=3)
    folder = run / "step-0000003"
    for name in (STATE_FILE, TENSORS_FILE):
        (folder / name).unlink()
    _plant(folder / LEGACY_FILE, marker)  # a run folder as the older version wrote it
    return run


def test_an_old_pickled_run_folder_is_refused_with_the_way_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    run = _old_run_folder(tmp_path, marker)
    with pytest.raises(ValueError, match="trainer.pt.*never loads.*--start-from"):
        train(TINY, log=lambda _: None, run_dir=run, resume=True)
    with pytest.raises(SystemExit) as exit_info:
        main_train(["--resume", str(run), "--out-dir", str(tmp_path / "out")])
    message = str(exit_info.value)
    assert message.startswith("debug train: ") and "\n" not in message and "--start-from" in message
    assert not marker.exists()
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(ValueError):
        load_resume_state(run, train(dataclasses.replace(TINY, steps=0), log=lambda _: None).model)
    assert not marker.exists()
