"""Attribution patching against a finite-difference reference, on Qwen3-style and GPT-2-style models.

The reference never touches `debug.causal.attribution`: plain torch hooks add eps * (cf - orig) at one cell
of the original run, and dLD/deps at eps = 0 is what the attribution estimates. It is taken two ways: by
autograd through eps alone (exact), and by Richardson-extrapolated central differences (no autograd at all;
loose, because Qwen3's RMSNorm computes in float32 even in a float64 model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from debug.causal import AttributionCheck, agreement, attribution_sweep, sweep
from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.inputs import CausalTracingError
from debug.models import LoadedModel, WeightsRequiredError
from debug.programs import Program

from .reference import site_activation, site_module

# Untrained models get most pairs wrong; that warning is tested with the exact engine.
pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})
SITES = ["residual_stream", "attention_heads", "mlp"]


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def loaded64(request: pytest.FixtureRequest, load_tiny) -> LoadedModel:
    """float64, so the finite difference is accurate to many digits."""
    return load_tiny(request.getfixturevalue(f"tiny_{request.param}_dir"), dtype=torch.float64)


@pytest.fixture(scope="module")
def loaded32(tiny_qwen3_dir: Path, load_tiny) -> LoadedModel:
    return load_tiny(tiny_qwen3_dir)


# ---- reference: LD(original + eps * (cf - orig) at one cell), by central difference ----
# Plain hooks (tests/causal/reference.py and below), not debug.causal.forward's, so that a mistake there
# cannot hide in the reference too.


def _ld_nudged(model, site, layer, pos, head, delta, ids, o_id, c_id, eps) -> torch.Tensor:
    arch = resolve_architecture(model)

    def nudge(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if head is None:
            x[0, pos] += eps * delta[pos]
        else:
            sl = slice(head * arch.head_dim, (head + 1) * arch.head_dim)
            x[0, pos, sl] += eps * delta[pos, sl]
        return x

    module = site_module(model, site, layer)
    if site == "mlp":
        handle = module.register_forward_hook(lambda m, a, out: nudge(out))
    else:

        def pre(m: Any, args: tuple, kwargs: dict) -> tuple:
            if args:
                return (nudge(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": nudge(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.set_grad_enabled(isinstance(eps, torch.Tensor)):
        logits = model(input_ids=ids[None]).logits[0, -1]
    handle.remove()
    return logits[c_id] - logits[o_id]


def _derivatives(
    loaded: LoadedModel, site: str, layer: int, pos: int, head: int | None
) -> tuple[float, float]:
    """dLD/deps at eps = 0: (by autograd through eps, by extrapolated central differences)."""
    model, tok = loaded.model, loaded.tokenizer
    orig = torch.tensor(tok(ORIGINAL.text)["input_ids"])
    cf = torch.tensor(tok(COUNTERFACTUAL.text)["input_ids"])
    o_id = tok(str(ORIGINAL.answer), add_special_tokens=False)["input_ids"][0]
    c_id = tok(str(COUNTERFACTUAL.answer), add_special_tokens=False)["input_ids"][0]
    delta = site_activation(model, site, layer, cf) - site_activation(model, site, layer, orig)
    args = (model, site, layer, pos, head, delta, orig, o_id, c_id)
    eps = torch.zeros((), dtype=delta.dtype, requires_grad=True)
    (exact,) = torch.autograd.grad(_ld_nudged(*args, eps), eps)

    def central(h: float) -> float:
        return float(_ld_nudged(*args, h) - _ld_nudged(*args, -h)) / (2 * h)

    h = 1e-2  # large enough to rise above float32 rounding; Richardson removes the h^2 error
    return float(exact), (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("site", SITES)
def test_attribution_equals_the_finite_difference_derivative(loaded64: LoadedModel, site: str) -> None:
    n = resolve_architecture(loaded64.model).num_layers
    layers = list(range(n + 1)) if site == "residual_stream" else list(range(n))
    result = attribution_sweep(loaded64, ORIGINAL, COUNTERFACTUAL, site=site, layers=layers)
    estimate = result.logit_diff - result.original.logit_diff
    # Cells where the tokens differ (2), downstream of it (6: "a" read by "b=a"), and the answer position.
    cells = [(li, p) for li in range(len(layers)) for p in (2, 6, result.positions[-1])]
    heads = [0, 3] if site == "attention_heads" else [None]
    checked = 0
    for li, pos in cells:
        for head in heads:
            want, finite = _derivatives(loaded64, site, layers[li], pos, head)
            got = estimate[(li, pos) if head is None else (li, pos, head)]
            assert got == pytest.approx(want, rel=1e-7, abs=1e-10), (layers[li], pos, head)
            assert got == pytest.approx(finite, rel=2e-3, abs=5e-6), (layers[li], pos, head)
            checked += abs(want) > 1e-4
    assert checked >= 3  # the comparison is not vacuous: several cells have a real effect


def test_result_shape_metrics_and_definitions(loaded32: LoadedModel) -> None:
    result = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="attention_heads", method="attribution")
    exact = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="attention_heads")
    assert result.logit_diff.shape == exact.logit_diff.shape == (2, 15, 4)
    assert (result.layers, result.positions, result.heads) == (exact.layers, exact.positions, exact.heads)
    assert result.original.logit_diff == pytest.approx(exact.original.logit_diff, abs=1e-5)
    assert result.counterfactual.logit_diff == pytest.approx(exact.counterfactual.logit_diff, abs=1e-5)
    denominator = result.counterfactual.logit_diff - result.original.logit_diff
    np.testing.assert_allclose(
        result.normalized, (result.logit_diff - result.original.logit_diff) / denominator, rtol=1e-9
    )
    assert np.isnan(result.prob_cf).all() and np.isnan(result.iia).all()
    assert "estimates" in result.definitions["metrics"] and "NaN" in result.definitions["metrics"]
    assert result.forwards == 2
    # Nothing before the changed token (position 2) can differ between the runs: zero estimate there.
    assert np.abs(result.logit_diff[:, :2] - result.original.logit_diff).max() == 0.0
    data = result.to_dict()
    assert data["prob_cf"][0][0][0] is None


def test_verify_patches_the_top_cells_exactly(loaded32: LoadedModel) -> None:
    check = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="mlp", method="attribution+verify", top_k=5)
    assert isinstance(check, AttributionCheck) and len(check.cells) == 5
    exact = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="mlp")
    estimate = check.attribution.logit_diff - check.attribution.original.logit_diff
    # The verified cells are the five largest |estimates|, largest first.
    order = np.argsort(-np.abs(estimate.ravel()), kind="stable")[:5]
    assert check.cells == [(int(li), int(p)) for li, p in zip(*np.unravel_index(order, estimate.shape))]
    for (layer, pos), got, norm in zip(check.cells, check.exact, check.exact_normalized):
        want = exact.logit_diff[layer, pos] - exact.original.logit_diff
        assert got == pytest.approx(want, abs=1e-5)
        assert norm == pytest.approx(exact.normalized[layer, pos], abs=1e-4)
    np.testing.assert_allclose(check.estimated, estimate.ravel()[order])
    assert -1.0 <= check.spearman <= 1.0 and 0.0 <= check.top_half_recall <= 1.0
    assert check.to_dict()["cells"][0] == list(check.cells[0])


def test_verify_heads_picks_cells_across_layers(loaded32: LoadedModel) -> None:
    check = sweep(
        loaded32, ORIGINAL, COUNTERFACTUAL, site="attention_heads", method="attribution+verify", top_k=6
    )
    exact = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="attention_heads")
    for (layer, pos, head), got in zip(check.cells, check.exact):
        assert got == pytest.approx(exact.logit_diff[layer, pos, head] - exact.original.logit_diff, abs=1e-5)


def test_agreement_of_exact_with_itself_is_perfect(loaded32: LoadedModel) -> None:
    exact = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="residual_stream", layers=[0, 1, 2])
    scores = agreement(exact, exact, top_k=5)
    assert scores["spearman"] == pytest.approx(1.0) and scores["top_k_recall"] == 1.0
    other = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="residual_stream", layers=[0])
    with pytest.raises(CausalTracingError, match="different cells"):
        agreement(exact, other)


def test_unknown_method_names_the_methods(loaded32: LoadedModel) -> None:
    with pytest.raises(CausalTracingError) as info:
        sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="gradients")
    message = str(info.value)
    assert "\n" not in message and "'gradients'" in message
    assert "exact, attribution, attribution+verify" in message


def test_refuses_training_mode_served_models_and_bad_top_k(loaded32: LoadedModel) -> None:
    loaded32.model.train()
    try:
        with pytest.raises(CausalTracingError, match=r"training mode.*call model\.eval\(\)"):
            sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="attribution")
    finally:
        loaded32.model.eval()
    with pytest.raises(WeightsRequiredError, match="needs the model's weights"):
        attribution_sweep("openai:m@http://127.0.0.1:9/v1", ORIGINAL, COUNTERFACTUAL)
    with pytest.raises(CausalTracingError, match="top_k must be at least 1"):
        sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="attribution+verify", top_k=0)


# ---- AtP*: the QK fix and GradDrop against a plain-torch reference ----
#
# The reference nudges one cell of the original run by eps * (cf - orig) and takes dLD/deps at eps = 0 by
# autograd through eps alone, with two changes of the model that define AtP*:
# - QK fix (residual cell at layer l, position p): layer l's attention probabilities are held at
#   A + eps * (A_patched - A), where A_patched is what transformers' eager attention returns
#   (`output_attentions=True`) with layer l's input at p replaced by the counterfactual's;
# - GradDrop (drop l'): layer l''s output is replaced by input + (output - input).detach(), so the gradient
#   passes layer l' on the residual path only; AtP+GD = sign(AtP) * sum over l' of |estimate_l'| / (L - 1).

_OVERRIDE = "test_attribution_override"
_HELD: dict[int, torch.Tensor] = {}  # id(attention module) -> the probabilities it must use


def _held_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **_kwargs):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) * scaling + attention_mask[..., : key.shape[-2]]
    probs = _HELD.get(id(module), torch.softmax(scores, dim=-1))
    return (probs @ value).transpose(1, 2).contiguous(), probs


def _attention_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return get_path(model, resolve_architecture(model).attn_out_path(layer).rsplit(".", 1)[0])


def _eager_pattern(
    model: torch.nn.Module, layer: int, ids: torch.Tensor, replace: Any = None
) -> torch.Tensor:
    """Layer `layer`'s attention probabilities from transformers' eager attention, optionally with the layer's
    input at one position replaced: `replace = (position, vector)`."""
    module = site_module(model, "residual_stream", layer)

    def pre(m: Any, args: tuple, kwargs: dict) -> tuple:
        x = (args[0] if args else kwargs["hidden_states"]).clone()
        x[0, replace[0]] = replace[1]
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    handle = module.register_forward_pre_hook(pre, with_kwargs=True) if replace is not None else None
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return model(input_ids=ids[None], output_attentions=True).attentions[layer].clone()
    finally:
        model.config._attn_implementation = previous
        if handle is not None:
            handle.remove()


def _reference(
    loaded: LoadedModel, site: str, layer: int, pos: int, head: int | None, *, qk: bool, drop: Any
):
    """dLD/deps at eps = 0 of one cell's nudge, with the QK fix's held pattern and/or one layer dropped."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    model, tok = loaded.model, loaded.tokenizer
    orig = torch.tensor(tok(ORIGINAL.text)["input_ids"])
    cf = torch.tensor(tok(COUNTERFACTUAL.text)["input_ids"])
    o_id = tok(str(ORIGINAL.answer), add_special_tokens=False)["input_ids"][0]
    c_id = tok(str(COUNTERFACTUAL.answer), add_special_tokens=False)["input_ids"][0]
    delta = site_activation(model, site, layer, cf) - site_activation(model, site, layer, orig)
    eps = torch.zeros((), dtype=delta.dtype, requires_grad=True)
    handles = []
    if drop is not None:

        def cut(m: Any, args: tuple, kwargs: dict, out: torch.Tensor) -> torch.Tensor:
            inp = args[0] if args else kwargs["hidden_states"]
            return inp + (out - inp).detach()

        handles.append(
            site_module(model, "residual_stream", drop).register_forward_hook(cut, with_kwargs=True)
        )
    previous = model.config._attn_implementation
    if qk:
        a = _eager_pattern(model, layer, orig)
        cf_input = site_activation(model, "residual_stream", layer, cf)[pos]
        patched = _eager_pattern(model, layer, orig, (pos, cf_input))
        _HELD[id(_attention_module(model, layer))] = a + eps * (patched - a)
        AttentionInterface.register(_OVERRIDE, _held_attention)
        AttentionMaskInterface.register(_OVERRIDE, eager_mask)
        model.config._attn_implementation = _OVERRIDE
    try:
        ld = _ld_nudged(model, site, layer, pos, head, delta, orig, o_id, c_id, eps)
        # A cell inside the dropped layer reaches LD through nothing: its derivative is 0.
        (grad,) = torch.autograd.grad(ld, eps, allow_unused=True)
    finally:
        model.config._attn_implementation = previous
        _HELD.clear()
        for h in handles:
            h.remove()
    return 0.0 if grad is None else float(grad)


