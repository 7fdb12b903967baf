"""What every causal method shares about running the model: the model it is given, the sites it can read, the
hooks that read and set hidden states, each hooked forward and its keyword arguments (with the mask and
position ids of left-padded rows), and the scores of an unpatched run.

One module below the engine and the other methods, so each of them uses these without importing another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from debug.causal.architectures import Architecture
from debug.causal.inputs import AnswerTokens, CausalTracingError, token_label
from debug.causal.result import UnpatchedRun
from debug.models import LoadedModel, load, load_tokenizer, require_weights

#: What each site means; copied into every result.
SITES: dict[str, str] = {
    "residual_stream": (
        "hidden state entering decoder layer l (layers[l].input); layer num_layers = final norm input"
    ),
    "attention_heads": (
        "head h's head_dim slice of the input of layer l's attention output projection (o_proj)"
    ),
    "mlp": "output of layer l's MLP block",
}


@dataclasses.dataclass
class RemoteModel(LoadedModel):
    """A model whose patching traces run through nnsight's remote path, built here without its weights.

    `model` is the module tree on PyTorch's meta device (shapes, no storage), enough to plan a sweep; the
    traces go through `nn`, nnsight's `TransformersModel` over the same id (a causal LM). With `remote=True`
    the weights stay on NDIF; with `remote="local"` nnsight loads them here on the first trace, as the
    service would there.

    Attributes:
        nn: The nnsight `TransformersModel` that sends the traces.
    """

    nn: Any = None


def remote_model(model_id: str) -> RemoteModel:
    """The weightless `RemoteModel` of a model id (a hub id; a local folder or embedded model for "local").

    Raises:
        debug.models.ModelNotAvailableError: As `debug.models.load_tokenizer`, before anything is built.
    """
    # deferred: nnsight (and its torch extensions) cost seconds to import
    from nnsight.modeling.transformers import TransformersModel

    source, tokenizer = load_tokenizer(model_id)
    nn = TransformersModel(source, task="text-generation", tokenizer=tokenizer)
    # The meta build is left in training mode; the weights nnsight or the service loads are in eval mode.
    skeleton = nn._module.eval()
    return RemoteModel(model=skeleton, tokenizer=tokenizer, model_id=model_id, fingerprint=model_id, nn=nn)


def resolve_model(model: Any, purpose: str = "a patching sweep", *, remote: bool | str = False) -> Any:
    """An id (loaded by `debug.models.load`) or anything with `.model` and `.tokenizer` (a LoadedModel).

    Args:
        model: A model id or a `LoadedModel`.
        purpose: What needs the weights, for the served-model refusal ("a patching sweep").
        remote: True or "local" (nnsight's remote path): an id becomes a weightless `RemoteModel` instead
            of being loaded here, so a model larger than this machine can be swept on NDIF.

    Raises:
        debug.models.WeightsRequiredError: For a served model (`openai:NAME@URL`): the method needs weights.
        CausalTracingError: For anything else that is not a model.
    """
    # A served (openai:) model has no activations to patch: refuse it in one line, before any work.
    require_weights(model, purpose)
    if isinstance(model, str):
        return remote_model(model) if remote else require_weights(load(model), purpose)
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        check_not_tensor_parallel(model.model, purpose)
        return model
    raise CausalTracingError(
        f"model must be a model id or a debug.models.LoadedModel; got {type(model).__name__} "
        "(wrap a transformers model as LoadedModel(model, tokenizer, model_id, fingerprint))"
    )


def check_not_tensor_parallel(model: torch.nn.Module, purpose: str) -> None:
    """Refuse a model sharded by transformers' tensor parallelism (`tp_plan="auto"` under torchrun).

    Measured with nnsight 0.8.1 and transformers 5.24: `nnsight.NNsight` over a sharded model fails inside
    the embedding (a plain input tensor meets DTensor weights), and nnsight's `TransformersModel` fails to
    import a private transformers helper (`_get_parameter_plan`). Behavioural scoring of such a model works
    (plain forwards); patching it would fail deep in the first trace, so it is refused here in one line.
    """
    if int(getattr(model, "tp_size", None) or 1) > 1:
        raise CausalTracingError(
            f"{purpose} cannot trace a tensor-parallel model (tp_plan) with this nnsight; load it with "
            'device_map="auto" (layers spread over the GPUs) instead'
        )


def check_eval(model: torch.nn.Module) -> None:
    """Refuse a model in training mode: dropout would make identical inputs show effects."""
    if model.training:
        raise CausalTracingError("the model is in training mode (dropout on); call model.eval() first")


def input_device(model: torch.nn.Module) -> torch.device:
    """Where input ids go: the embeddings' device (accelerate may spread the layers over devices).

    A `RemoteModel`'s meta-device skeleton takes its inputs on the CPU: they travel with the request.
    """
    device = model.get_input_embeddings().weight.device
    return torch.device("cpu") if device.type == "meta" else device


def site_path(arch: Architecture, site: str, layer: int) -> str:
    """The dotted path of the module whose input (output for "mlp") is `site` at `layer` (see `SITES`)."""
    if site == "residual_stream":
        return arch.spec.final_norm if layer == arch.num_layers else arch.layer_path(layer)
    if site == "mlp":
        return arch.mlp_path(layer)
    return arch.attn_out_path(layer)


def hidden_arg(args: tuple, kwargs: dict) -> Any:
    """The hidden states a forward pre-hook sees: decoder layers and norms take them first, or by name."""
    return args[0] if args else kwargs["hidden_states"]


def with_hidden_arg(args: tuple, kwargs: dict, value: Any) -> tuple[tuple, dict]:
    """What a forward pre-hook returns to set the hidden states (`hidden_arg`) to `value`: (args, kwargs)."""
    return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})


def record_hidden(module: torch.nn.Module, box: list) -> Any:
    """Hook `module` to append a detached copy of the hidden states it is given (`hidden_arg`) to `box`.

    Returns:
        The forward pre-hook's removable handle.
    """
    return module.register_forward_pre_hook(
        lambda m, a, k: box.append(hidden_arg(a, k).detach().clone()), with_kwargs=True
    )


def left_pad(
    rows: Sequence[torch.Tensor], width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token id rows left-padded to `width` (default the longest), and their attention mask (None: no pads).

    Left, so every row's last position is its own last token; the pad id is 0 and never attended to.
    """
    width = width or max(len(r) for r in rows)
    if all(len(r) == width for r in rows):
        return torch.stack(list(rows)), None
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return ids, mask


def padding_kwargs(mask: torch.Tensor | None, start: int, device: torch.device) -> dict[str, Any]:
    """The attention mask and position ids of left-padded rows run from `start` on ({} without pads).

    The mask covers every position (a prefix key/value cache's too); the position ids count only the real
    tokens, so a padded row is embedded and rotated as its unpadded program is.
    """
    if mask is None:
        return {}
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"attention_mask": mask.to(device), "position_ids": positions[:, start:].to(device)}


