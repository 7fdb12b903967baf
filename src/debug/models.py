"""Model loading: hub ids, local folders and `embedded:<name>` models, behind one process-wide cache.

STUB written by the coordinator: the models helper replaces the body; `LoadedModel` and `load` keep their shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer.

    Attributes:
        model: A transformers causal LM (`PreTrainedModel`), in eval mode.
        tokenizer: Its tokenizer, left padding.
        model_id: The id it was loaded by (`embedded:<name>`, a hub id or a local path).
        fingerprint: Stable hash of config and weights (or the hub revision); keys caches and pairs runs.
    """

    model: Any
    tokenizer: Any
    model_id: str
    fingerprint: str


def load(model_id: str, *, device: str = "auto", dtype: Any = None, **from_pretrained_kw: Any) -> LoadedModel:
    """Load (or fetch from the process cache) a model by id."""
    raise NotImplementedError
