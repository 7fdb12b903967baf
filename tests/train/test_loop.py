"""Tests for debug.train.loop on the `tiny` preset (seconds): determinism, saving, resuming, schedules."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest
import torch

from debug import models
from debug.train import (
    PRESETS,
    DataSource,
    Stage,
    TrainConfig,
    build_model,
    encode,
    load_run_config,
    sample_programs,
    train,
)
from debug.train.cli import main_train

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
    wrong = result.final_eval["misreadings"]["errors"]
    assert f"Of {wrong} wrong answers" in card and "neighbour line" in card  # a tiny model is often wrong
    assert "Steps: 5 of 12" in (result.saved["tiny-early"] / "MODEL_CARD.md").read_text()
    loaded = models.load(str(result.saved["tiny"]))
    assert loaded.fingerprint == models.folder_fingerprint(result.saved["tiny"])
    assert loaded.fingerprint != models.folder_fingerprint(result.saved["tiny-early"])


def test_torch_init_unties_the_head_and_uses_the_layer_defaults() -> None:
    from debug.tokenizer import build_char_tokenizer
    from debug.train import build_decoder

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    hub = build_decoder(tokenizer, layers=1, hidden=64, heads=4)
    torch.manual_seed(0)
    plain = build_decoder(tokenizer, layers=1, hidden=64, heads=4, init="torch")
    assert hub.lm_head.weight is hub.model.embed_tokens.weight
    assert plain.lm_head.weight is not plain.model.embed_tokens.weight
    assert abs(hub.model.embed_tokens.weight.std().item() - 0.02) < 0.005
    assert abs(plain.model.embed_tokens.weight.std().item() - 1.0) < 0.1  # nn.Embedding: N(0, 1)
    bound = 64**-0.5  # nn.Linear: uniform within 1/sqrt(fan_in)
    q = plain.model.layers[0].self_attn.q_proj.weight
    assert q.abs().max().item() <= bound and q.std().item() > 0.8 * bound / 3**0.5
    with pytest.raises(ValueError, match="init must be one of"):
        build_decoder(tokenizer, layers=1, hidden=64, heads=4, init="xavier")


def test_default_recipe_is_small_enough() -> None:
    from debug.tokenizer import build_char_tokenizer

    total = 0
    for preset in ("default", "grow-8", "grow-12", "grow-16"):  # the shipped recipe: 4 layers, grown 3 times
        config: TrainConfig = dataclasses.replace(PRESETS[preset], start_from=None)  # the shape alone
        model = build_model(config, build_char_tokenizer())
        shipped = len(config.checkpoints) + 1  # the named copies and the final model, float32 each
        total += sum(p.numel() for p in model.parameters()) * 4 * shipped
    assert total <= 20 * 1024 * 1024
    on_disk = sum((folder / "model.safetensors").stat().st_size for folder in models.EMBEDDED.values())
    assert on_disk <= 32_000_000  # with the multi-family checkpoints: the 32 MB budget of all embedded models


@pytest.mark.skipif("embedded:binder-early" not in models.EMBEDDED, reason="embedded model not trained yet")
def test_training_eval_agrees_with_greedy_scoring() -> None:
    from debug import prompts
    from debug.scoring import score_programs, teacher_forced_correct
    from debug.train import eval_programs

    loaded = models.load("embedded:binder-early")
    programs = eval_programs(10)
    teacher_forced = teacher_forced_correct(loaded.model, loaded.tokenizer, programs)
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


@pytest.mark.parametrize("model_id", sorted(models.EMBEDDED))  # every shipped model
def test_shipped_model_card_states_the_measured_accuracy(model_id: str) -> None:
    from debug.train import eval_programs, evaluate

    card = (models.EMBEDDED[model_id] / "MODEL_CARD.md").read_text()
    stated = re.search(r"^\| all \| (\d+) \| ([0-9.]+) \|", card, re.M)
    assert stated, "the card has no overall accuracy row"
    loaded = models.load(model_id)
    measured = evaluate(loaded.model, loaded.tokenizer, eval_programs(int(stated.group(1)) // 4))
    assert f"{measured['accuracy']:.3f}" == stated.group(2)


def test_a_run_can_start_from_a_trained_model_grown_deeper_and_wider(tmp_path: Path) -> None:
    from debug.train import eval_programs, evaluate
    from debug.train.card import reproduce_command

    source = train(dataclasses.replace(TINY, intermediate=None), tmp_path, log=lambda _: None)
    config = dataclasses.replace(
        TINY, name="grown", intermediate=None, layers=2, hidden=48, heads=3, kv_heads=3,
        start_from=str(source.saved["tiny"]), steps=0,
    )  # fmt: skip
    grown = train(config, tmp_path, log=lambda _: None)
    assert grown.model.config.num_hidden_layers == 2 and grown.model.config.hidden_size == 48
    # Zero steps: the grown model answers as its source did (the held-out evaluation is the same).
    assert grown.final_eval["accuracy"] == source.final_eval["accuracy"]
    assert grown.final_eval["by_hop"] == source.final_eval["by_hop"]
    trained = train(dataclasses.replace(config, steps=12), tmp_path, log=lambda _: None)
    card = (trained.saved["grown"] / "MODEL_CARD.md").read_text()
    assert f"Started from: `{source.saved['tiny']}`" in card
    assert str(source.saved["tiny"]) not in card.split("## Training")[0]  # named once, in the Training list
    assert f"--start-from {source.saved['tiny']}" in reproduce_command(trained.config, 12)
    assert evaluate(trained.model, trained.tokenizer, eval_programs(4))["n"] == 16


def test_resume_of_a_grown_run_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    source = train(dataclasses.replace(TINY, intermediate=None), tmp_path / "src", log=lambda _: None)
    config = dataclasses.replace(
        TINY, intermediate=None, layers=2, start_from=str(source.saved["tiny"]), log_every=1
    )
    full = _weights(train(config, log=lambda _: None).model)
    with pytest.raises(_Interrupted):
        train(config, log=_interrupt_at(8), run_dir=tmp_path / "run", save_every=5)
    resumed = _weights(train(config, log=lambda _: None, run_dir=tmp_path / "run", resume=True).model)
    assert all(torch.equal(resumed[k], full[k]) for k in full)


def test_a_start_that_cannot_grow_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown embedded model 'embedded:nope'"):
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--start-from", "embedded:nope"])
    source = train(dataclasses.replace(TINY, intermediate=None), tmp_path, log=lambda _: None)
    with pytest.raises(SystemExit, match="only grows"):
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--start-from", str(source.saved["tiny"]),
              "--hidden", "16"])  # fmt: skip
    with pytest.raises(ValueError, match="MLP of 4 x hidden"):
        train(dataclasses.replace(TINY, start_from=str(source.saved["tiny"])), log=lambda _: None)


class _Interrupted(Exception):
    pass


def _interrupt_at(step: int):
    def log(line: str) -> None:
        if line.startswith(f"step {step}/"):
            raise _Interrupted

    return log


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, log_every=1)
    full = _weights(train(config, log=lambda _: None).model)
    with pytest.raises(_Interrupted):  # killed at step 8: the last checkpoint is step 5's
        train(config, log=_interrupt_at(8), run_dir=tmp_path, save_every=5)
    assert (tmp_path / "LATEST").read_text() == "step-0000005"
    stored = load_run_config(tmp_path)
    resolved = models.resolve_device("auto", accelerators=("cuda",))
    assert stored == dataclasses.replace(config, device=resolved)  # kept resolved
    lines: list[str] = []
    resumed = train(config, log=lines.append, run_dir=tmp_path, resume=True)
    assert resumed.steps_done == 12
    assert lines[0].startswith("resumed") and lines[1].startswith("step 6/12")
    weights = _weights(resumed.model)
    assert weights.keys() == full.keys()
    assert all(torch.equal(weights[k], full[k]) for k in full)
    assert (tmp_path / "LATEST").read_text() == "step-0000012"  # the run's end is saved too
    assert not (tmp_path / "step-0000005").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_inside_a_curriculum_stage_equals_an_uninterrupted_run(tmp_path: Path, workers: int) -> None:
    recall = (DataSource(seq_lens=(2,), knobs={"max_hops": 1, "p_constant": 1.0}),)
    # The shipped recipe's parts on the tiny shape: a curriculum stage and PyTorch's initialisation.
    config = dataclasses.replace(TINY, log_every=1, curriculum=(Stage(4, recall),), init="torch")
    full = _weights(train(config, log=lambda _: None).model)
    again = _weights(train(config, log=lambda _: None).model)
    assert all(torch.equal(full[k], again[k]) for k in full)
    no_stage = _weights(train(dataclasses.replace(config, curriculum=()), log=lambda _: None).model)
    assert not all(torch.equal(full[k], no_stage[k]) for k in full)
    with pytest.raises(_Interrupted):  # the last checkpoint is step 3's, one step before the stage ends
        train(config, log=_interrupt_at(5), run_dir=tmp_path, save_every=3)
    assert load_run_config(tmp_path).curriculum == config.curriculum
    resumed = train(config, log=lambda _: None, run_dir=tmp_path, resume=True, data_workers=workers)
    weights = _weights(resumed.model)
    assert all(torch.equal(weights[k], full[k]) for k in full)


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    train(dataclasses.replace(TINY, stop_after=3), log=lambda _: None, run_dir=tmp_path, save_every=2)
    with pytest.raises(ValueError, match="differs"):
        train(dataclasses.replace(TINY, lr=5e-3), log=lambda _: None, run_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="--save-every"):
        train(TINY, log=lambda _: None, run_dir=tmp_path / "none", resume=True)


def test_data_workers_give_the_batches_of_the_in_process_stream() -> None:
    from debug.tokenizer import build_char_tokenizer
    from debug.train.data import BatchStream, Curriculum

    tokenizer = build_char_tokenizer()
    streams = [BatchStream(Curriculum(TINY.mix), random.Random(7), 8, tokenizer, workers=n) for n in (0, 2)]
    with streams[0] as inline, streams[1] as ahead:
        for _ in range(5):
            a, b = inline.next(), ahead.next()
            assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "labels"))
        # the workers ran ahead of the consumer; the resume state is still the one after batch 5
        assert ahead.rng_state() == inline.rng_state() != random.Random(7).getstate()
    expected = encode(sample_programs(TINY, random.Random(7), 8), tokenizer)  # the stream's first batch
    with BatchStream(Curriculum(TINY.mix), random.Random(7), 8, tokenizer, workers=1) as again:
        first = again.next()
    assert all(torch.equal(first[k], expected[k]) for k in expected)


def test_training_with_data_workers_equals_training_without(tmp_path: Path) -> None:
    config = dataclasses.replace(TINY, log_every=1)
    plain = _weights(train(config, log=lambda _: None).model)
    with pytest.raises(_Interrupted):
        train(config, log=_interrupt_at(9), run_dir=tmp_path, save_every=4, data_workers=2)
    resumed = _weights(train(config, log=lambda _: None, run_dir=tmp_path, resume=True, data_workers=3).model)
    assert all(torch.equal(plain[k], resumed[k]) for k in plain)


def test_device_choice_and_bf16_guard() -> None:
    from debug.train import check_config

    assert models.resolve_device("cpu", accelerators=("cuda",)) == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models.resolve_device("auto", accelerators=("cuda",)) == expected  # training never picks mps
    with pytest.raises(ValueError, match=r"device \(--device\) must be one of auto, cpu, cuda"):
        check_config(dataclasses.replace(TINY, device="tpu"))
    with pytest.raises(ValueError, match="CUDA only"):
        train(dataclasses.replace(TINY, device="cpu", bf16=True), log=lambda _: None)


def test_progress_lines_report_accuracy_by_hop_and_throughput() -> None:
    lines: list[str] = []
    train(dataclasses.replace(TINY, steps=4, eval_every=2, log_every=2), log=lines.append)
    evals = [line for line in lines if line.startswith("eval step")]
    assert [line.split(":")[0] for line in evals] == ["eval step 2", "eval step 4"]
    assert all(f'"hop{h}"' in line and "copy_line_1" in line for line in evals for h in range(1, 5))
    assert any(line.startswith("step 4/4") and line.endswith("steps/s") for line in lines)


class _AlwaysSays(torch.nn.Module):
    """A stand-in decoder whose greedy next token is always `token_id` (to test `evaluate`'s bookkeeping)."""

    def __init__(self, token_id: int, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 2)
        self.token_id, self.vocab = token_id, vocab

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embed

    def forward(self, input_ids: torch.Tensor):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token_id] = 1.0
        return type("Output", (), {"logits": logits})()


