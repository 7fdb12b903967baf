"""Fixtures of the causal tests: the tiny random models of tests/conftest.py, loaded for tracing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from debug.models import LoadedModel


def _load(folder: Path, **kwargs: Any) -> LoadedModel:
    # deferred: transformers is slow to import; only tests that load a model pay for it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, **{"dtype": torch.float32, **kwargs}).eval()
    return LoadedModel(model, AutoTokenizer.from_pretrained(folder), str(folder), "test")


@pytest.fixture(scope="session")
def load_tiny() -> Callable[..., LoadedModel]:
    """`load_tiny(folder, **from_pretrained_kwargs)`: a saved tiny model as an eval-mode `LoadedModel`.

    float32 unless `dtype` is given; other keywords (`attn_implementation`) go to `from_pretrained`.
    """
    return _load


@pytest.fixture(scope="module", params=["qwen3", "gpt2"])
def loaded(request: pytest.FixtureRequest) -> LoadedModel:
    """Each tiny model (Qwen3-style, then GPT-2-style), float32 in eval mode; tests using it run for both."""
    return _load(request.getfixturevalue(f"tiny_{request.param}_dir"))
