"""Tests for debug.train.report on a tiny run's checkpoints (seconds)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from debug import models
from debug.counterfactual import COUNTERFACTUAL_FAMILIES
from debug.tokenizer import build_char_tokenizer
from debug.train import PRESETS, RECALL, Stage, save_embedded, train
from debug.train.cli import main_report
from debug.train.config import MULTI_MIX
from debug.train.evaluate import FAMILIES, eval_programs, evaluate
from debug.train.model import build_model
from debug.train.report import default_checkpoints, learned_at, training_report


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
    assert all(ck["family_patching"] == {} for ck in doc["checkpoints"])  # a binder's run: binding panel only
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


def _family_rows(steps: list[int], accuracy: dict[str, list[float]]) -> list[dict]:
    """History rows as a run that measures every family writes them; `accuracy[family][i]` at every length."""
    return [
        {
            "step": step,
            "seconds": float(step),
            "accuracy": 0.5,
            "by_family": {
                f.name: {str(n): accuracy.get(f.name, [0.0] * len(steps))[i] for n in f.seq_lens}
                for f in FAMILIES
            },
        }
        for i, step in enumerate(steps)
    ]


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checkpoints of a randomly initialised multi-family run (no training: the report is under test)."""
    config = dataclasses.replace(PRESETS["tiny"], mix=MULTI_MIX, max_positions=512, eval_per_length=1)
    tokenizer = build_char_tokenizer()
    out = tmp_path_factory.mktemp("family-run")
    # Counter learned at step 2 and kept; boolean right at step 1 only (not kept).
    history = _family_rows([1, 2], {"counter": [0.5, 1.0], "boolean": [1.0, 0.25]})
    folders = []
    for step in (1, 2):
        torch.manual_seed(step)
        model = build_model(config, tokenizer).eval()
        evaluation = evaluate(model, tokenizer, eval_programs(1))
        name = f"tiny-{step}"
        folders.append(
            save_embedded(model, tokenizer, out, name, config, step, 0.0, evaluation, history[:step])
        )
    return folders


def test_a_multi_family_report_has_every_family_and_length_and_a_patching_panel_per_family(
    family_checkpoints: list[Path], tmp_path: Path
) -> None:
    lines: list[str] = []
    path = training_report(
        [str(f) for f in reversed(family_checkpoints)],
        tmp_path,
        per_hop=1,
        pairs=2,
        num_hops=2,
        log=lines.append,
    )
    doc = json.loads((tmp_path / "train_report.json").read_text())
    assert [ck["step"] for ck in doc["checkpoints"]] == [1, 2]
    # The family x length table: every family at every length for every checkpoint, taken from the run's own
    # evaluation at the checkpoint's step.
    assert doc["families"]["lengths"] == {f.name: [str(n) for n in f.seq_lens] for f in FAMILIES}
    assert [row["step"] for row in doc["family_history"]] == [1, 2]
    for ck, row in zip(doc["checkpoints"], doc["family_history"], strict=True):
        assert ck["evaluation"]["by_family"] == row["by_family"]
        assert ck["evaluation"]["by_family_source"] == "the run's evaluation"
    assert doc["learned"]["by_family"]["counter"] == {"default": 2, "all": 2}
    assert doc["learned"]["by_family"]["boolean"] == {"default": None, "all": None}
    # A patching panel per family with a counterfactual, the same pairs at every checkpoint.
    assert [pf["family"] for pf in doc["patch_families"]] == list(COUNTERFACTUAL_FAMILIES)
    expected_target = {"binding": "ref depth 1", "range": "changed constant", "boolean": "changed constant"}
    for family, target in expected_target.items():
        entries = [ck["family_patching"][family] for ck in doc["checkpoints"]]
        assert {e["program"] for e in entries} == {entries[0]["program"]}
        for entry in entries:
            assert entry["pairs"] == 2 and entry["aggregate"]["num_programs"] == 2
            assert {target, "query", "final"} <= set(entry["aggregate"]["by_target"])
            example = entry["example"]
            # One pair swept at every layer and position: the layer x position heatmap.
            assert len(example["normalized"]) == len(example["layers"]) == PRESETS["tiny"].layers
            assert len(example["normalized"][0]) == len(example["positions"]) == len(example["tokens"])
    html = path.read_text()
    table = re.search(r'<table id="families">.*?</table>', html, re.S).group(0)
    assert table.count("<tr>") == 1 + sum(len(f.seq_lens) for f in FAMILIES)
    assert 'id="learned"' in html
    for family in COUNTERFACTUAL_FAMILIES:
        assert f'id="patching-{family}"' in html
    # History, families by length, the binding panel by ref depth, and one panel per patched family.
    assert html.count("data:image/png;base64,") == 3 + len(COUNTERFACTUAL_FAMILIES)
    assert any("patching range: 2 pairs" in line for line in lines)