def test_evaluate_measures_agreement_with_the_copy_heuristics() -> None:
    from debug.baselines import predict_copy_last_constant, predict_copy_line_1
    from debug.misreadings import misreading_rates
    from debug.tokenizer import build_char_tokenizer
    from debug.train import eval_programs, evaluate

    tokenizer = build_char_tokenizer()
    programs = eval_programs(25)
    three = tokenizer.convert_tokens_to_ids("3")
    result = evaluate(_AlwaysSays(three, len(tokenizer)), tokenizer, programs)
    # A model that always answers 3 agrees with a heuristic exactly where the heuristic guesses 3.
    for name, predict in (
        ("copy_line_1", predict_copy_line_1),
        ("copy_last_constant", predict_copy_last_constant),
    ):
        expected = sum(predict(p) == 3 for p in programs) / len(programs)
        assert result["agreement"][name] == expected
    assert result["accuracy"] == sum(p.answer == 3 for p in programs) / len(programs)
    assert 0 < result["agreement"]["copy_line_1"] < 1  # a mix, so the comparison could fail
    by_hop = result["by_hop"]["2"]
    hop2 = [p for p in programs if p.metadata["hops"] == 2]
    assert by_hop["agreement"]["copy_line_1"] == sum(predict_copy_line_1(p) == 3 for p in hop2) / len(hop2)
    # The wrong answers are the 3s of the programs whose answer is not 3, read back as integers.
    assert result["misreadings"] == misreading_rates(programs, [3] * len(programs))
    assert result["misreadings"]["errors"] == sum(p.answer != 3 for p in programs)


