"""The nnsight patching engine against a plain-torch-hook reference, on Qwen3-style and GPT-2-style models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import debug.causal.engine as engine
from debug.causal.architectures import UnsupportedArchitectureError, get_path, resolve_architecture
from debug.causal.engine import sweep, sweep_pairs
from debug.causal.forward import RemoteModel, hidden_arg, resolve_model, with_hidden_arg
from debug.causal.inputs import CausalTracingError, prepare_inputs
from debug.causal.pairs import binding_pair
from debug.causal.plan import plan_pair
from debug.causal.result import SweepResult, UnsolvedPairWarning
from debug.causal.runner import run_causal_tracing_experiment
from debug.models import LoadedModel, WeightsRequiredError
from debug.programs import Program

from .reference import site_activation, site_module

# Untrained models get most pairs wrong; the tests that check that warning catch it themselves.
pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})


# ---- reference: one plain forward per cell, patched with torch hooks (no nnsight) ----


def _patched_last_logits(model, site, layer, pos, head, value, ids) -> torch.Tensor:
    arch = resolve_architecture(model)
    module = site_module(model, site, layer)

    def replace(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if head is None:
            x[0, pos] = value[pos]
        else:
            sl = slice(head * arch.head_dim, (head + 1) * arch.head_dim)
            x[0, pos, sl] = value[pos, sl]
        return x

    if site == "mlp":
        handle = module.register_forward_hook(lambda m, a, out: replace(out))
    else:
        handle = module.register_forward_pre_hook(
            lambda m, a, k: with_hidden_arg(a, k, replace(hidden_arg(a, k))), with_kwargs=True
        )
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, -1].float()
    handle.remove()
    return logits


def reference_sweep(
    loaded: LoadedModel, original: Program, counterfactual: Program, site: str, layers, heads=None
):
    """Per-cell hooks: returns (logit_diff, prob_cf, iia) arrays and the clean/cf logit differences."""
    model, tok = loaded.model, loaded.tokenizer
    orig_ids = torch.tensor(tok(original.text)["input_ids"])
    cf_ids = torch.tensor(tok(counterfactual.text)["input_ids"])
    o_id = tok(str(original.answer), add_special_tokens=False)["input_ids"][0]
    c_id = tok(str(counterfactual.answer), add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        clean = model(input_ids=orig_ids[None]).logits[0, -1].float()
        corrupt = model(input_ids=cf_ids[None]).logits[0, -1].float()
    head_axis = heads if heads is not None else [None]
    shape = (len(layers), len(orig_ids)) + ((len(heads),) if heads is not None else ())
    ld, prob, iia = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
    for li, layer in enumerate(layers):
        value = site_activation(model, site, layer, cf_ids)
        for pos in range(len(orig_ids)):
            for hi, head in enumerate(head_axis):
                logits = _patched_last_logits(model, site, layer, pos, head, value, orig_ids)
                index = (li, pos) if heads is None else (li, pos, hi)
                ld[index] = float(logits[c_id] - logits[o_id])
                prob[index] = float(torch.softmax(logits, -1)[c_id])
                iia[index] = int(logits.argmax()) == c_id
    return ld, prob, iia, float(clean[c_id] - clean[o_id]), float(corrupt[c_id] - corrupt[o_id])


# (reuse_prefix, skip_layers): the one-pass sweep, each way of skipping work, and both.
STRATEGIES = [(False, False), (True, False), (False, True), (True, True)]
STRATEGY_IDS = ["full", "prefix", "skip", "prefix+skip"]


@pytest.mark.parametrize(("reuse_prefix", "skip_layers"), STRATEGIES, ids=STRATEGY_IDS)
@pytest.mark.parametrize("site", ["residual_stream", "attention_heads", "mlp"])
def test_every_site_equals_the_hook_reference(
    loaded: LoadedModel, site: str, reuse_prefix: bool, skip_layers: bool
) -> None:
    n = resolve_architecture(loaded.model).num_layers
    layers = list(range(n + 1)) if site == "residual_stream" else list(range(n))
    heads = list(range(4)) if site == "attention_heads" else None
    # batch_size 7 splits the cells over several chunks, each mixing layers.
    result = sweep(
        loaded,
        ORIGINAL,
        COUNTERFACTUAL,
        site=site,
        layers=layers,
        batch_size=7,
        reuse_prefix=reuse_prefix,
        skip_layers=skip_layers,
    )
    ld, prob, iia, ld_orig, ld_cf = reference_sweep(loaded, ORIGINAL, COUNTERFACTUAL, site, layers, heads)
    assert result.logit_diff.shape == ld.shape
    np.testing.assert_allclose(result.logit_diff, ld, atol=2e-5)
    np.testing.assert_allclose(result.prob_cf, prob, atol=1e-6)
    np.testing.assert_allclose(result.original.logit_diff, ld_orig, atol=2e-5)
    np.testing.assert_allclose(result.counterfactual.logit_diff, ld_cf, atol=2e-5)
    np.testing.assert_allclose(result.normalized, (ld - ld_orig) / (ld_cf - ld_orig), atol=1e-4)
    assert (result.iia == iia).all()
    # Skipping leaves out the cells before the first differing token (their patch is a no-op; the values
    # above include them), and tiles may cut more chunks than the batch size alone; never fewer.
    pair = prepare_inputs(loaded.tokenizer, ORIGINAL, COUNTERFACTUAL)
    first = int(torch.nonzero(pair.original_ids != pair.counterfactual_ids)[0, 0])
    assert first > 0
    per_position = result.logit_diff.size // len(result.positions)
    run = per_position * (len(result.positions) - (first if skip_layers else 0))
    least = 1 + -(-run // 7) + reuse_prefix
    assert result.forwards == least if not (reuse_prefix or skip_layers) else result.forwards >= least


def test_residual_sanity_properties(loaded: LoadedModel) -> None:
    n = resolve_architecture(loaded.model).num_layers
    result = sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=range(n + 1))
    changed = 2  # "a=1" vs "a=4": only the constant differs
    same = [p for p in result.positions if p != changed]
    # Layer 0's input is the token embedding: identical tokens give identical states, so no effect there.
    assert np.abs(result.logit_diff[0, same] - result.original.logit_diff).max() < 1e-5
    # Nothing after... no: nothing *before* the changed token can carry it (causal attention).
    assert np.abs(result.logit_diff[:, :changed] - result.original.logit_diff).max() < 1e-5
    # Swapping the whole final residual at the answer position reproduces the counterfactual run.
    assert result.normalized[-1, -1] == pytest.approx(1.0, abs=1e-4)
    assert result.layer_labels[-1] == "final"


def test_result_metadata(loaded: LoadedModel) -> None:
    result = sweep(loaded, ORIGINAL, COUNTERFACTUAL, site="attention_heads", layers=[1], positions=[2, 13])
    assert result.logit_diff.shape == (1, 2, 4)
    assert result.tokens[:3] == ["a", "=", "1"] and result.tokens[3] == "\\n"
    assert result.targets == {"ref depth 1": 2, "ref depth 2": 6, "query": 13, "final": 14}
    assert result.at_target("ref depth 1").shape == (1, 4) and result.at_target("final") is None
    assert (
        "o_proj" in result.definitions["site"] and "noising the original" in result.definitions["direction"]
    )
    assert result.answer.original_text == "1" and result.answer.counterfactual_text == "4"
    data = result.to_dict()
    assert data["site"] == "attention_heads" and len(data["normalized"][0]) == 2


def test_multi_token_answers_score_the_first_differing_token(loaded: LoadedModel) -> None:
    original = Program("a=12\n#a:", 12, {"answer_var": "a"})
    counterfactual = Program("a=15\n#a:", 15, {"answer_var": "a"})
    result = sweep(loaded, original, counterfactual, layers=[0])
    tok = loaded.tokenizer
    assert result.answer.prefix_ids == tok("1", add_special_tokens=False)["input_ids"]
    assert (
        tok.decode([result.answer.original_id]) == "2"
        and tok.decode([result.answer.counterfactual_id]) == "5"
    )
    assert len(result.tokens) == len(original.text) + 1 and "first differing token" in result.answer.note


def test_text_programs_use_the_models_own_answers(loaded: LoadedModel) -> None:
    with torch.no_grad():
        top = [
            int(
                loaded.model(input_ids=torch.tensor([loaded.tokenizer(t)["input_ids"]]))
                .logits[0, -1]
                .argmax()
            )
            for t in (ORIGINAL.text, COUNTERFACTUAL.text)
        ]
    if top[0] == top[1]:
        with pytest.raises(CausalTracingError, match="predicts"):
            sweep(loaded, ORIGINAL.text, COUNTERFACTUAL.text, layers=[0])
    else:
        result = sweep(loaded, ORIGINAL.text, COUNTERFACTUAL.text, layers=[0])
        assert (result.answer.original_id, result.answer.counterfactual_id) == tuple(top)
        assert result.answer.source == "model"


def test_bad_input_is_one_line_that_names_the_fix(loaded: LoadedModel) -> None:
    expected = r"15 tokens and counterfactual 16; they first differ at token 3 \('\\n' vs '0'\).*one digit"
    with pytest.raises(CausalTracingError, match=expected):
        sweep(loaded, ORIGINAL, Program("a=10\nb=a\nc=7\n#b:", 10))
    with pytest.raises(CausalTracingError, match="same answer '1'"):
        sweep(loaded, ORIGINAL, Program("a=1\nb=a\nc=8\n#b:", 1))
    with pytest.raises(CausalTracingError, match="unknown site 'neurons'; choose one of residual_stream"):
        sweep(loaded, ORIGINAL, COUNTERFACTUAL, site="neurons")
    with pytest.raises(CausalTracingError, match=r"choose layers in 0\.\."):
        sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[99])
    loaded.model.train()
    try:
        with pytest.raises(CausalTracingError, match=r"training mode.*call model\.eval\(\)"):
            sweep(loaded, ORIGINAL, COUNTERFACTUAL)
    finally:
        loaded.model.eval()


def test_unknown_architecture_names_the_supported_ones(loaded: LoadedModel) -> None:
    class Odd(torch.nn.Module):
        config = type("C", (), {"model_type": "mamba"})()

    odd = LoadedModel(Odd(), loaded.tokenizer, "odd", "x")
    with pytest.raises(
        UnsupportedArchitectureError, match="supports gpt2, gpt_neox, llama, mistral, qwen2, qwen3"
    ):
        sweep(odd, ORIGINAL, COUNTERFACTUAL)


def test_seed_api_takes_program_dicts(loaded: LoadedModel) -> None:
    programs = [
        {
            "original": ORIGINAL.text,
            "counterfactual": COUNTERFACTUAL.text,
            "expected_original": 1,
            "expected_counterfactual": 4,
            "variable_chain": ["b", "a"],
        }
    ]
    results = run_causal_tracing_experiment(loaded, programs, intervention_layers=[0, 1])
    assert len(results) == 1 and results[0].logit_diff.shape == (2, len(ORIGINAL.text))
    with pytest.raises(CausalTracingError, match="lacks expected_counterfactual"):
        run_causal_tracing_experiment(
            loaded, [{"original": "x", "counterfactual": "y", "expected_original": 1}]
        )


def test_seed_readme_example_runs_on_a_shallower_model(loaded: LoadedModel) -> None:
    programs = [
        {
            "original": "x = 5\ny = x * 2\n#y:",
            "counterfactual": "x = 3\ny = x * 2\n#y:",
            "expected_original": 10,
            "expected_counterfactual": 6,
            "variable_chain": ["y", "x"],
        }
    ]
    skipped = r"3 patchable layers \(0\.\.2\); intervention_layers 3\.\.27 skipped"
    with pytest.warns(UserWarning, match=skipped):
        (result,) = run_causal_tracing_experiment(loaded, programs, list(range(28)), "residual_stream")
    assert result.layer_labels == ["0", "1", "final"]
    assert result.targets["ref depth 1"] == 4 and result.targets["query"] == len("x = 5\ny = x * 2\n#")
    tok = loaded.tokenizer
    scored = (tok.decode([result.answer.original_id]), tok.decode([result.answer.counterfactual_id]))
    assert scored == ("1", "6")  # "10" vs "6": the first token already differs


def test_prefix_reuse_is_automatic_on_cpu_and_falls_back(loaded: LoadedModel, monkeypatch) -> None:
    auto = sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1])
    full = sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1], reuse_prefix=False)
    assert auto.forwards > full.forwards  # the clean key/value run plus about 8 chunks
    np.testing.assert_allclose(auto.logit_diff, full.logit_diff, atol=2e-5)

    def no_cache(*_: Any) -> None:
        raise CausalTracingError("no croppable key/value cache; use reuse_prefix=False")

    monkeypatch.setattr(engine, "_original_kv", no_cache)
    assert sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1]).forwards == full.forwards
    with pytest.raises(CausalTracingError, match="reuse_prefix=False"):
        sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1], reuse_prefix=True)


def test_a_pair_the_model_gets_wrong_is_swept_recorded_and_warned_once(loaded: LoadedModel) -> None:
    # An untrained model answers neither run right: nothing is refused, the result and its JSON say so.
    with pytest.warns(UnsolvedPairWarning) as caught:
        result = sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0])
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    message = str(caught[0].message)
    assert "original (top-1" in message and "expected '1'" in message and "expected '4'" in message
    assert result.original_correct is False and result.counterfactual_correct is False and not result.solved
    assert message in result.notes
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["original_correct"] is False and data["counterfactual_correct"] is False
    assert SweepResult.from_dict(data).original_correct is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0], warn_unsolved=False)


def test_a_program_longer_than_the_context_is_refused_before_any_forward(
    loaded: LoadedModel, monkeypatch
) -> None:
    def no_forward(*_: Any, **__: Any) -> None:
        raise AssertionError("a forward ran")

    monkeypatch.setattr(engine, "_cache_forward", no_forward)
    monkeypatch.setattr(engine, "_original_kv", no_forward)
    original, counterfactual = binding_pair(200, 2, 0, loaded.tokenizer)  # 803 tokens; the models take 512
    with pytest.raises(CausalTracingError, match=r"is 803 tokens but .* takes at most 512"):
        sweep(loaded, original, counterfactual)
    with pytest.raises(CausalTracingError, match=r"is 803 tokens but .* takes at most 512"):
        run_causal_tracing_experiment(loaded, [(original, counterfactual)])


# Two token lengths (15 and 11 tokens), interleaved so grouping by length is exercised.
PAIRS = [
    (ORIGINAL, COUNTERFACTUAL),
    (Program("a=3\nb=a\n#b:", 3, {"answer_var": "b"}), Program("a=8\nb=a\n#b:", 8, {"answer_var": "b"})),
    (Program("a=2\nb=a\nc=7\n#b:", 2, {"answer_var": "b"}), Program("a=6\nb=a\nc=7\n#b:", 6)),
    (Program("d=5\ne=d\n#e:", 5, {"answer_var": "e"}), Program("d=9\ne=d\n#e:", 9, {"answer_var": "e"})),
]


def _assert_same(batched: SweepResult, alone: SweepResult) -> None:
    assert batched.logit_diff.shape == alone.logit_diff.shape
    for name in ("logit_diff", "prob_cf"):
        np.testing.assert_allclose(batched.metric(name), alone.metric(name), atol=1e-5, rtol=0)
    # Random tiny models have LD_cf - LD_orig near 0, which magnifies float32 rounding in the normalized
    # effect.
    scale = abs(alone.counterfactual.logit_diff - alone.original.logit_diff)
    np.testing.assert_allclose(batched.normalized, alone.normalized, atol=1e-5 / min(scale, 1.0), rtol=0)
    assert (batched.iia == alone.iia).all()
    assert batched.original.logit_diff == pytest.approx(alone.original.logit_diff, abs=1e-5)
    assert batched.counterfactual.logit_diff == pytest.approx(alone.counterfactual.logit_diff, abs=1e-5)
    assert (batched.tokens, batched.targets, batched.answer) == (alone.tokens, alone.targets, alone.answer)


@pytest.mark.parametrize(("reuse_prefix", "skip_layers"), STRATEGIES, ids=STRATEGY_IDS)
@pytest.mark.parametrize("site", ["residual_stream", "attention_heads", "mlp"])
def test_sweep_pairs_equals_one_sweep_per_pair(
    loaded: LoadedModel, site: str, reuse_prefix: bool, skip_layers: bool
) -> None:
    n = resolve_architecture(loaded.model).num_layers
    layers = list(range(n + 1)) if site == "residual_stream" else list(range(n))
    # batch_size 40 > the cells of one pair for heads at 2 positions, < for the others: chunks mix pairs
    # in some cases and split a pair in others.
    positions = [[2, 13], None, [2, 6], None] if site == "attention_heads" else None
    batched = sweep_pairs(
        loaded,
        PAIRS,
        site=site,
        layers=layers,
        positions=positions,
        batch_size=40,
        reuse_prefix=reuse_prefix,
        skip_layers=skip_layers,
    )
    assert len(batched) == len(PAIRS)
    wheres = positions or [None] * len(PAIRS)
    for (original, counterfactual), where, got in zip(PAIRS, wheres, batched):
        # Against the one-pass sweep of one pair: every layer runs for every row.
        alone = sweep(
            loaded,
            original,
            counterfactual,
            site=site,
            layers=layers,
            positions=where,
            batch_size=7,
            reuse_prefix=False,
            skip_layers=False,
        )
        _assert_same(got, alone)


def test_sweep_pairs_matches_the_hook_reference_and_mixes_pairs_in_a_chunk(loaded: LoadedModel) -> None:
    n = resolve_architecture(loaded.model).num_layers
    layers = list(range(n + 1))
    # 3 layers x 1 position per pair: one chunk of 64 rows holds all four pairs, of both lengths (the
    # 11-token ones left-padded to 15), at positions that fall in the pads' range for the longer ones.
    positions = [[13], [9], [6], [2]]
    results = sweep_pairs(
        loaded, PAIRS, layers=layers, positions=positions, batch_size=64, reuse_prefix=False
    )
    # One block: one cache forward + one patched forward, shared by all four pairs.
    assert [result.forwards for result in results] == [2, 2, 2, 2]
    for (original, counterfactual), where, result in zip(PAIRS, positions, results):
        ld, prob, iia, ld_orig, ld_cf = reference_sweep(
            loaded, original, counterfactual, "residual_stream", layers
        )
        np.testing.assert_allclose(result.logit_diff, ld[:, where], atol=2e-5)
        np.testing.assert_allclose(result.prob_cf, prob[:, where], atol=1e-6)
        assert (result.iia == iia[:, where]).all()
        assert result.original.logit_diff == pytest.approx(ld_orig, abs=2e-5)
        assert result.counterfactual.logit_diff == pytest.approx(ld_cf, abs=2e-5)


def test_cells_before_the_first_differing_token_run_no_forward(loaded: LoadedModel) -> None:
    # "a=1..." against "a=4...": positions 0 and 1 read the same tokens in both programs.
    result = sweep(loaded, ORIGINAL, COUNTERFACTUAL, positions=[0, 1], reuse_prefix=False)
    assert result.forwards == 1  # the cache run only
    assert np.allclose(result.logit_diff, result.original.logit_diff)
    assert np.allclose(result.normalized, 0.0)
    assert np.allclose(result.prob_cf, result.original.prob_counterfactual)
    brute = sweep(loaded, ORIGINAL, COUNTERFACTUAL, positions=[0, 1], reuse_prefix=False, skip_layers=False)
    assert brute.forwards == 2
    _assert_same(result, brute)


def test_sweep_pairs_forwards_and_blocks_are_bounded_by_batch_size_and_memory(
    loaded: LoadedModel, monkeypatch
) -> None:
    seen: list[int] = []
    real = engine._patched_logits

    def spy(nn, arch, site, input_ids, cells, *rest):
        seen.append(int(input_ids.shape[0]))  # originals held by the block
        assert cells.shape[0] <= 10
        return real(nn, arch, site, input_ids, cells, *rest)

    monkeypatch.setattr(engine, "_patched_logits", spy)
    many = [PAIRS[0], PAIRS[2]] * 6  # 12 pairs of one length, 2 layers x 2 positions = 4 cells each
    results = sweep_pairs(loaded, many, layers=[0, 1], positions=[2, 6], batch_size=10, reuse_prefix=False)
    assert len(results) == 12 and set(seen) == {12}  # one block: 12 small caches fit the budget
    # A block may keep a quarter of the budget: here what three pairs keep, so blocks of three pairs.
    arch = resolve_architecture(loaded.model)
    plan = plan_pair(loaded, arch, *PAIRS[0], "residual_stream", [0, 1], [2, 6], None)
    monkeypatch.setattr(engine, "memory_budget", lambda device: 4 * 3 * engine._pair_bytes(plan))
    seen.clear()
    bounded = sweep_pairs(loaded, many, layers=[0, 1], positions=[2, 6], batch_size=10, reuse_prefix=False)
    assert set(seen) == {3}
    first = sweep(loaded, *PAIRS[0], layers=[0, 1], positions=[2, 6], reuse_prefix=False)
    _assert_same(results[6], first)
    _assert_same(bounded[6], first)


def test_pairs_much_shorter_than_a_blocks_longest_get_a_block_of_their_own(loaded: LoadedModel) -> None:
    short = (Program("a=3\n#a:", 3, {"answer_var": "a"}), Program("a=8\n#a:", 8, {"answer_var": "a"}))
    pairs = [PAIRS[0], short]  # 15 and 6 tokens: under PAD_RATIO of 15, so not padded together
    results = sweep_pairs(loaded, pairs, layers=[0, 1], reuse_prefix=False, skip_layers=False)
    assert (engine.PAD_RATIO * 15 > 6) and [r.forwards for r in results] == [2, 2]  # a block each
    for pair, got in zip(pairs, results):
        _assert_same(got, sweep(loaded, *pair, layers=[0, 1], reuse_prefix=False, skip_layers=False))


@pytest.mark.parametrize(("reuse_prefix", "skip_layers"), STRATEGIES, ids=STRATEGY_IDS)
def test_sweep_pairs_takes_layers_per_pair(
    loaded: LoadedModel, reuse_prefix: bool, skip_layers: bool
) -> None:
    # The same pair three times at different layers and positions, and one other pair at all layers: the
    # counterfactual cache of a shared forward holds the union of the layers.
    layers, positions = [[2], [0, 1], None, [1]], [[6, 13], None, [2], [2, 6]]
    pairs = [PAIRS[0], PAIRS[0], PAIRS[2], PAIRS[0]]
    batched = sweep_pairs(
        loaded, pairs, layers=layers, positions=positions, batch_size=16, reuse_prefix=reuse_prefix,
        skip_layers=skip_layers,
    )  # fmt: skip
    for (original, counterfactual), at, where, got in zip(pairs, layers, positions, batched):
        alone = sweep(loaded, original, counterfactual, layers=at, positions=where, reuse_prefix=False,
                      skip_layers=False)  # fmt: skip
        assert got.layers == alone.layers
        _assert_same(got, alone)


def test_sweep_pairs_bad_input_is_refused_before_any_forward(loaded: LoadedModel, monkeypatch) -> None:
    def no_forward(*_: Any, **__: Any) -> None:
        raise AssertionError("a forward ran")

    monkeypatch.setattr(engine, "_cache_forward", no_forward)
    bad = (ORIGINAL, Program("a=10\nb=a\nc=7\n#b:", 10))
    with pytest.raises(CausalTracingError, match="15 tokens and counterfactual 16"):
        sweep_pairs(loaded, [PAIRS[0], bad])
    with pytest.raises(CausalTracingError, match="2 per-pair lists for 3 pairs"):
        sweep_pairs(loaded, PAIRS[:3], positions=[[1], None])
    with pytest.raises(CausalTracingError, match="layers has 2 per-pair lists for 3 pairs"):
        sweep_pairs(loaded, PAIRS[:3], layers=[[1], None])
    assert sweep_pairs(loaded, []) == []


def test_a_served_model_is_refused_in_one_line() -> None:
    with pytest.raises(WeightsRequiredError, match="a patching sweep needs the model's weights") as caught:
        sweep("openai:m@http://127.0.0.1:9/v1", ORIGINAL, COUNTERFACTUAL)
    assert "\n" not in str(caught.value)


# ---- skipping what a patch cannot change ----


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def deeper(request: pytest.FixtureRequest) -> LoadedModel:
    """A random 4-layer model of each family: chunks that start at layers 1, 2, 3 and the final residual."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from debug.tokenizer import build_char_tokenizer
    from debug.train import build_decoder

    tok = build_char_tokenizer()
    torch.manual_seed(1)
    if request.param == "qwen3":
        model = build_decoder(tok, layers=4, hidden=32, heads=4, kv_heads=2, intermediate=64)
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=4, n_head=4, n_positions=64)
        model = GPT2LMHeadModel(config)
    return LoadedModel(model.float().eval(), tok, f"deeper {request.param}", "test")