def _estimates(result: Any) -> np.ndarray:
    return result.logit_diff - result.original.logit_diff


# Cells where the tokens differ (2), downstream of it (6: "a" read by "b=a"), and the answer position (14).
CELLS = (2, 6, 14)


def test_qk_fix_equals_the_reference(loaded: LoadedModel) -> None:
    n = resolve_architecture(loaded.model).num_layers
    fixed = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=range(n + 1), qk_fix=True))
    plain = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=range(n + 1)))
    moved = 0.0
    for layer in range(n + 1):
        for pos in CELLS:
            # The final residual (layer n) feeds no attention: the QK fix leaves it as it is.
            want = _reference(loaded, "residual_stream", layer, pos, None, qk=layer < n, drop=None)
            assert fixed[layer, pos] == pytest.approx(want, rel=1e-4, abs=1e-6), (layer, pos)
            moved = max(moved, abs(fixed[layer, pos] - plain[layer, pos]))
    # The fix moves the estimates (by ~1e-2 on the Qwen3-style model; GPT-2's initial attention is nearly
    # uniform, where the softmax is nearly linear): the comparison is not the plain one again.
    assert moved > 0.0


@pytest.mark.parametrize("site", SITES)
def test_grad_drop_equals_the_reference(loaded: LoadedModel, site: str) -> None:
    n = resolve_architecture(loaded.model).num_layers
    result = attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, site=site, grad_drop=True)
    plain = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, site=site))
    head = 1 if site == "attention_heads" else None
    for layer in range(n):
        for pos in CELLS:
            drops = [_reference(loaded, site, layer, pos, head, qk=False, drop=d) for d in range(n)]
            at = (layer, pos) if head is None else (layer, pos, head)
            sign = -1.0 if plain[at] < 0 else 1.0
            want = sign * sum(abs(d) for d in drops) / (n - 1)
            assert _estimates(result)[at] == pytest.approx(want, rel=1e-4, abs=1e-6), (layer, pos)
    assert "GradDrop" in result.definitions["method"]