def test_line_targets_recipe_trains_and_is_recorded(tmp_path: Path) -> None:
    import json

    config = dataclasses.replace(TINY, line_targets=True, eval_every=6)
    result = train(config, tmp_path, log=lambda _: None)
    assert result.history[0]["step"] == 6 and "agree_copy_line_1" in result.history[0]
    record = json.loads((result.saved["tiny"] / "training_history.json").read_text())
    assert record["step"] == TINY.steps and record["config"]["line_targets"] is True
    assert record["history"] == result.history
    assert "--line-targets" in (result.saved["tiny"] / "MODEL_CARD.md").read_text()


def test_lr_floor_sets_where_the_cosine_ends(tmp_path: Path) -> None:
    def rates(floor: float) -> list[float]:
        lines: list[str] = []
        config = dataclasses.replace(TINY, steps=8, warmup=2, lr=1e-3, lr_floor=floor, log_every=1)
        train(config, log=lines.append)
        return _logged_rates(lines)

    constant, decayed = rates(1.0), rates(0.1)
    assert constant[2:] == [1e-3] * len(constant[2:])  # after warmup the rate never moves
    assert decayed[-1] == pytest.approx(1e-4, rel=0.05)  # the default: the cosine ends at 10% of lr
    assert all(a >= b for a, b in zip(decayed[2:], decayed[3:]))
    with pytest.raises(ValueError, match=r"lr_floor \(--lr-floor\) must be a number >= 0 and <= 1"):
        train(dataclasses.replace(TINY, lr_floor=1.5), log=lambda _: None)