def test_per_length_re_measures_every_family_and_patch_families_choose_the_panels(
    family_checkpoints: list[Path], tmp_path: Path
) -> None:
    training_report(
        [str(family_checkpoints[0])],
        tmp_path,
        per_hop=1,
        pairs=1,
        num_hops=2,
        per_length=1,
        patch_families=["boolean"],
        log=lambda _: None,
    )
    doc = json.loads((tmp_path / "train_report.json").read_text())
    evaluation = doc["checkpoints"][0]["evaluation"]
    assert evaluation["by_family_source"] == "re-measured"
    lengths = {name: list(by_len) for name, by_len in evaluation["by_family"].items()}
    assert lengths == {f.name: [str(n) for n in f.seq_lens] for f in FAMILIES}
    assert all(0.0 <= acc <= 1.0 for by_len in evaluation["by_family"].values() for acc in by_len.values())
    assert [pf["family"] for pf in doc["patch_families"]] == ["boolean"]
    assert list(doc["checkpoints"][0]["family_patching"]) == ["boolean"]


def test_learned_at_is_the_first_step_that_holds_to_the_last_evaluation() -> None:
    rows = _family_rows(
        [100, 200, 300, 400], {"range": [0.95, 0.5, 0.92, 1.0], "boolean": [1.0, 1.0, 1.0, 0.8]}
    )
    # range's longer lengths (8, 12) lag behind its defaults (2, 4, 6).
    for row, acc in zip(rows, [0.0, 0.0, 0.5, 0.9], strict=True):
        row["by_family"]["range"] |= {"8": acc, "12": acc}
    learned = learned_at(rows)
    assert learned["range"] == {"default": 300, "all": 400}
    assert learned["boolean"] == {"default": None, "all": None}
    assert learned["counter"] == {"default": None, "all": None}
    assert learned_at([]) == {}


def test_a_family_without_counterfactual_support_is_refused_before_any_work(
    family_checkpoints: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    with pytest.raises(
        ValueError, match=r"'exception' has no counterfactual support; families with one: binding"
    ):
        training_report(
            [str(family_checkpoints[0])], tmp_path / "api", patch_families=["exception"], log=lines.append
        )
    assert lines == [] and not (tmp_path / "api").exists()
    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as exit_info:
        main_report(
            [str(family_checkpoints[0]), "--patch-families", "range,exception", "--out-dir", str(out)]
        )
    message = str(exit_info.value)
    assert "\n" not in message and message.startswith("debug train-report: patch family 'exception'")
    assert "binding, range, boolean" in message
    assert "measuring" not in capsys.readouterr().out and not out.exists()


def test_a_folder_that_is_not_a_model_is_refused_before_any_work(
    family_checkpoints: list[Path], tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    lines: list[str] = []
    with pytest.raises(
        FileNotFoundError, match=r"training_history.json not found: train-report takes checkpoints"
    ):
        training_report([str(family_checkpoints[0]), str(empty)], tmp_path / "out", log=lines.append)
    assert lines == [] and not (tmp_path / "out").exists()
