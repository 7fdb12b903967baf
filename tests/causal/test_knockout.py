"""Attention knockout against a plain-torch attention that edits the scores (Qwen3- and GPT-2-style)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from debug.causal.inputs import CausalTracingError
from debug.causal.knockout import (
    attention_knockout,
    knockout_by_layer,
    knockout_programs,
    line_positions,
    plot_knockout,
)
from debug.models import LoadedModel
from debug.programs import Program

pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})
MODULES = {
    "qwen3": "transformers.models.qwen3.modeling_qwen3",
    "gpt2": "transformers.models.gpt2.modeling_gpt2",
}


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def arch(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"tiny_{request.param}_dir")


def _reference_logits(
    loaded: LoadedModel, arch: str, ids: torch.Tensor, blocked: torch.Tensor, layers: set[int], monkeypatch
) -> torch.Tensor:
    """Eager attention re-implemented: scores, causal -inf, knocked scores -inf, softmax, weighted values."""

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        groups = query.shape[1] // key.shape[1]  # grouped-query attention: repeat the key/value heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = query @ key.transpose(-1, -2) * scale
        seq = scores.shape[-1]
        cut = ~torch.ones(seq, seq, dtype=torch.bool).tril()
        if module.layer_idx in layers:
            cut = cut | blocked
        scores = scores.masked_fill(cut, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return (weights @ value).transpose(1, 2), weights

    monkeypatch.setattr(importlib.import_module(MODULES[arch]), "eager_attention_forward", attention)
    try:
        with torch.no_grad():
            return loaded.model(input_ids=ids[None]).logits[0, -1].float()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_knockout_equals_the_score_editing_reference(
    arch, attn: str, load_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, folder = arch
    loaded = load_tiny(folder, attn_implementation=attn)
    reference_model = load_tiny(folder, attn_implementation="eager")
    tok = loaded.tokenizer
    ids = torch.tensor(tok(ORIGINAL.text)["input_ids"])
    cf_ids = torch.tensor(tok(COUNTERFACTUAL.text)["input_ids"])
    o_id, c_id = (tok(a, add_special_tokens=False)["input_ids"][0] for a in ("1", "4"))
    queries, keys = [len(ids) - 1, len(ids) - 2], [2, 6]
    blocked = torch.zeros(len(ids), len(ids), dtype=torch.bool)
    blocked[torch.tensor(queries)[:, None], torch.tensor(keys)[None]] = True
    sets = [[0], [1], [0, 1]]
    result = knockout_by_layer(loaded, (ORIGINAL, COUNTERFACTUAL), queries, keys, sets)
    plain = _reference_logits(reference_model, name, ids, blocked, set(), monkeypatch)
    cf_plain = _reference_logits(reference_model, name, cf_ids, blocked, set(), monkeypatch)
    ld_orig, ld_cf = float(plain[c_id] - plain[o_id]), float(cf_plain[c_id] - cf_plain[o_id])
    assert result.baseline.logit_diff == pytest.approx(ld_orig, abs=2e-5)
    for row, layers in enumerate(sets):
        logits = _reference_logits(reference_model, name, ids, blocked, set(layers), monkeypatch)
        probs = torch.softmax(logits, -1)
        assert result.logit_diff[row] == pytest.approx(float(logits[c_id] - logits[o_id]), abs=2e-5)
        assert result.prob_original[row] == pytest.approx(float(probs[o_id]), abs=1e-6)
        assert result.prob_cf[row] == pytest.approx(float(probs[c_id]), abs=1e-6)
        expected = (float(logits[c_id] - logits[o_id]) - ld_orig) / (ld_cf - ld_orig)
        assert result.normalized[row] == pytest.approx(expected, abs=1e-4)
        assert bool(result.iia[row]) == (int(logits.argmax()) == c_id)
    # The knockout changes something (else the comparison above says little).
    assert np.abs(result.logit_diff - result.baseline.logit_diff).max() > 1e-4


def test_single_program_targets_lines_and_plot(arch, load_tiny) -> None:
    loaded = load_tiny(arch[1], attn_implementation="sdpa")
    result = attention_knockout(loaded, (ORIGINAL.text, 1), "final", "line:ref depth 1", layers=None)
    assert result.key_positions == [0, 1, 2, 3] and result.query_positions == [len(ORIGINAL.text) - 1]
    assert result.layer_sets == [[0, 1]] and np.isnan(result.logit_diff).all()
    assert 0 <= result.prob_original[0] <= 1 and result.to_dict()["method"] == "attention_knockout"
    assert "-inf before the softmax" in result.definitions["intervention"]
    assert line_positions(result.tokens, 6) == [4, 5, 6, 7]
    assert len(plot_knockout(result).axes) == 1


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_knockout_programs_batches_what_one_knockout_at_a_time_measures(arch, attn: str, load_tiny) -> None:
    loaded = load_tiny(arch[1], attn_implementation=attn)
    # Two lengths (two forwards), and a one-line program without a "ref depth 2" target.
    programs = [
        ORIGINAL,
        Program("a=2\nb=a\nc=b\n#c:", 2, {"answer_var": "c"}),
        Program("a=3\nb=a\nc=9\n#b:", 3, {"answer_var": "b"}),
        Program("x=5\n#x:", 5, {"answer_var": "x"}),
    ]
    cuts = {"root": "line:ref depth 1", "second": "line:ref depth 2", "query": [0]}
    got = knockout_programs(loaded, programs, "final", cuts)
    assert set(got) == set(cuts) and all(len(v) == len(programs) for v in got.values())
    assert got["second"][3] is None and got["root"][3] is not None
    for index, program in enumerate(programs):
        for name, keys in cuts.items():
            if got[name][index] is None:
                continue
            one = attention_knockout(loaded, program, "final", keys)
            assert got[name][index].prob_original == pytest.approx(float(one.prob_original[0]), abs=1e-5)
            assert got[name][index].answer_kept == bool(one.original_top1[0])


def test_knockout_bad_input_fails_before_any_forward(
    arch, load_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_tiny(arch[1], attn_implementation="sdpa")

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran")

    monkeypatch.setattr(loaded.model, "forward", no_forward)
    pair = (ORIGINAL, COUNTERFACTUAL)
    n = len(ORIGINAL.text)
    with pytest.raises(
        CausalTracingError, match=rf"query_positions {n} is outside the prompt: .*0\.\.{n - 1}"
    ):
        attention_knockout(loaded, pair, [n], [0])
    with pytest.raises(CausalTracingError, match="key_positions 'nope' is not a position or target"):
        attention_knockout(loaded, pair, [n - 1], "nope")
    with pytest.raises(CausalTracingError, match=r"layer set \[2\].*layers 0\.\.1"):
        attention_knockout(loaded, pair, [n - 1], [0], layers=[2])
    with pytest.raises(CausalTracingError, match="would attend to nothing"):
        attention_knockout(loaded, pair, [1], [0, 1])
    with pytest.raises(CausalTracingError, match="needs answers"):
        attention_knockout(loaded, "a=1\n#a:", [0], [0])
    with pytest.raises(CausalTracingError, match="cut 'all': query position 1 would attend to nothing"):
        knockout_programs(loaded, [ORIGINAL, ORIGINAL], [1], {"all": [0, 1]})
    loaded.model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(CausalTracingError, match="needs eager or sdpa"):
            attention_knockout(loaded, pair, [n - 1], [0])
    finally:
        loaded.model.config._attn_implementation = "sdpa"


def test_debug_patch_method_knockout_saves_json_and_picture(
    tiny_qwen3_dir: Path, tmp_path: Path, capsys
) -> None:
    import json

    from debug.causal.cli import main_patch

    argv = ["--method", "knockout", "--model", str(tiny_qwen3_dir), "--num-hops", "2", "--seq-len", "6"]
    assert main_patch(argv + ["--keys", "line:ref depth 1", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("knockout-") and str(folder) in out
    assert json.loads((folder / "knockout.json").read_text())["model"] == str(tiny_qwen3_dir)
    assert (folder / "knockout.png").stat().st_size > 0


def test_a_boolean_attention_mask_gets_a_boolean_knockout(arch, load_tiny) -> None:
    from debug.causal.architectures import get_path, resolve_architecture
    from debug.causal.knockout import attention_module_path

    loaded = load_tiny(arch[1], attn_implementation="sdpa")
    pair = (ORIGINAL, COUNTERFACTUAL)
    n = len(ORIGINAL.text)
    expected = attention_knockout(loaded, pair, [n - 1], [2, 6]).prob_original
    seen: list[torch.dtype] = []

    def boolean_mask(module, args, kwargs):
        seq = kwargs["hidden_states"].shape[1] if "hidden_states" in kwargs else args[0].shape[1]
        return args, {**kwargs, "attention_mask": torch.ones(1, 1, seq, seq, dtype=torch.bool).tril()}

    def recording(forward):
        def wrapped(*args, **kwargs):
            seen.append(kwargs["attention_mask"].dtype)  # what the attention itself receives
            return forward(*args, **kwargs)

        return wrapped

    model = loaded.model
    arch_ = resolve_architecture(model)
    modules = [get_path(model, attention_module_path(arch_, layer)) for layer in range(arch_.num_layers)]
    # Registered first, so it runs before the knockout's hook: the knockout then finds a boolean mask.
    handles = [m.register_forward_pre_hook(boolean_mask, with_kwargs=True) for m in modules]
    for module in modules:
        module.forward = recording(module.forward)
    try:
        got = attention_knockout(loaded, pair, [n - 1], [2, 6])
    finally:
        for handle in handles:
            handle.remove()
        for module in modules:
            del module.forward
    np.testing.assert_allclose(got.prob_original, expected, atol=1e-6)
    assert seen and all(dtype == torch.bool for dtype in seen)
