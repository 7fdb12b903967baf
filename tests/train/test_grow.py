"""Tests for debug.train.grow: a grown decoder computes what its source did, and trains from there."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.tokenizer import build_char_tokenizer
from debug.train import build_decoder
from debug.train.grow import grow_decoder

TOKENIZER = build_char_tokenizer()


def _source(seed: int = 0):
    torch.manual_seed(seed)
    model = build_decoder(TOKENIZER, layers=2, hidden=32, heads=2, max_positions=64, init="torch")
    # Trained models' norms are not all ones: make them not so here, or a wrong rescale would go unseen.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


@settings(max_examples=12, deadline=None)
@given(
    extra_layers=st.integers(0, 2),
    extra_heads=st.integers(0, 2),
    seed=st.integers(0, 2**16),
    ids=st.lists(st.integers(3, len(TOKENIZER) - 1), min_size=1, max_size=24),
)
def test_grown_model_gives_the_source_logits(extra_layers: int, extra_heads: int, seed: int, ids) -> None:
    source = _source(seed)
    grown = grow_decoder(
        source,
        layers=2 + extra_layers,
        hidden=16 * (2 + extra_heads),
        heads=2 + extra_heads,
        tokenizer=TOKENIZER,
    ).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(grown(x).logits, source(x).logits, atol=1e-4, rtol=1e-4)
    assert grown.config.num_hidden_layers == 2 + extra_layers
    assert grown.config.hidden_size == 16 * (2 + extra_heads)


def test_every_new_weight_gets_a_gradient_at_the_first_step() -> None:
    grown = grow_decoder(_source(), layers=3, hidden=64, heads=4, tokenizer=TOKENIZER)
    x = torch.tensor([[5, 9, 12, 7, 30, 8, 11]])
    grown(x, labels=x).loss.backward()
    zero_at_start = [
        n for n, p in grown.named_parameters() if n.endswith(("o_proj.weight", "down_proj.weight"))
    ]
    assert zero_at_start
    for name in zero_at_start:
        assert grown.get_parameter(name).grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": 1, "hidden": 32, "heads": 2}, "only grows"),
        ({"layers": 2, "hidden": 48, "heads": 2}, "heads x head_dim"),
    ],
)
def test_bad_targets_are_refused_with_the_fix(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grow_decoder(_source(), tokenizer=TOKENIZER, **kwargs)
