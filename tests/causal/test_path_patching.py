"""Path patching against a plain-torch reference that adds the sender's change to the receivers' inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.inputs import CausalTracingError
from debug.causal.path_patching import path_patch, path_patch_heads, plot_path_patching
from debug.models import LoadedModel
from debug.programs import Program

pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})


def _loaded(folder: Path) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return LoadedModel(model, AutoTokenizer.from_pretrained(folder), str(folder), "test")


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def loaded(request: pytest.FixtureRequest) -> LoadedModel:
    return _loaded(request.getfixturevalue(f"tiny_{request.param}_dir"))


def _arg(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_arg(args, kwargs, value):
    return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})


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
    _forward(model, ids, [(module, lambda m, a, k: box.append(_arg(a, k)[0].clone()))])
    return box[0]


def _out_weight_rows(module, sl) -> torch.Tensor:
    """`[head_dim, hidden]`: the output projection's rows for one head's slice of its input."""
    if isinstance(module, torch.nn.Linear):
        return module.weight[:, sl].T
    return module.weight[sl, :]  # GPT-2 Conv1D keeps (in, out)


def reference(loaded, sender, receivers, direct) -> torch.Tensor:
    model, tok = loaded.model, loaded.tokenizer
    arch = resolve_architecture(model)
    ids, cf_ids = (torch.tensor(tok(p.text)["input_ids"]) for p in (ORIGINAL, COUNTERFACTUAL))
    s_layer, s_head = sender
    out_proj = get_path(model, arch.attn_out_path(s_layer))
    sl = slice(s_head * arch.head_dim, (s_head + 1) * arch.head_dim)
    change = _capture(model, cf_ids, out_proj)[:, sl] - _capture(model, ids, out_proj)[:, sl]
    delta = change @ _out_weight_rows(out_proj, sl)  # [seq, hidden]: what the sender adds to the residual
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
                (layer, lambda m, a, k: _with_arg(a, k, _arg(a, k) + delta)),
                (r_proj, lambda m, a, k, grab=grab: grab(_arg(a, k)[0].clone())),
            ],
        )
        recorded = box[0]
        heads = [r[1] for r in receivers if r[0] == r_layer]

        def put(m, a, k, recorded=recorded, heads=heads):
            x = _arg(a, k).clone()
            for h in heads:
                hs = slice(h * arch.head_dim, (h + 1) * arch.head_dim)
                x[0, :, hs] = recorded[:, hs]
            return _with_arg(a, k, x)

        hooks.append((r_proj, put))
    if direct:
        hooks.append(
            (get_path(model, arch.spec.final_norm), lambda m, a, k: _with_arg(a, k, _arg(a, k) + delta))
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
