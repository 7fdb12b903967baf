"""Tests for debug.train.card: renaming a saved model keeps its weights and rewrites its name everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from debug import models
from debug.train import PRESETS, train
from debug.train.card import HISTORY_FILE, resave


def _table(card: str) -> list[str]:
    return [line for line in card.splitlines() if line.startswith("| ")]


def test_resave_keeps_the_weights_and_renames_card_config_and_history(tmp_path: Path) -> None:
    original = train(PRESETS["tiny"], tmp_path / "a", log=lambda _: None).saved["tiny"]
    folder = resave(original, tmp_path / "b", "tiny-renamed", start_from="embedded:tiny-start")

    assert folder == tmp_path / "b" / "tiny-renamed"
    before = models.load(str(original)).model.state_dict()
    after = models.load(str(folder)).model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    old_record = json.loads((original / HISTORY_FILE).read_text())
    record = json.loads((folder / HISTORY_FILE).read_text())
    assert record["name"] == "tiny-renamed" and record["config"]["name"] == "tiny-renamed"
    assert record["config"]["start_from"] == "embedded:tiny-start"
    assert (record["step"], record["seconds"], record["history"]) == (
        old_record["step"],
        old_record["seconds"],
        old_record["history"],
    )
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith("# embedded:tiny-renamed\n")
    assert "Started from: `embedded:tiny-start`" in card
    # The evaluation is re-run, and is deterministic: the accuracy table comes out the same.
    assert _table(card) == _table((original / "MODEL_CARD.md").read_text())


def test_resave_without_a_start_keeps_the_recorded_one(tmp_path: Path) -> None:
    original = train(PRESETS["tiny"], tmp_path, log=lambda _: None).saved["tiny"]
    record = json.loads((resave(original, tmp_path, "tiny-2") / HISTORY_FILE).read_text())
    assert record["config"]["start_from"] is None


def test_resave_of_a_folder_without_history_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="written by `debug train`"):
        resave(tmp_path, tmp_path / "out", "x")
