"""The logit lens against a manual reference: hidden states, final norm and lm_head by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debug.causal import lens as lens_module
from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.inputs import CausalTracingError
from debug.causal.lens import logit_lens, logit_lens_programs, plot_logit_lens
from debug.models import LoadedModel
from debug.programs import Program

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})


def _reference(loaded: LoadedModel, text: str) -> torch.Tensor:
    """`[layers + 1, vocab]` lens logits: output_hidden_states, then the final norm and lm_head by hand."""
    model = loaded.model
    arch = resolve_architecture(model)
    ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        # hidden_states[l] (l < num_layers) is layer l's input; the model's own logits are the final lens.
        inputs = torch.stack([out.hidden_states[layer][0, -1] for layer in range(arch.num_layers)])
        norm = get_path(model, arch.spec.final_norm)
        lens = model.lm_head(norm(inputs))
        return torch.cat([lens, out.logits[0, -1:]]).float()


def test_lens_equals_the_manual_reference(loaded: LoadedModel) -> None:
    result = logit_lens(loaded, ORIGINAL, COUNTERFACTUAL)
    reference = _reference(loaded, ORIGINAL.text)
    tok = loaded.tokenizer
    o_id = tok("1", add_special_tokens=False)["input_ids"][0]
    c_id = tok("4", add_special_tokens=False)["input_ids"][0]
    assert result.answer_id == o_id and result.counterfactual_id == c_id
    np.testing.assert_allclose(result.logit, reference[:, o_id].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.prob, torch.softmax(reference, -1)[:, o_id].numpy(), atol=1e-6)
    np.testing.assert_allclose(
        result.logit_diff, (reference[:, c_id] - reference[:, o_id]).numpy(), atol=1e-5
    )
    ranks = 1 + (reference > reference[:, o_id : o_id + 1]).sum(-1)
    assert result.rank.tolist() == ranks.tolist()
    top = reference.argmax(-1).tolist()
    first = next((i for i, t in enumerate(top) if t == o_id), None)
    assert result.first_decoding_layer == first
    ok = [t == o_id for t in top]
    stays = next((i for i in range(len(ok)) if all(ok[i:])), None)
    assert result.stays_from_layer == stays
    assert (
        result.layer_labels[-1] == "final"
        and len(result.layers) == resolve_architecture(loaded.model).num_layers + 1
    )
    data = result.to_dict()
    assert data["method"] == "logit_lens" and "final norm" in " ".join(data["definitions"].values())


def test_lens_without_counterfactual_and_plot(loaded: LoadedModel) -> None:
    result = logit_lens(loaded, (ORIGINAL.text, ORIGINAL.answer))
    assert result.logit_diff is None and result.position == len(ORIGINAL.text) - 1
    fig = plot_logit_lens(result)
    assert len(fig.axes) == 2


def test_lens_bad_input_fails_before_any_forward(
    loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran")

    monkeypatch.setattr(loaded.model, "forward", no_forward)
    with pytest.raises(CausalTracingError, match="needs a program with an answer"):
        logit_lens(loaded, "a=1\n#a:")
    with pytest.raises(CausalTracingError, match="same answer"):
        logit_lens(loaded, ORIGINAL, ORIGINAL)
    with pytest.raises(CausalTracingError, match="takes at most"):
        logit_lens(loaded, Program("a=1\n" * 200 + "#a:", 1))
    loaded.model.train()
    try:
        with pytest.raises(CausalTracingError, match="model.eval"):
            logit_lens(loaded, ORIGINAL)
    finally:
        loaded.model.eval()


def test_debug_patch_method_lens_saves_json_and_picture(tiny_qwen3_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from debug.causal.cli import main_patch

    argv = ["--method", "lens", "--model", str(tiny_qwen3_dir), "--num-hops", "2", "--seq-len", "6"]
    assert main_patch(argv + ["--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("lens-") and str(folder) in out
    assert json.loads((folder / "lens.json").read_text())["model"] == str(tiny_qwen3_dir)
    assert (folder / "lens.png").stat().st_size > 0


def test_debug_patch_method_refuses_bad_input_in_one_line(
    tiny_qwen3_dir: Path, tmp_path: Path, capsys
) -> None:
    from debug.causal.cli import main_patch

    argv = ["--model", str(tiny_qwen3_dir), "--results-dir", str(tmp_path), "--seq-len", "6"]
    assert main_patch(argv + ["--method", "das", "--dim", "999"]) == 2
    # The model's first load in this process may print transformers' loading bar first; the error is one line.
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("debug patch:")]
    assert len(lines) == 1
    assert lines[0].startswith("debug patch: dim 999: choose a subspace dimension in 1..32")
    assert main_patch(argv + ["--method", "knockout", "--query", "500"]) == 2
    assert "query_positions 500 is outside the prompt" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_many_programs_read_in_one_forward_as_each_does_alone(loaded: LoadedModel, monkeypatch) -> None:
    # Three token lengths: the shorter programs are left-padded in the batched forward.
    longer = Program("a=2\nb=a\nc=7\nd=c\n#b:", 2, {"answer_var": "b"})
    longer_cf = Program("a=5\nb=a\nc=7\nd=c\n#b:", 5, {"answer_var": "b"})
    short = Program("a=3\n#a:", 3, {"answer_var": "a"})
    programs = [ORIGINAL, longer, short]
    counterfactuals = [COUNTERFACTUAL, longer_cf, None]
    forwards = []
    real = lens_module.hooked_forward
    monkeypatch.setattr(lens_module, "hooked_forward", lambda *a, **k: forwards.append(1) or real(*a, **k))
    batched = logit_lens_programs(loaded, programs, counterfactuals)
    assert len(forwards) == 1
    monkeypatch.undo()
    for program, cf, got in zip(programs, counterfactuals, batched):
        alone = logit_lens(loaded, program, cf)
        np.testing.assert_allclose(got.logit, alone.logit, atol=1e-5)
        np.testing.assert_allclose(got.prob, alone.prob, atol=1e-6)
        assert got.rank.tolist() == alone.rank.tolist() and got.top1 == alone.top1
        assert (got.answer_id, got.counterfactual_id, got.tokens) == (
            alone.answer_id, alone.counterfactual_id, alone.tokens
        )  # fmt: skip
        if cf is None:
            assert got.logit_diff is None
        else:
            np.testing.assert_allclose(got.logit_diff, alone.logit_diff, atol=1e-5)
    # ...and each equals the hand-made reference of its own unpadded program.
    np.testing.assert_allclose(
        batched[1].logit, _reference(loaded, longer.text)[:, batched[1].answer_id], atol=1e-5
    )
    with pytest.raises(CausalTracingError, match="one \\(or None\\) per program"):
        logit_lens_programs(loaded, programs, counterfactuals[:2])