@pytest.mark.parametrize("reuse_prefix", [False, True], ids=["skip", "prefix+skip"])
@pytest.mark.parametrize("site", ["residual_stream", "attention_heads", "mlp"])
def test_fine_tiles_equal_the_hook_reference_and_the_one_pass_sweep(
    deeper: LoadedModel, site: str, reuse_prefix: bool, monkeypatch
) -> None:
    # A forward that costs nothing beyond its arithmetic: the CPU plan cuts the finest tiles it may.
    monkeypatch.setattr(engine, "FORWARD_SECONDS", (0.0, 0.0))
    layers = [0, 1, 2, 3, 4] if site == "residual_stream" else [0, 1, 2, 3]
    heads = [0, 3] if site == "attention_heads" else None
    kwargs = dict(site=site, layers=layers, heads=heads, warn_unsolved=False)
    skipped = sweep(deeper, ORIGINAL, COUNTERFACTUAL, reuse_prefix=reuse_prefix, skip_layers=True, **kwargs)
    one_pass = sweep(deeper, ORIGINAL, COUNTERFACTUAL, reuse_prefix=False, skip_layers=False, **kwargs)
    assert skipped.forwards >= one_pass.forwards + 3  # a chunk per layer band at least, not one chunk
    _assert_same(skipped, one_pass)
    ld, prob, iia, _, _ = reference_sweep(deeper, ORIGINAL, COUNTERFACTUAL, site, layers, heads)
    np.testing.assert_allclose(skipped.logit_diff, ld, atol=2e-5)
    np.testing.assert_allclose(skipped.prob_cf, prob, atol=1e-6)
    assert (skipped.iia == iia).all()