def test_atp_star_residual_equals_the_reference(loaded: LoadedModel) -> None:
    n = resolve_architecture(loaded.model).num_layers
    result = sweep(loaded, ORIGINAL, COUNTERFACTUAL, method="atp*")
    plain = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, qk_fix=True))
    for layer in range(n):
        for pos in CELLS:
            drops = [
                _reference(loaded, "residual_stream", layer, pos, None, qk=True, drop=d) for d in range(n)
            ]
            want = (-1.0 if plain[layer, pos] < 0 else 1.0) * sum(abs(d) for d in drops) / (n - 1)
            assert _estimates(result)[layer, pos] == pytest.approx(want, rel=1e-4, abs=1e-6), (layer, pos)
    assert "QK fix" in result.definitions["method"] and "GradDrop" in result.definitions["method"]


def _softmax_only_gpt2() -> LoadedModel:
    """One GPT-2 layer where LD is linear in the residual except through the attention softmax: norms are
    identities, the MLP writes zero, tokens live in the first half of the width and positions in the second,
    and values read positions only (a token change moves queries and keys, never values)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from debug.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    block, half = model.transformer.h[0], 8
    with torch.no_grad():
        block.ln_1, block.ln_2, model.transformer.ln_f = (
            torch.nn.Identity(),
            torch.nn.Identity(),
            torch.nn.Identity(),
        )
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        model.transformer.wpe.weight.normal_(0, 1.0)
        model.transformer.wpe.weight[:, :half] = 0.0
        model.transformer.wte.weight.normal_(0, 1.0)
        model.transformer.wte.weight[:, half:] = 0.0
        block.attn.c_attn.weight.normal_(0, 1.0)  # large queries and keys: sharp attention, the softmax bends
        block.attn.c_attn.weight[:half, 2 * 16 :] = 0.0  # values ignore the token half
        block.attn.c_proj.weight.normal_(0, 1.0)
    # float64: the logits are large here, and float32 rounding of LD would hide 1e-5 differences.
    return LoadedModel(model.double(), tok, "softmax-only gpt2", "test")


def test_qk_fix_is_exact_where_only_the_softmax_bends() -> None:
    loaded = _softmax_only_gpt2()
    exact = _estimates(sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1]))
    fixed = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1], qk_fix=True))
    plain = _estimates(attribution_sweep(loaded, ORIGINAL, COUNTERFACTUAL, layers=[0, 1]))
    # atol: the exact sweep reports LD in float32 (`UnpatchedRun`), whatever the model computes in.
    np.testing.assert_allclose(fixed, exact, atol=5e-6)
    assert np.abs(exact[0]).max() > 1e-2  # a real effect at layer 0 ...
    assert np.abs(plain[0] - exact[0]).max() > 1e-2  # ... that the plain linearization misses
    np.testing.assert_allclose(plain[1], exact[1], atol=5e-6)  # the final residual is linear: plain is exact


def test_qk_fix_leaves_heads_and_mlp_and_says_so(loaded32: LoadedModel) -> None:
    for site in ("attention_heads", "mlp"):
        fixed = attribution_sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site=site, qk_fix=True)
        plain = attribution_sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site=site)
        np.testing.assert_array_equal(fixed.logit_diff, plain.logit_diff)
        assert f"no QK fix: {site}" in fixed.definitions["method"]
    assert loaded32.model.config._attn_implementation != "debug_attribution_probe"  # restored after the run


def test_atp_star_verify_and_refusals(loaded32: LoadedModel) -> None:
    check = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="atp*+verify", top_k=4)
    assert isinstance(check, AttributionCheck) and "GradDrop" in check.attribution.definitions["method"]
    loaded32.model.train()
    try:
        with pytest.raises(CausalTracingError, match=r"training mode.*call model\.eval\(\)"):
            sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="atp*")
    finally:
        loaded32.model.eval()
    with pytest.raises(WeightsRequiredError, match="needs the model's weights"):
        attribution_sweep(
            "openai:m@http://127.0.0.1:9/v1", ORIGINAL, COUNTERFACTUAL, qk_fix=True, grad_drop=True
        )
    with pytest.raises(CausalTracingError, match="GradDrop needs at least 2 decoder layers"):
        attribution_sweep(_softmax_only_gpt2(), ORIGINAL, COUNTERFACTUAL, grad_drop=True)
    with pytest.raises(CausalTracingError) as info:
        sweep(loaded32, ORIGINAL, COUNTERFACTUAL, method="atp")
    assert "\n" not in str(info.value) and "atp*, atp*+verify" in str(info.value)


def test_agreement_ranks_magnitudes_too(loaded32: LoadedModel) -> None:
    exact = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="mlp")
    flipped = sweep(loaded32, ORIGINAL, COUNTERFACTUAL, site="mlp")
    flipped.logit_diff = 2 * flipped.original.logit_diff - flipped.logit_diff  # every change's sign flipped
    scores = agreement(flipped, exact)
    assert scores["spearman_abs"] == pytest.approx(1.0) and scores["spearman"] < 0
