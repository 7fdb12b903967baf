"""Tests for the multi-family recipe: the `multi` preset, per-family evaluation and length-grouped steps."""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from pathlib import Path

import pytest

from debug.generators import GENERATORS
from debug.programs import Program, as_program
from debug.tokenizer import build_char_tokenizer
from debug.train import FAMILIES, MULTI_MIX, PRESETS, check_config, encode, family_programs, train
from debug.train.cli import main_train
from debug.train.data import plan_programs
from debug.train.evaluate import EVAL_BASE_SEED, evaluate_families
from debug.train.loop import length_chunks
from debug.train.model import build_model
from debug.train.report import training_report

# The module itself: `debug.train.evaluate` the attribute is the re-exported function.
evaluate_module = importlib.import_module("debug.train.evaluate")

#: The tiny preset with room for the longest held-out family program (5 exception blocks: ~360 characters).
TINY = dataclasses.replace(PRESETS["tiny"], max_positions=512)


def _longest(generator: str, knobs: dict | None = None) -> int:
    return max(
        max(s.seq_lens)
        for s in MULTI_MIX
        if s.generator == generator and (knobs is None or s.knobs.get("style") == knobs.get("style"))
    )


def test_the_multi_preset_trains_every_family_in_query_form_past_the_eval_lengths() -> None:
    config = PRESETS["multi"]
    check_config(config)
    assert config.start_from == "embedded:binder" and config.name != "binder"
    assert config.curriculum == () and config.eval_per_length > 0
    assert config.lr_floor == 1.0  # a constant rate: a later sitting may lengthen it or end it in a decay
    trained = {s.generator for s in config.mix}
    assert {f.generator for f in FAMILIES} <= trained
    for source in config.mix:
        if source.generator != "make_variable_binding_program":
            assert source.knobs.get("query") is True, source
    styles = {s.knobs.get("style", "paper") for s in config.mix if "binding" in s.generator}
    assert styles == {"paper", "spaced"}
    assert _longest("make_variable_binding_program", {"style": None}) >= 24
    assert _longest("make_variable_binding_program", {"style": "spaced"}) >= 24
    for family in FAMILIES:
        longest = max(s.seq_lens[-1] for s in config.mix if s.generator == family.generator)
        assert longest > max(family.default_lens), family  # trained past every eval's default length
        assert longest >= max(family.seq_lens), family  # and over every length measured
    for name in ("make_range_program", "make_variable_increments", "make_fibonacci_program"):
        assert _longest(name) >= 8


def test_the_char_tokenizer_covers_every_character_of_the_training_mix() -> None:
    tokenizer = build_char_tokenizer()
    for source in MULTI_MIX:
        for seq_len in (source.seq_lens[0], source.seq_lens[-1]):
            for seed in range(20):
                program = as_program(
                    GENERATORS[source.generator](seq_len, random.Random(seed), **source.knobs)
                )
                ids = tokenizer(program.text + str(program.answer))["input_ids"]
                assert tokenizer.unk_token_id not in ids, program.text
                assert len(ids) < PRESETS["multi"].max_positions