def test_layers_below_a_chunk_never_run(deeper: LoadedModel) -> None:
    arch = resolve_architecture(deeper.model)
    tokens: list[int] = []
    mlp = get_path(deeper.model, arch.mlp_path(1))
    handle = mlp.register_forward_hook(lambda m, args, out: tokens.append(out.shape[0] * out.shape[1]))
    try:
        n = len(ORIGINAL.text)  # one token per character
        sweep(deeper, ORIGINAL, COUNTERFACTUAL, layers=[2, 3], reuse_prefix=False, warn_unsolved=False)
        assert tokens == [2 * n]  # the cache forward alone: no patched row runs layer 1
        tokens.clear()
        sweep(deeper, ORIGINAL, COUNTERFACTUAL, layers=[2, 3], reuse_prefix=False, skip_layers=False)
        assert sum(tokens) == 2 * n + 2 * n * n  # every patched row runs it
    finally:
        handle.remove()


def test_tiles_cover_every_row_once_and_chunks_stay_in_one_tile() -> None:
    grid = torch.cartesian_prod(torch.arange(3), torch.arange(5), torch.arange(10))  # pair, layer, position
    rows = torch.cat([grid[:, :1], torch.arange(len(grid))[:, None], grid[:, 1:]], dim=1).numpy()
    order, bounds = engine._tile_order(rows, seq_len=10, size=4, bands=(2, 3))
    assert sorted(order.tolist()) == list(range(len(rows)))
    assert [a for a, _ in bounds] == [0] + [b for _, b in bounds[:-1]] and bounds[-1][1] == len(rows)
    for a, b in bounds:
        chunk = rows[order[a:b]]
        assert 1 <= b - a <= 4
        layer_band = np.unique(np.searchsorted([0, 3], chunk[:, 2], side="right"))  # layers 0-2 | 3-4
        assert len(layer_band) == 1 and len(np.unique(chunk[:, 3] * 3 // 10)) == 1


# ---- remote execution (nnsight's NDIF path; "local" runs the serialized requests here) ----


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir: Path, load_tiny) -> LoadedModel:
    return load_tiny(tiny_qwen3_dir)


@pytest.mark.parametrize("site", ["residual_stream", "attention_heads"])
def test_remote_local_equals_the_local_sweep(qwen3: LoadedModel, site: str) -> None:
    kwargs = dict(site=site, layers=[0, 2] if site == "residual_stream" else [1], batch_size=16)
    if site == "attention_heads":
        kwargs["positions"] = [2, 6, 9]
    kwargs["warn_unsolved"] = False
    # The remote path skips layers as the local default does: nnsight serializes `.skip` like any edit.
    remote = sweep_pairs(qwen3, PAIRS[:2], remote="local", **kwargs)
    local = sweep_pairs(qwen3, PAIRS[:2], reuse_prefix=False, skip_layers=False, **kwargs)
    # One block (the 11-token pair left-padded to 15): one cache run, no key/value run, and chunks of at
    # most 16 of the cells from each pair's first differing token (position 2) on.
    per_position = [r.logit_diff[:, 0].size for r in remote]  # layers (x heads)
    rows = sum(int((np.asarray(r.positions) >= 2).sum()) * n for r, n in zip(remote, per_position))
    assert remote[0].forwards == remote[1].forwards == 1 + -(-rows // 16)
    for got, alone in zip(remote, local):
        _assert_same(got, alone)


def test_remote_by_id_plans_on_a_weightless_skeleton_and_equals_the_local_sweep(
    qwen3: LoadedModel, tiny_qwen3_dir: Path, monkeypatch
) -> None:
    skeleton = resolve_model(str(tiny_qwen3_dir), remote="local")
    assert isinstance(skeleton, RemoteModel) and not skeleton.model.training
    assert {p.device.type for p in skeleton.model.parameters()} == {"meta"}  # nothing loaded yet

    def no_weights_here(*args, **kwargs):
        raise AssertionError("a remote sweep of a model id loaded its weights through debug.models.load")

    monkeypatch.setattr("debug.causal.forward.load", no_weights_here)
    kwargs = dict(layers=[0, 2], batch_size=16, warn_unsolved=False)
    remote = sweep_pairs(str(tiny_qwen3_dir), PAIRS[:2], remote="local", **kwargs)
    local = sweep_pairs(qwen3, PAIRS[:2], reuse_prefix=False, skip_layers=False, **kwargs)
    for got, alone in zip(remote, local):
        _assert_same(got, alone)


def test_debug_patch_remote_local_by_folder_loads_no_weights_and_matches_in_process(
    tiny_qwen3_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from debug.causal.cli import main_patch

    argv = ["--model", str(tiny_qwen3_dir), "--seq-len", "6", "--num-hops", "1"]
    assert main_patch([*argv, "--results-dir", str(tmp_path / "here")]) == 0

    def no_weights_here(*args, **kwargs):
        raise AssertionError("debug patch --remote local loaded the weights through debug.models.load")

    monkeypatch.setattr("debug.causal.forward.load", no_weights_here)
    assert main_patch([*argv, "--remote", "local", "--results-dir", str(tmp_path / "remote")]) == 0
    here, remote = (
        json.loads(next((tmp_path / name).glob("*/intervention_results.json")).read_text())["programs"][0]
        for name in ("here", "remote")
    )
    assert remote["original"] == here["original"] and remote["counterfactual"] == here["counterfactual"]
    np.testing.assert_allclose(remote["sweep"]["logit_diff"], here["sweep"]["logit_diff"], atol=1e-4)


def test_remote_without_a_key_or_a_hub_model_is_one_line_before_any_forward(
    qwen3: LoadedModel, monkeypatch
) -> None:
    import nnsight

    def no_forward(*_: Any, **__: Any) -> None:
        raise AssertionError("a forward ran")

    monkeypatch.setattr(engine, "_cache_forward", no_forward)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.raises(
        CausalTracingError, match="remote=True needs an NDIF API key: set NDIF_API_KEY"
    ) as caught:
        sweep(qwen3, ORIGINAL, COUNTERFACTUAL, remote=True)
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    with pytest.raises(CausalTracingError, match="is a local folder or an embedded model"):
        sweep(qwen3, ORIGINAL, COUNTERFACTUAL, remote=True)  # a save_pretrained folder
    with pytest.raises(CausalTracingError, match="is a local folder or an embedded model"):
        sweep("embedded:binder", ORIGINAL, COUNTERFACTUAL, remote=True)
    with pytest.raises(CausalTracingError, match="remote must be False, True"):
        sweep(qwen3, ORIGINAL, COUNTERFACTUAL, remote="ndif")
    with pytest.raises(CausalTracingError, match="pass reuse_prefix=False with remote"):
        sweep(qwen3, ORIGINAL, COUNTERFACTUAL, remote="local", reuse_prefix=True)


def test_debug_patch_remote_ndif_without_a_key_stops_in_one_line(monkeypatch, capsys) -> None:
    import nnsight

    from debug.causal.cli import main_patch

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    assert main_patch(["--remote", "ndif", "--model", "Qwen/Qwen3-0.6B"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("debug patch: remote=True needs an NDIF API key") and err.count("\n") == 1
    assert main_patch(["--remote", "local", "--method", "lens"]) == 2
    assert "--remote runs --method sweep only" in capsys.readouterr().err
