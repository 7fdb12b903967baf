"""Behavioural scoring speed: `debug.scoring.score_programs` against the seed's method, side by side.

The seed scored programs with transformers' `pipeline("text-generation")`, batched and greedy, then parsed the
text. This script runs both on the same model and the same programs in one process, alternating them
`--repeats` times, and prints the median time of each and their ratio, for every case it runs (all of them are
printed; none is dropped).

The comparison, stated:

- the seed's side is `pipeline("text-generation")` with the same batch size as ours, `do_sample=False`,
  `return_full_text=False`, a fixed `max_new_tokens` for every prompt, stopping at `<eos>` only (the pipeline
  has no newline stop). The fixed budget is the one our scorer gives the longest expected answer (its token
  count plus `debug.scoring.ANSWER_MARGIN`), the least that finishes every answer under our rules, so the
  pipeline is not handed extra steps; `--pipeline-max-new-tokens` overrides it.
- our side is `score_programs` with that batch size and its defaults (answer budget per row, newline stop),
  and it also measures the teacher-forced log-probability of every expected answer, which the pipeline does
  not. A second line times our default batching (`batch_size=None`).
- agreement is checked twice: parsed answers, and raw text (the pipeline's text cut by our stop rules must
  equal ours exactly).

Cases (default: all three): `embedded` (the shipped model, which ends its answers with `<eos>`), `random`
(random weights of the same shape: it never stops by itself, like a hub model that keeps talking after its
answer) and `random-8x256` (a random Qwen3 of 8 layers, hidden 256, closer to real models in cost per token).

    python bench/behaviour.py --threads 1
    python bench/behaviour.py --cases embedded --num-seqs 50 --seq-lens 4 8 16
    python bench/behaviour.py --model path/to/folder
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from debug import DEFAULT_MODEL, models, prompts
from debug.generators import make_variable_binding_program
from debug.parsing import parser_for
from debug.programs import Program, generate_programs
from debug.scoring import ANSWER_MARGIN, answer_continuation, score_programs


def run_pipeline(
    loaded: models.LoadedModel, programs: list[Program], template: str, batch_size: int, max_new_tokens: int
) -> list[str]:
    """The seed's method: a text-generation pipeline, batched, greedy, `<eos>` stop; new text per prompt."""
    from transformers import pipeline

    generator = pipeline(
        "text-generation", model=loaded.model, tokenizer=loaded.tokenizer, device=loaded.device
    )
    texts = [template.replace("{code}", p.text) for p in programs]
    outputs = generator(
        texts, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False
    )
    return [out[0]["generated_text"] for out in outputs]


def cut_like_ours(tokenizer: Any, text: str, limit: int) -> str:
    """The pipeline's text cut by our direct-answer stop rules: a newline after some text, `limit` tokens."""
    kept: list[int] = []
    spoke = False
    for tok in tokenizer(text, add_special_tokens=False)["input_ids"]:
        kept.append(tok)
        piece = tokenizer.decode([tok], skip_special_tokens=True)
        if "\n" in piece and (spoke or piece.split("\n")[0].strip()) or len(kept) >= limit:
            break
        spoke = spoke or bool(piece.strip())
    return tokenizer.decode(kept, skip_special_tokens=True)


