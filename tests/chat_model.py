"""A small model whose tokenizer carries a chat template: the embedded 4-layer binder, re-saved with one.

The template writes an optional comment line (when `enable_thinking` is false, as Qwen3-style templates take
it), then the user message unchanged, so the binder still reads a query-form program it was trained on.

`transformers serve` parses a chat reply with the tokenizer's `response_template`, falling back by model type;
the Qwen3 fallback looks for Qwen's `<|im_start|>assistant` marker, which this template does not write, and
would then hand back the whole prompt. `RESPONSE_TEMPLATE` says instead that the reply starts where the prompt
ends (an anchor matching the prompt's end) and is plain text up to `<eos>`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from debug.models import EMBEDDED

SOURCE = EMBEDDED["embedded:binder-4l"]

CHAT_TEMPLATE = (
    "{% if enable_thinking is defined and not enable_thinking %}#no thinking\n{% endif %}"
    "{% for message in messages %}{{ message['content'] }}{% endfor %}"
)
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor_pattern": r"\Z",
    "fields": {"content": {"close": "<eos>", "content": "text"}},
}


def save_chat_binder(folder: Path) -> Path:
    """Copy binder-4l's config and weights into `folder` and save its tokenizer there with `CHAT_TEMPLATE`."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(SOURCE / name, folder / name)
    tokenizer = AutoTokenizer.from_pretrained(SOURCE)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder
