"""Chat templates: a rendered prompt becomes one user message in the model's own template.

With `chat_template=True` (`--chat-template` in the plugin) each rendered prompt goes through the tokenizer's
`apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False,
**chat_template_kwargs)`; the result is the text the model sees, and the text that is hashed, cached and shown
in the report. `chat_template_kwargs` are the template's own switches, e.g. `{"enable_thinking": false}` for
Qwen3-style templates. A served (`openai:`) model is sent the message on `/v1/chat/completions` instead and
the server applies its template; see `debug.serving`.
"""

from __future__ import annotations

import json
from typing import Any


class ChatTemplateError(ValueError):
    """A chat template was asked of a model whose tokenizer has none, or its arguments are not valid."""


def check_chat_template_kwargs(value: Any, source: str = "chat_template_kwargs") -> dict[str, Any] | None:
    """`value` (a dict, a JSON object as text, or None) as a plain dict of template arguments.

    Args:
        value: The arguments.
        source: How the caller names them in errors (`--chat-template-kwargs`, `chat_template_kwargs`).

    Raises:
        ChatTemplateError: Not a JSON object with string keys and JSON values (one line with an example).
    """
    if value is None:
        return None
    example = f"""{source} takes a JSON object, e.g. '{{"enable_thinking": false}}'"""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ChatTemplateError(f"{example}; got {value!r} ({exc})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ChatTemplateError(f"{example}; got {value!r}")
    try:
        # The arguments join the answer-cache key, so they must survive a JSON round trip unchanged.
        plain = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ChatTemplateError(f"{example}; got {value!r} (values must be JSON)") from None
    return plain


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def require_chat_template(tokenizer: Any, model_id: str) -> None:
    """Refuse a model without a chat template.

    Raises:
        ChatTemplateError: One line naming the model and the fix.
    """
    if not has_chat_template(tokenizer):
        raise ChatTemplateError(
            f"--chat-template / chat_template=True: {model_id!r} has no chat template (its tokenizer sets "
            "none); drop the option, or use an instruction model whose tokenizer ships one"
        )


def render_chat(tokenizer: Any, prompt: str, kwargs: dict[str, Any] | None = None) -> str:
    """`prompt` as one user message through the tokenizer's template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        tokenize=False,
        **(kwargs or {}),
    )


def chat_request_text(prompt: str, kwargs: dict[str, Any] | None = None) -> str:
    """A stable text for a chat request that cannot be rendered here (the model's tokenizer is not local).

    It stands in for the rendered prompt in hashes and the cache: the same message and template arguments
    give the same text.
    """
    return json.dumps(
        {"messages": [{"role": "user", "content": prompt}], "chat_template_kwargs": kwargs or {}},
        sort_keys=True,
    )