def _logged_rates(lines: list[str]) -> list[float]:
    return [float(re.search(r" lr (\S+) ", line).group(1)) for line in lines if line.startswith("step")]


def test_decay_steps_hold_the_rate_then_decay_at_the_end(tmp_path: Path) -> None:
    lines: list[str] = []
    config = dataclasses.replace(TINY, steps=12, warmup=2, lr=1e-3, lr_floor=0.0, decay_steps=4, log_every=1)
    train(config, log=lines.append)
    rates = _logged_rates(lines)
    assert rates[2:8] == [1e-3] * 6  # constant from warmup until the last 4 steps
    assert all(a > b for a, b in zip(rates[7:], rates[8:]))
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(
        SystemExit, match=re.escape("decay_steps (--decay-steps) must be 0 to steps - warmup (10)")
    ):
        main_train(["--preset", "tiny", "--out-dir", str(tmp_path), "--decay-steps", "11"])


def test_a_constant_rate_run_resumed_with_a_decay_equals_that_run_in_one_go(tmp_path: Path) -> None:
    constant = dataclasses.replace(TINY, steps=8, lr_floor=1.0)
    train(constant, log=lambda _: None, run_dir=tmp_path / "run", save_every=4)  # ends at step 8, saved
    longer = dataclasses.replace(constant, steps=12, decay_steps=4, lr_floor=0.0)
    in_one_go = _weights(train(longer, log=lambda _: None).model)
    main_train(
        ["--resume", str(tmp_path / "run"), "--out-dir", str(tmp_path), "--steps", "12"]
        + ["--decay-steps", "4", "--lr-floor", "0"]
    )
    resumed = _weights(models.load(str(tmp_path / "tiny")).model)
    assert all(torch.equal(resumed[k], in_one_go[k]) for k in in_one_go)
    card = (tmp_path / "tiny" / "MODEL_CARD.md").read_text()
    assert "Steps: 12 of 12" in card and "--decay-steps 4" in card and "--lr-floor 0.0" in card
    models.unload(str(tmp_path / "tiny"))


def test_a_resume_may_not_change_the_rate_of_steps_already_trained(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(dataclasses.replace(TINY, stop_after=6), log=lambda _: None, run_dir=run, save_every=3)
    stored = (run / "config.json").read_text()
    # TINY decays over all its steps: a longer schedule would have given steps 1-6 other rates.
    with pytest.raises(SystemExit, match="changes the learning rate of steps already trained"):
        main_train(["--resume", str(run), "--out-dir", str(tmp_path), "--steps", "20"])
    assert (run / "config.json").read_text() == stored  # the refused resume left the run as it was
    with pytest.raises(SystemExit, match="drop --lr$"):
        main_train(["--resume", str(run), "--out-dir", str(tmp_path), "--lr", "0.1"])
