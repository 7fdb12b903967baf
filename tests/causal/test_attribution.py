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

# Untrained models get most pairs wrong; that warning is tested with the exact engine.
pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

ORIGINAL = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
COUNTERFACTUAL = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})
SITES = ["residual_stream", "attention_heads", "mlp"]


def _loaded(folder: Path, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return LoadedModel(model, AutoTokenizer.from_pretrained(folder), str(folder), "test")


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def loaded64(request: pytest.FixtureRequest) -> LoadedModel:
    """float64, so the finite difference is accurate to many digits."""
    return _loaded(request.getfixturevalue(f"tiny_{request.param}_dir"), torch.float64)


@pytest.fixture(scope="module")
def loaded32(tiny_qwen3_dir: Path) -> LoadedModel:
    return _loaded(tiny_qwen3_dir, torch.float32)


# ---- reference: LD(original + eps * (cf - orig) at one cell), by central difference ----


def _module(model: torch.nn.Module, site: str, layer: int) -> torch.nn.Module:
    arch = resolve_architecture(model)
    if site == "residual_stream":
        return get_path(model, arch.spec.final_norm if layer == arch.num_layers else arch.layer_path(layer))
    return get_path(model, arch.mlp_path(layer) if site == "mlp" else arch.attn_out_path(layer))


def _activation(model: torch.nn.Module, site: str, layer: int, ids: torch.Tensor) -> torch.Tensor:
    box: list[torch.Tensor] = []
    module = _module(model, site, layer)
    if site == "mlp":
        handle = module.register_forward_hook(lambda m, a, out: box.append(out.detach().clone()))
    else:
        handle = module.register_forward_pre_hook(
            lambda m, a, k: box.append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True
        )
    with torch.no_grad():
        model(input_ids=ids[None])
    handle.remove()
    return box[0][0]


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

    module = _module(model, site, layer)
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
    delta = _activation(model, site, layer, cf) - _activation(model, site, layer, orig)
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
