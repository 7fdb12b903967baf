"""Path patching against a plain-torch reference that adds the sender's change to the receivers' inputs.

The sender's change is its (counterfactual - original) head output through the output projection, at every
position or only at the sender positions asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.forward import hidden_arg, with_hidden_arg
from debug.causal.inputs import CausalTracingError
from debug.causal.path_patching import path_patch, path_patch_heads, path_patch_hops, plot_path_patching
from debug.models import LoadedModel
from debug.programs import Program

pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})


def _forward(model, ids, hooks) -> torch.Tensor:
    handles = [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in hooks]
    try:
        with torch.no_grad():
            return model(input_ids=ids[None]).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()


def _capture(model, ids, module) -> torch.Tensor:
    box = []
    _forward(model, ids, [(module, lambda m, a, k: box.append(hidden_arg(a, k)[0].clone()))])
    return box[0]


def _out_weight_rows(module, sl) -> torch.Tensor:
    """`[head_dim, hidden]`: the output projection's rows for one head's slice of its input."""
    if isinstance(module, torch.nn.Linear):
        return module.weight[:, sl].T
    return module.weight[sl, :]  # GPT-2 Conv1D keeps (in, out)


def reference(loaded, sender, receivers, direct, positions=None) -> torch.Tensor:
    model, tok = loaded.model, loaded.tokenizer
    arch = resolve_architecture(model)
    ids, cf_ids = (torch.tensor(tok(p.text)["input_ids"]) for p in (ORIGINAL, COUNTERFACTUAL))
    s_layer, s_head = sender
    out_proj = get_path(model, arch.attn_out_path(s_layer))
    sl = slice(s_head * arch.head_dim, (s_head + 1) * arch.head_dim)
    change = _capture(model, cf_ids, out_proj)[:, sl] - _capture(model, ids, out_proj)[:, sl]
    delta = change @ _out_weight_rows(out_proj, sl)  # [seq, hidden]: what the sender adds to the residual
    if positions is not None:
        keep = torch.zeros(delta.shape[0], 1)
        keep[positions] = 1.0
        delta = delta * keep  # the sender's counterfactual output only at its positions
    hooks = []
    for r_layer in sorted({r[0] for r in receivers}):
        layer = get_path(model, arch.layer_path(r_layer))
        r_proj = get_path(model, arch.attn_out_path(r_layer))
        # The receiver layer computed from (original input + the sender's change) and nothing else changed.
        box: list[torch.Tensor] = []
        grab = box.append
        _forward(
            model,
            ids,
            [
                (layer, lambda m, a, k: with_hidden_arg(a, k, hidden_arg(a, k) + delta)),
                (r_proj, lambda m, a, k, grab=grab: grab(hidden_arg(a, k)[0].clone())),
            ],
        )
        recorded = box[0]
        heads = [r[1] for r in receivers if r[0] == r_layer]

        def put(m, a, k, recorded=recorded, heads=heads):
            x = hidden_arg(a, k).clone()
            for h in heads:
                hs = slice(h * arch.head_dim, (h + 1) * arch.head_dim)
                x[0, :, hs] = recorded[:, hs]
            return with_hidden_arg(a, k, x)

        hooks.append((r_proj, put))
    if direct:
        hooks.append(
            (
                get_path(model, arch.spec.final_norm),
                lambda m, a, k: with_hidden_arg(a, k, hidden_arg(a, k) + delta),
            )
        )
    return _forward(model, ids, hooks)


@pytest.mark.parametrize(
    "receivers",
    [["logits"], [(1, 0), (1, 2)], [(1, 3), "logits"], ["later"]],
    ids=["direct", "heads", "both", "later"],
)
def test_path_patch_equals_the_reference(loaded: LoadedModel, receivers) -> None:
    sender = (0, 1)
    result = path_patch(loaded, (ORIGINAL, COUNTERFACTUAL), sender, receivers)
    heads = [r for r in receivers if r not in ("logits", "later")] + (
        [(1, h) for h in range(4)] if "later" in receivers else []
    )
    logits = reference(loaded, sender, heads, "logits" in receivers)
    tok = loaded.tokenizer
    o_id, c_id = (tok(a, add_special_tokens=False)["input_ids"][0] for a in ("1", "4"))
    ld = float(logits[c_id] - logits[o_id])
    assert result.logit_diff[0] == pytest.approx(ld, abs=2e-5)
    assert result.prob_cf[0] == pytest.approx(float(torch.softmax(logits, -1)[c_id]), abs=1e-6)
    expected = (ld - result.original.logit_diff) / (
        result.counterfactual.logit_diff - result.original.logit_diff
    )
    assert result.normalized[0] == pytest.approx(expected, abs=1e-4)
    assert bool(result.iia[0]) == (int(logits.argmax()) == c_id)
    assert abs(ld - result.original.logit_diff) > 1e-6  # the path carries something


def _check_row(result, row: int, logits: torch.Tensor, tok) -> float:
    o_id, c_id = (tok(a, add_special_tokens=False)["input_ids"][0] for a in ("1", "4"))
    ld = float(logits[c_id] - logits[o_id])
    assert result.logit_diff[row] == pytest.approx(ld, abs=2e-5)
    assert result.prob_cf[row] == pytest.approx(float(torch.softmax(logits, -1)[c_id]), abs=1e-6)
    assert bool(result.iia[row]) == (int(logits.argmax()) == c_id)
    return ld


# ORIGINAL = "a=1\nb=a\nc=7\n#b:": the root line "a=1\n" is 0..3 ("ref depth 1" = the 1 at 2), the
# query variable's line "b=a\n" is 4..7 ("ref depth 2" = the a at 6), the final token is 13.
@pytest.mark.parametrize(
    ("spec", "positions", "label"),
    [
        (2, [2], "2"),
        ("ref depth 2", [6], "ref depth 2"),
        ("line:ref depth 1", [0, 1, 2, 3], "line:ref depth 1"),
        ([6, 13], [6, 13], "6,13"),
    ],
    ids=["int", "target", "line", "list"],
)
@pytest.mark.parametrize(
    "receivers", [[(1, 0), (1, 2)], ["later"], [(1, 3), "logits"]], ids=["heads", "later", "both"]
)
def test_a_sender_at_some_positions_equals_the_reference(
    loaded: LoadedModel, spec, positions, label, receivers
) -> None:
    sender = (0, 2)
    result = path_patch(loaded, (ORIGINAL, COUNTERFACTUAL), sender, receivers, sender_positions=spec)
    assert result.sender_positions == [positions] and result.position_labels == [label]
    heads = [r for r in receivers if r not in ("logits", "later")] + (
        [(1, h) for h in range(4)] if "later" in receivers else []
    )
    logits = reference(loaded, sender, heads, "logits" in receivers, positions)
    ld = _check_row(result, 0, logits, loaded.tokenizer)
    if receivers == ["later"]:
        assert abs(ld - result.original.logit_diff) > 1e-6  # the restricted path carries something


def test_the_direct_path_of_a_sender_before_the_final_token_is_zero(loaded: LoadedModel) -> None:
    result = path_patch(
        loaded, (ORIGINAL, COUNTERFACTUAL), (1, 1), "logits", sender_positions="line:ref depth 1"
    )
    assert result.logit_diff[0] == pytest.approx(result.original.logit_diff, abs=1e-6)
    assert any("no direct path" in note for note in result.notes)
    at_final = path_patch(loaded, (ORIGINAL, COUNTERFACTUAL), (1, 1), "logits", sender_positions="final")
    everywhere = path_patch(loaded, (ORIGINAL, COUNTERFACTUAL), (1, 1), "logits")
    # The final residual changes only at the sender's positions: at the final token, all positions = final.
    assert at_final.logit_diff[0] == pytest.approx(everywhere.logit_diff[0], abs=2e-5)


def test_hops_scan_every_head_at_each_chain_line(loaded: LoadedModel) -> None:
    pair = (ORIGINAL, COUNTERFACTUAL)
    result = path_patch_hops(loaded, pair, "later")
    labels = ["line:ref depth 1", "line:ref depth 2"]
    assert list(dict.fromkeys(result.position_labels)) == labels and len(result.senders) == 2 * 8
    assert result.sender_positions[0] == [0, 1, 2, 3] and result.sender_positions[8] == [4, 5, 6, 7]
    one = path_patch(loaded, pair, (0, 3), "later", sender_positions="line:ref depth 2")
    grid = result.head_grid("line:ref depth 2", "logit_diff")
    assert grid.shape == (2, 4) and grid[0, 3] == pytest.approx(one.logit_diff[0], abs=2e-5)
    assert result.top_senders("line:ref depth 1", k=2)[0][2] == np.nanmax(result.head_grid(labels[0]))
    tokens = path_patch_hops(loaded, pair, "logits", whole_line=False)
    assert tokens.sender_positions[0] == [2] and tokens.sender_positions[8] == [6]
    data = result.to_dict()
    assert data["position_labels"][8] == "line:ref depth 2" and data["targets"]["ref depth 2"] == 6
    assert len(plot_path_patching(result).axes) == 3  # one panel per hop and the colour bar


def test_all_heads_scan_and_plot(loaded: LoadedModel) -> None:
    result = path_patch_heads(loaded, (ORIGINAL, COUNTERFACTUAL), "logits")
    assert result.senders == [(layer, h) for layer in range(2) for h in range(4)]
    one = path_patch(loaded, (ORIGINAL, COUNTERFACTUAL), (1, 2), "logits")
    assert result.logit_diff[6] == pytest.approx(one.logit_diff[0], abs=2e-5)
    assert np.isfinite(result.normalized).all() and result.to_dict()["method"] == "path_patching"
    assert len(plot_path_patching(result).axes) == 2


def test_path_patch_bad_input_fails_before_any_forward(loaded: LoadedModel, monkeypatch) -> None:
    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran")

    monkeypatch.setattr(loaded.model, "forward", no_forward)
    pair = (ORIGINAL, COUNTERFACTUAL)
    with pytest.raises(
        CausalTracingError, match=r"sender \(0, 4\) does not exist: layers 0\.\.1, heads 0\.\.3"
    ):
        path_patch(loaded, pair, (0, 4))
    with pytest.raises(CausalTracingError, match=r"sender \(2, 0\) does not exist"):
        path_patch(loaded, pair, (2, 0))
    with pytest.raises(CausalTracingError, match=r"receiver \(0, 2\) is not after the sender in layer 1"):
        path_patch(loaded, pair, (1, 0), [(0, 2)])
    with pytest.raises(CausalTracingError, match=r"receiver \(1, 9\) does not exist"):
        path_patch(loaded, pair, (0, 0), [(1, 9)])
    with pytest.raises(CausalTracingError, match="has no receivers after it"):
        path_patch(loaded, pair, (1, 0), "later")
    n = len(ORIGINAL.text)
    with pytest.raises(
        CausalTracingError,
        match=rf"sender_positions {n} is outside the prompt: choose positions in 0\.\.{n - 1}",
    ):
        path_patch(loaded, pair, (0, 0), sender_positions=n)
    with pytest.raises(CausalTracingError, match="sender_positions -1 is outside the prompt"):
        path_patch_heads(loaded, pair, "later", sender_positions=[-1])
    with pytest.raises(
        CausalTracingError, match="sender_positions 'ref depth 9' is not a position or target"
    ):
        path_patch(loaded, pair, (0, 0), sender_positions="ref depth 9")
    with pytest.raises(CausalTracingError, match="takes receivers 'logits' and/or 'later'"):
        path_patch_hops(loaded, pair, [(1, 0)])
    with pytest.raises(CausalTracingError, match="needs a pair whose answer comes from a chain"):
        path_patch_hops(loaded, (("a=1\na+=1\n#a:", 2), ("a=3\na+=1\n#a:", 4)))


def test_debug_patch_method_path_saves_json_and_picture(tiny_qwen3_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from debug.causal.cli import main_patch

    argv = ["--method", "path", "--model", str(tiny_qwen3_dir), "--num-hops", "2", "--seq-len", "6"]
    assert main_patch(argv + ["--receivers", "later", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("path-") and str(folder) in out
    assert json.loads((folder / "path.json").read_text())["model"] == str(tiny_qwen3_dir)
    assert (folder / "path.png").stat().st_size > 0