def hooked_forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    handles: Iterable[Any],
    *,
    grad: bool = False,
    mask: torch.Tensor | None = None,
) -> Any:
    """The output of one forward of `input_ids` with `forward_kwargs`; then the hooks' `handles` are removed.

    Args:
        model: The transformers model, its hooks already registered.
        input_ids: `[rows, seq]` token ids; moved to the model's `input_device`.
        handles: The hooks' removable handles; removed even when the forward raises.
        grad: Run under the caller's grad mode (a trained intervention needs gradients) instead of no-grad.
        mask: The attention mask of left-padded rows (`left_pad`), or None.
    """
    device = input_device(model)
    try:
        with contextlib.nullcontext() if grad else torch.no_grad():
            return model(
                input_ids=input_ids.to(device), **forward_kwargs(model), **padding_kwargs(mask, 0, device)
            )
    finally:
        for handle in handles:
            handle.remove()


def hooked_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, handles: Iterable[Any], *, grad: bool = False
) -> torch.Tensor:
    """`[rows, vocab]` float last-position logits of `hooked_forward` (same arguments)."""
    return hooked_forward(model, input_ids, handles, grad=grad).logits[:, -1].float()


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """The keyword arguments every forward of a causal method passes to `model`.

    No key/value cache is built (`use_cache=False`), and where the model supports it only the last
    position's logits are computed (`logits_to_keep=1`): the answer position is the only one ever read.
    """
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"use_cache": False} if "use_cache" in params else {}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


def unpatched_run(logits: torch.Tensor, answer: AnswerTokens, tokenizer: Any) -> UnpatchedRun:
    """LD, P(cf), P(orig) and the top-1 token of one unpatched run, from its answer-position logits."""
    logits = logits.detach().float()
    probs = torch.softmax(logits, dim=-1)
    top1 = int(logits.argmax())
    return UnpatchedRun(
        logit_diff=float(logits[answer.counterfactual_id] - logits[answer.original_id]),
        prob_counterfactual=float(probs[answer.counterfactual_id]),
        prob_original=float(probs[answer.original_id]),
        top1_id=top1,
        top1=token_label(tokenizer, top1),
    )


def cell_indices(values: Any, limit: int, name: str, default: Any = None) -> list[int]:
    """Sorted, distinct layer/position/head indices in 0..limit-1 (`default`, else all of them, when None).

    Raises:
        CausalTracingError: For an empty list or an index out of range, naming the valid range.
    """
    if values is None:
        return list(range(limit) if default is None else default)
    out = sorted({int(v) for v in values})
    bad = [v for v in out if not 0 <= v < limit]
    if bad or not out:
        raise CausalTracingError(f"{name} {bad or 'list is empty'}: choose {name}s in 0..{limit - 1}")
    return out


def answer_from_model(orig: torch.Tensor, cf: torch.Tensor, tokenizer: Any) -> AnswerTokens:
    """Answer tokens of text programs that carry no answers: the model's own top-1 on each run.

    Raises:
        CausalTracingError: When the model predicts the same token for both (nothing to trace).
    """
    o, c = int(orig.argmax()), int(cf.argmax())
    if o == c:
        raise CausalTracingError(
            f"text programs carry no answers and the model predicts {token_label(tokenizer, o)!r} for both; "
            "pass Programs (or (text, answer) tuples) with different answers"
        )
    return AnswerTokens(
        original_id=o,
        counterfactual_id=c,
        original_text=tokenizer.decode([o]),
        counterfactual_text=tokenizer.decode([c]),
        source="model",
        note="text programs without answers: scored on the model's own top-1 tokens of the two runs",
    )
