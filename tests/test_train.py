"""Tests for debug.train on the `tiny` preset (seconds): determinism, saving, the CLI."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from debug import models
from debug.train import PRESETS, TrainConfig, build_model, encode, main, sample_programs, train

TINY = PRESETS["tiny"]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights_other_seed_differs() -> None:
    a = _weights(train(TINY, log=lambda _: None).model)
    b = _weights(train(TINY, log=lambda _: None).model)
    c = _weights(train(dataclasses.replace(TINY, seed=1), log=lambda _: None).model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_lowers_the_loss() -> None:
    config = dataclasses.replace(TINY, steps=40, lr=3e-3)
    result = train(config, log=lambda _: None)
    batch = encode(sample_programs(config, random.Random(123), 32), result.tokenizer)
    with torch.no_grad():
        trained = result.model(**batch).loss.item()
        torch.manual_seed(config.seed)
        fresh = build_model(config, result.tokenizer)(**batch).loss.item()
    assert trained < fresh


def test_labels_cover_only_answer_and_eos() -> None:
    from debug.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    programs = sample_programs(TINY, random.Random(0), 3)
    batch = encode(programs, tokenizer)
    for row, program in zip(batch["labels"], programs):
        kept = [int(t) for t in row if t != -100]
        assert tokenizer.decode(kept[:-1]) == str(program.answer)
        assert kept[-1] == tokenizer.eos_token_id


def test_saved_checkpoints_load_as_models(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, checkpoints=((5, "tiny-early"),))
    result = train(config, tmp_path, log=lambda _: None)
    assert set(result.saved) == {"tiny-early", "tiny"}
    for folder in result.saved.values():
        for name in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "MODEL_CARD.md",
        ):
            assert (folder / name).is_file(), name
    card = (result.saved["tiny"] / "MODEL_CARD.md").read_text()
    assert "Steps: 12 of 12" in card and "seed 0" in card and "copy_line_1" in card
    assert "Steps: 5 of 12" in (result.saved["tiny-early"] / "MODEL_CARD.md").read_text()
    loaded = models.load(str(result.saved["tiny"]))
    assert loaded.fingerprint == models.folder_fingerprint(result.saved["tiny"])
    assert loaded.fingerprint != models.folder_fingerprint(result.saved["tiny-early"])
    models.unload(str(result.saved["tiny"]))


def test_cli_trains_tiny_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--preset",
            "tiny",
            "--out-dir",
            str(tmp_path),
            "--name",
            "cli-tiny",
            "--steps",
            "3",
            "--checkpoint",
            "2:cli-early",
        ]
    )
    assert code == 0
    assert (tmp_path / "cli-tiny" / "model.safetensors").is_file()
    assert (tmp_path / "cli-early" / "model.safetensors").is_file()
    assert '"saved"' in capsys.readouterr().out


def test_cli_rejects_bad_checkpoint_spec(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="STEP:NAME"):
        main(["--preset", "tiny", "--out-dir", str(tmp_path), "--checkpoint", "early"])


def test_default_recipe_is_small_enough() -> None:
    from debug.tokenizer import build_char_tokenizer

    config: TrainConfig = PRESETS["default"]
    model = build_model(config, build_char_tokenizer())
    assert (
        sum(p.numel() for p in model.parameters()) * 4 <= 20 * 1024 * 1024 / 2
    )  # both checkpoints fit 20 MB


@pytest.mark.skipif("embedded:binder-early" not in models.EMBEDDED, reason="embedded model not trained yet")
def test_training_eval_agrees_with_greedy_scoring() -> None:
    from debug import prompts
    from debug.scoring import score_programs
    from debug.train import answer_correct, eval_programs

    loaded = models.load("embedded:binder-early")
    programs = eval_programs(10)
    teacher_forced = answer_correct(loaded.model, loaded.tokenizer, programs)
    greedy = [s.correct for s in score_programs(loaded, programs, prompts.VARIABLE_BINDING)]
    assert teacher_forced == greedy
    assert 0 < sum(greedy) < len(greedy)  # a mix of right and wrong, so the comparison can fail


def test_stop_after_replays_a_run_cut_short(tmp_path: Path) -> None:
    cut = train(dataclasses.replace(TINY, stop_after=6), log=lambda _: None)
    full = train(dataclasses.replace(TINY, checkpoints=((6, "at6"),)), tmp_path, log=lambda _: None)
    assert cut.steps_done == 6
    replayed = _weights(cut.model)
    saved = _weights(models.load(str(full.saved["at6"])).model)
    assert all(torch.equal(replayed[k], saved[k]) for k in saved)
    card = (full.saved["at6"] / "MODEL_CARD.md").read_text()
    assert "--stop-after 6" in card and "--checkpoint 6:at6" in card
    models.unload(str(full.saved["at6"]))


@pytest.mark.parametrize("model_id", ["embedded:binder-early", "embedded:binder"])
def test_shipped_model_card_states_the_measured_accuracy(model_id: str) -> None:
    import re

    from debug.train import eval_programs, evaluate

    if model_id not in models.EMBEDDED:
        pytest.skip("embedded model not trained yet")
    card = (models.EMBEDDED[model_id] / "MODEL_CARD.md").read_text()
    stated = re.search(r"^\| all \| (\d+) \| ([0-9.]+) \|", card, re.M)
    assert stated, "the card has no overall accuracy row"
    loaded = models.load(model_id)
    measured = evaluate(loaded.model, loaded.tokenizer, eval_programs(int(stated.group(1)) // 4))
    assert f"{measured['accuracy']:.3f}" == stated.group(2)