@pytest.mark.parametrize("answer", [True, False, -3, 12, 233, 7])
def test_every_answer_token_and_eos_are_supervised(answer: object) -> None:
    tokenizer = build_char_tokenizer()
    batch = encode([Program("x = 0\n#x:", answer), Program("a=5\n#a:", 5)], tokenizer)
    labels = [t for t in batch["labels"][0].tolist() if t != -100]
    assert labels == tokenizer(str(answer), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_family_programs_are_fixed_and_seeded_apart_from_the_training_stream() -> None:
    sets = family_programs(3)
    again = family_programs(3)
    assert list(sets) == [f.name for f in FAMILIES]
    for family in FAMILIES:
        assert list(sets[family.name]) == list(family.seq_lens)
        for seq_len, programs in sets[family.name].items():
            assert len(programs) == 3
            assert [p.text for p in programs] == [p.text for p in again[family.name][seq_len]]
            if family.generator != "make_variable_binding_program":
                assert programs[0].text.endswith(f"#{programs[0].metadata['answer_var']}:")
    # The held-out seeds come from EVAL_BASE_SEED's namespace; the first plans of the run's stream differ.
    import hashlib

    held = {
        int(hashlib.sha256(f"{EVAL_BASE_SEED}:{f.name}:{n}:{i}".encode()).hexdigest()[:12], 16)
        for f in FAMILIES
        for n in f.seq_lens
        for i in range(50)
    }
    drawn = {seed for _, _, seed in plan_programs(MULTI_MIX, random.Random(PRESETS["multi"].seed), 20_000)}
    assert not held & drawn


def test_evaluate_families_scores_as_the_eval_suite_does(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = evaluate_module.score_programs

    def spy(loaded, programs, template, **kwargs):
        calls.append((template, kwargs))
        return real(loaded, programs, template, **kwargs)

    monkeypatch.setattr(evaluate_module, "score_programs", spy)
    tokenizer = build_char_tokenizer()
    model = build_model(TINY, tokenizer)
    result = evaluate_families(model, tokenizer, family_programs(1))
    # The raw program is the prompt and no parser is forced: parser_for(answer), as the query tasks score.
    assert calls == [("{code}", {})]
    assert list(result) == [f.name for f in FAMILIES]
    for family in FAMILIES:
        assert list(result[family.name]) == [str(n) for n in family.seq_lens]
        assert all(0.0 <= v <= 1.0 for v in result[family.name].values())


def test_length_chunks_give_the_whole_batch_gradient() -> None:
    import torch

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model(TINY, tokenizer)
    rng = random.Random(1)
    programs = [
        as_program(GENERATORS[s.generator](s.seq_lens[-1] if i % 2 else 2, rng, **s.knobs))
        for i, s in enumerate(MULTI_MIX)
    ]
    batch = encode(programs, tokenizer)
    whole = model(**batch).loss
    whole.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = int((batch["labels"][:, 1:] != -100).sum())
    chunks = length_chunks(batch, 3)
    assert sum(len(c["input_ids"]) for c in chunks) == len(programs)
    assert max(c["input_ids"].shape[1] for c in chunks[:-1]) < batch["input_ids"].shape[1]
    summed = 0.0
    for chunk in chunks:
        part = model(**chunk, num_items_in_batch=total).loss
        part.backward()
        summed += part.item()
    assert summed == pytest.approx(whole.item(), rel=1e-5)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_micro_batches_is_bounded_by_the_batch() -> None:
    with pytest.raises(ValueError, match=r"micro_batches \(--micro-batches\) must be 1 to batch_size \(8\)"):
        check_config(dataclasses.replace(TINY, micro_batches=9))


@pytest.fixture(scope="module")
def family_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    config = dataclasses.replace(
        TINY,
        mix=MULTI_MIX,
        micro_batches=2,
        eval_per_length=1,
        eval_every=6,
        checkpoints=((6, "tiny-6"),),
    )
    return train(config, tmp_path_factory.mktemp("multi"), log=lambda _: None).saved


def test_a_run_records_accuracy_by_family_and_length_at_every_eval(family_run: dict[str, Path]) -> None:
    record = json.loads((family_run["tiny"] / "training_history.json").read_text())
    assert [row["step"] for row in record["history"]] == [6, 12]
    for row in record["history"]:
        assert list(row["by_family"]) == [f.name for f in FAMILIES]
        assert row["by_family"]["range"].keys() == {"2", "4", "6", "8", "12"}
        assert "hop1" in row  # the binding summary stays beside it


def test_train_report_shows_families_by_length_across_checkpoints(
    family_run: dict[str, Path], tmp_path: Path
) -> None:
    lines: list[str] = []
    path = training_report(
        [str(family_run["tiny"]), str(family_run["tiny-6"])],
        tmp_path,
        per_hop=1,
        pairs=1,
        num_hops=2,
        log=lines.append,
    )
    doc = json.loads((tmp_path / "train_report.json").read_text())
    assert [row["step"] for row in doc["family_history"]] == [6, 12]
    assert doc["families"]["lengths"]["exception"] == ["1", "2", "3", "4"]
    assert doc["families"]["default_lens"]["exception"] == ["1", "2", "3"]
    for ck in doc["checkpoints"]:
        assert ck["evaluation"]["by_family"]["boolean"].keys() == {"2", "4", "6", "8"}
    html = path.read_text()
    assert 'id="families"' in html and html.count("data:image/png;base64,") == 6  # 3 + a panel per family
    assert any("by family: binding" in line for line in lines)


def test_the_cli_takes_the_family_and_micro_batch_options(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    main_train(["--preset", "tiny", "--out-dir", str(out), "--eval-per-length", "0", "--micro-batches", "2"])
    config = json.loads((out / "cli" / "training_history.json").read_text())["config"]
    assert config["micro_batches"] == 2 and config["eval_per_length"] == 0
    with pytest.raises(SystemExit):
        main_train(["--preset", "tiny", "--out-dir", str(out), "--micro-batches", "0"])
