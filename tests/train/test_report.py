"""Tests for debug.train.report on a tiny run's checkpoints (seconds)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from debug import models
from debug.train import PRESETS, RECALL, Stage, train
from debug.train.cli import main_report
from debug.train.report import default_checkpoints, training_report


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    config = dataclasses.replace(
        PRESETS["tiny"],
        eval_every=4,
        checkpoints=((4, "tiny-early"),),
        curriculum=(Stage(3, RECALL),),
        intermediate=None,  # 4 x hidden, so a run can start from it grown (debug.train.grow)
    )
    return train(config, tmp_path_factory.mktemp("run"), log=lambda _: None).saved


def test_report_orders_checkpoints_and_carries_history_and_sweeps(tiny_run, tmp_path: Path) -> None:
    lines: list[str] = []
    path = training_report(
        [str(tiny_run["tiny"]), str(tiny_run["tiny-early"])],
        tmp_path,
        per_hop=3,
        pairs=2,
        num_hops=2,
        log=lines.append,
    )
    doc = json.loads((tmp_path / "train_report.json").read_text())
    assert [ck["step"] for ck in doc["checkpoints"]] == [4, PRESETS["tiny"].steps]
    assert [row["step"] for row in doc["history"]] == [4, 8, 12]
    assert doc["curriculum"] == [{"first": 1, "last": 3, "lines": [2, 2]}]  # shaded in the history plot
    for ck in doc["checkpoints"]:
        assert ck["evaluation"]["n"] == 12 and set(ck["evaluation"]["agreement"]) == {
            "copy_line_1",
            "copy_last_constant",
        }
        patching = ck["patching"]
        assert patching["num_programs"] == 2
        assert {"ref depth 1", "ref depth 2", "query", "final"} <= set(patching["by_target"])
        assert len(patching["by_target"]["query"]["normalized"]) == len(patching["layer_labels"])
        wrong = ck["evaluation"]["misreadings"]
        assert wrong["errors"] == round(12 * (1 - ck["evaluation"]["accuracy"]))
    assert doc["misreadings"] == ["neighbour_line", "other_assignment", "unexplained"]
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 2
    assert 'id="misreadings"' in html and "neighbour line" in html
    assert str(tiny_run["tiny-early"]) in html


def test_a_grown_run_continues_the_step_count_and_history_of_its_start(tiny_run, tmp_path: Path) -> None:
    grown = dataclasses.replace(
        PRESETS["tiny"],
        name="tiny-grown",
        intermediate=None,
        layers=2,
        steps=4,
        eval_every=2,
        start_from=str(tiny_run["tiny"]),
    )
    folder = train(grown, tmp_path / "grown", log=lambda _: None).saved["tiny-grown"]
    # Grown twice: the chain is followed back through both starts.
    again = dataclasses.replace(grown, name="tiny-grown-2", layers=3, steps=2, start_from=str(folder))
    last = train(again, tmp_path / "grown-2", log=lambda _: None).saved["tiny-grown-2"]
    training_report(
        [str(last), str(folder), str(tiny_run["tiny-early"]), str(tiny_run["tiny"])],
        tmp_path,
        per_hop=1,
        pairs=1,
        num_hops=2,
        log=lambda _: None,
    )
    doc = json.loads((tmp_path / "train_report.json").read_text())
    assert [ck["step"] for ck in doc["checkpoints"]] == [4, 12, 16, 18]
    assert [ck["model"] for ck in doc["checkpoints"]][-2:] == [str(folder), str(last)]
    assert [row["step"] for row in doc["history"]] == [4, 8, 12, 14, 16, 18]
    assert doc["curriculum"] == [{"first": 1, "last": 3, "lines": [2, 2]}]  # the first run's


def test_cli_names_the_fix_for_a_folder_train_did_not_write(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text("{}")
    # The good checkpoint comes first: the bad one still fails before any measuring starts.
    with pytest.raises(SystemExit, match="training_history.json not found.*debug train"):
        main_report([str(tiny_run["tiny"]), str(tmp_path), "--out-dir", str(tmp_path / "out")])
    assert "measuring" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_default_is_the_default_models_run() -> None:
    if "embedded:binder" not in models.EMBEDDED:
        pytest.skip("embedded model not trained yet")
    # The default model was grown from binder-12l, from binder-8l, from binder-4l (`start_from`): oldest 1st.
    assert default_checkpoints() == [
        "embedded:binder-early",
        "embedded:binder-mid",
        "embedded:binder-4l",
        "embedded:binder-8l",
        "embedded:binder-12l",
        "embedded:binder",
    ]
