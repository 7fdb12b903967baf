"""Behavioural scoring speed: `debug.scoring.score_programs` against the seed's method, side by side.

The seed scored programs with transformers' `pipeline("text-generation")`, batched and greedy, then parsed
the text. This script runs both on the same model and the same programs, alternating them `--repeats` times,
checks that the parsed answers agree, and prints the median speed ratio. Our side also measures the
teacher-forced log-probability of every expected answer, which the pipeline does not.

    python bench/behaviour.py                       # the embedded default model
    python bench/behaviour.py --model path/to/folder --num-seqs 50 --seq-lens 4 8 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from debug import DEFAULT_MODEL, models, prompts
from debug.generators import make_variable_binding_program
from debug.parsing import parser_for
from debug.programs import Program, generate_programs
from debug.scoring import score_programs


def run_pipeline(
    loaded: models.LoadedModel, programs: list[Program], template: str, batch_size: int, max_new_tokens: int
) -> list[object]:
    """The seed's method: a text-generation pipeline, batched, greedy; answers parsed from the new text."""
    from transformers import pipeline

    generator = pipeline(
        "text-generation", model=loaded.model, tokenizer=loaded.tokenizer, device=loaded.device
    )
    texts = [template.replace("{code}", p.text) for p in programs]
    outputs = generator(
        texts, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False
    )
    return [parser_for(p.answer)(out[0]["generated_text"]) for p, out in zip(programs, outputs)]


def random_model_dir(folder: str) -> str:
    """A random-weight copy of the embedded architecture: it never emits <eos>, like a hub model that keeps
    talking after its answer, so the pipeline spends its whole token budget."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from debug.tokenizer import build_char_tokenizer

    source = models.EMBEDDED.get(DEFAULT_MODEL) or next(iter(models.EMBEDDED.values()))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id (default: debug.DEFAULT_MODEL)")
    parser.add_argument("--num-seqs", type=int, default=40, help="programs per seq_len")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--batch-size", type=int, default=32, help="the same batch size for both sides")
    parser.add_argument("--pipeline-max-new-tokens", type=int, default=10, help="the pipeline's budget")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-weights", action="store_true", help="a random model of the same shape")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model_id = args.model or (
        DEFAULT_MODEL if DEFAULT_MODEL in models.EMBEDDED else next(iter(models.EMBEDDED))
    )
    scratch = tempfile.TemporaryDirectory(prefix="debug-bench-")
    if args.random_weights:
        model_id = random_model_dir(scratch.name)
    loaded = models.load(model_id)
    template = prompts.VARIABLE_BINDING
    programs = [
        p
        for n in args.seq_lens
        for p in generate_programs(make_variable_binding_program, n, args.num_seqs, 99)
    ]
    ours_t, theirs_t = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = score_programs(loaded, programs, template, batch_size=args.batch_size)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = run_pipeline(loaded, programs, template, args.batch_size, args.pipeline_max_new_tokens)
        theirs_t.append(time.perf_counter() - start)
    agree = sum(s.predicted_answer == t for s, t in zip(ours, theirs))
    accuracy = sum(s.correct for s in ours) / len(ours)
    ours_med, theirs_med = statistics.median(ours_t), statistics.median(theirs_t)
    print(
        f"model {model_id} ({loaded.fingerprint}) on {loaded.device}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{len(programs)} programs (seq_lens {args.seq_lens}), batch {args.batch_size}, "
        f"{args.repeats} repeats"
    )
    print(f"score_programs : median {ours_med:.3f} s  (answers + answer log-probs; accuracy {accuracy:.3f})")
    print(f"pipeline       : median {theirs_med:.3f} s  (max_new_tokens={args.pipeline_max_new_tokens})")
    print(f"answers agree  : {agree}/{len(programs)}")
    print(f"speed ratio    : {theirs_med / ours_med:.1f}x")
    scratch.cleanup()
    return 0 if agree == len(programs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