def random_model_dir(folder: str, layers: int | None = None, hidden: int | None = None) -> str:
    """A random-weight Qwen3 over the character tokenizer: the embedded shape, or `layers` x `hidden`.

    Random weights never choose `<eos>` on purpose, like a hub model that keeps talking after its answer, so
    the pipeline spends its whole token budget.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from debug.tokenizer import build_char_tokenizer

    source = models.EMBEDDED.get(DEFAULT_MODEL) or next(iter(models.EMBEDDED.values()))
    config = AutoConfig.from_pretrained(source)
    if layers is not None and hidden is not None:
        config.num_hidden_layers, config.hidden_size = layers, hidden
        config.intermediate_size, config.num_attention_heads, config.num_key_value_heads = 4 * hidden, 8, 8
        config.head_dim = hidden // 8
        config.layer_types = ["full_attention"] * layers
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def _timed(fn: Any, times: list[float]) -> Any:
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
    return result


def run_case(name: str, model_id: str, programs: list[Program], args: argparse.Namespace) -> dict[str, Any]:
    """Time both sides on one model; print and return the figures."""
    loaded = models.load(model_id)
    template = prompts.VARIABLE_BINDING
    tok = loaded.tokenizer
    answer_lens = [
        len(tok(answer_continuation(template, p.answer), add_special_tokens=False)["input_ids"])
        for p in programs
    ]
    budget = args.pipeline_max_new_tokens or max(answer_lens) + ANSWER_MARGIN
    ours_t: list[float] = []
    default_t: list[float] = []
    theirs_t: list[float] = []
    for _ in range(args.repeats):
        ours = _timed(lambda: score_programs(loaded, programs, template, batch_size=args.batch_size), ours_t)
        theirs = _timed(lambda: run_pipeline(loaded, programs, template, args.batch_size, budget), theirs_t)
        _timed(lambda: score_programs(loaded, programs, template), default_t)
    parsed = [parser_for(p.answer)(text) for p, text in zip(programs, theirs)]
    agree = sum(s.predicted_answer == t for s, t in zip(ours, parsed))
    raw_agree = sum(
        s.raw_output == cut_like_ours(tok, text, n + ANSWER_MARGIN)
        for s, text, n in zip(ours, theirs, answer_lens)
    )
    accuracy = sum(s.correct for s in ours) / len(ours)
    ours_med, theirs_med, default_med = (statistics.median(t) for t in (ours_t, theirs_t, default_t))
    print(f"[{name}] model {model_id} ({loaded.fingerprint}) on {loaded.device}")
    print(f"  score_programs batch {args.batch_size:>4}: median {ours_med:.3f} s  (accuracy {accuracy:.3f})")
    print(f"  score_programs default   : median {default_med:.3f} s")
    print(
        f"  pipeline batch {args.batch_size:>4}      : median {theirs_med:.3f} s  (max_new_tokens={budget})"
    )
    print(f"  answers agree {agree}/{len(programs)}, raw texts agree {raw_agree}/{len(programs)}")
    print(
        f"  speed ratio (same batch) {theirs_med / ours_med:.2f}x, "
        f"(our default batching) {theirs_med / default_med:.2f}x"
    )
    models.unload(loaded.model_id)
    return {"name": name, "ok": agree == raw_agree == len(programs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="one model id instead of the cases")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["embedded", "random", "random-8x256"],
        choices=["embedded", "random", "random-8x256"],
    )
    parser.add_argument("--num-seqs", type=int, default=40, help="programs per seq_len")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--batch-size", type=int, default=32, help="the same batch size for both sides")
    parser.add_argument(
        "--pipeline-max-new-tokens",
        type=int,
        default=None,
        help="the pipeline's fixed budget (default: longest expected answer's tokens + ANSWER_MARGIN)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-weights", action="store_true", help="same as --cases random")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    programs = [
        p
        for n in args.seq_lens
        for p in generate_programs(make_variable_binding_program, n, args.num_seqs, 99)
    ]
    print(
        f"{len(programs)} programs (seq_lens {args.seq_lens}), batch {args.batch_size}, "
        f"{args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    scratch = tempfile.TemporaryDirectory(prefix="debug-bench-")
    if args.model:
        cases = [("model", args.model)]
    else:
        embedded = DEFAULT_MODEL if DEFAULT_MODEL in models.EMBEDDED else next(iter(models.EMBEDDED))
        builders = {
            "embedded": lambda: embedded,
            "random": lambda: random_model_dir(f"{scratch.name}/random"),
            "random-8x256": lambda: random_model_dir(f"{scratch.name}/random-8x256", 8, 256),
        }
        names = ["random"] if args.random_weights else args.cases
        cases = [(name, builders[name]()) for name in names]
    results = [run_case(name, model_id, programs, args) for name, model_id in cases]
    scratch.cleanup()
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
