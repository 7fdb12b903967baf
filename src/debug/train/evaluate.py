"""Held-out evaluation of a training run: accuracy by hop beside the heuristic baselines, and by family.

The held-out set is `eval_programs`: 16-line paper-style programs seeded from `EVAL_BASE_SEED`, a namespace
the training stream never draws from. `evaluate` scores greedy first answers (teacher-forced, one forward)
and says how often the model agrees with each copy heuristic, which is what tells the plateau's copying phase
from dereferencing. The model card, the progress lines and `debug train-report` all read these numbers.

A run that trains more than binding (`TrainConfig.eval_per_length > 0`) is also measured on every program
family in `FAMILIES`, at each of its lengths (`family_programs`, seeded from the same namespace), by
`evaluate_families`: greedy answers decoded and parsed exactly as the eval suite scores a query-form task
(`debug.scoring.score_programs` with the raw-program template and `debug.parsing.parser_for`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from debug.baselines import heuristic_baselines, predict_copy_last_constant, predict_copy_line_1
from debug.generators import GENERATORS, make_variable_binding_program
from debug.misreadings import misreading_rates
from debug.models import LoadedModel
from debug.programs import Program, as_program
from debug.scoring import score_programs, teacher_forced

#: Held-out programs are seeded from this base (the training stream draws 48-bit seeds from its own rng).
EVAL_BASE_SEED = 987_654_321

#: The copy heuristics whose agreement with the model `evaluate` measures.
HEURISTICS = {"copy_line_1": predict_copy_line_1, "copy_last_constant": predict_copy_last_constant}


def eval_programs(per_hop: int) -> list[Program]:
    """The held-out set: `per_hop` 16-line paper-style programs at each hop count 1..4."""
    # Seeded here rather than through `debug.programs.generate`, so the held-out set of a shipped model card
    # stays the same whatever the harness's own seeding scheme becomes.
    out: list[Program] = []
    for hops in range(1, 5):
        for i in range(per_hop):
            digest = hashlib.sha256(f"{EVAL_BASE_SEED + hops}:16:{i}".encode()).hexdigest()
            out.append(make_variable_binding_program(16, random.Random(int(digest[:12], 16)), num_hops=hops))
    return out


def evaluate(model: Any, tokenizer: Any, programs: Sequence[Program]) -> dict[str, Any]:
    """Held-out accuracy overall and by hop, with heuristic baselines and the model's agreement with them.

    `agreement` is the share of programs where the model's greedy first answer token is the first token of
    the heuristic's guess, whether or not that guess is right: a model in the copying phase agrees with a
    copy heuristic far beyond that heuristic's accuracy, a model that dereferences only where it is right.
    `misreadings` says which misreadings of the programs give the wrong answers, beside their chance shares
    (`debug.misreadings.misreading_rates`).
    """
    model.eval()
    forced = teacher_forced(model, tokenizer, programs)
    correct = [pred == answer for pred, answer in forced]
    agrees = {name: _agreement(predict, programs, forced, tokenizer) for name, predict in HEURISTICS.items()}

    def summary(idx: list[int]) -> dict[str, Any]:
        group = [programs[i] for i in idx]
        return {
            "n": len(idx),
            "accuracy": sum(correct[i] for i in idx) / len(idx),
            "baselines": heuristic_baselines(group),
            "agreement": {name: sum(a[i] for i in idx) / len(idx) for name, a in agrees.items()},
        }

    by_hop = {
        str(hops): summary([i for i, p in enumerate(programs) if p.metadata["hops"] == hops])
        for hops in sorted({p.metadata["hops"] for p in programs})
    }
    first = [tokenizer.decode(pred[:1]).strip() for pred, _ in forced]
    answers = [int(text) if text.isdigit() else None for text in first]
    return summary(list(range(len(programs)))) | {
        "by_hop": by_hop,
        "misreadings": misreading_rates(programs, answers),
    }


def _agreement(
    predict: Any, programs: Sequence[Program], forced: Sequence[Any], tokenizer: Any
) -> list[bool]:
    # Whether the model's first answer token is the first token of the heuristic's guess, program by program.
    out = []
    for program, (pred, _) in zip(programs, forced, strict=True):
        guess = predict(program)
        ids = tokenizer(str(guess), add_special_tokens=False)["input_ids"] if guess is not None else []
        out.append(bool(ids) and pred[:1] == ids[:1])
    return out


def short_eval(result: dict[str, Any]) -> dict[str, Any]:
    """One history row: accuracy by hop and the agreement with each copy heuristic (the phase signal)."""
    return (
        {"accuracy": round(result["accuracy"], 4)}
        | {f"hop{h}": round(v["accuracy"], 4) for h, v in result["by_hop"].items()}
        | {f"agree_{k}": round(v, 4) for k, v in result["agreement"].items()}
    )


def baseline_line(result: dict[str, Any]) -> str:
    """The copy heuristics' accuracy on the held-out set, as a progress line shows it after each eval."""
    # The plateau is read against these: a binder that only copies tracks copy_line_1 / copy_last_constant.
    b = result["baselines"]
    return f"(copy_line_1 {b['copy_line_1']:.3f}, copy_last_constant {b['copy_last_constant']:.3f})"


@dataclass(frozen=True)
class Family:
    """One program family of the per-family evaluation, in its query form.

    Attributes:
        name: The family's name in histories and reports (`range`, `boolean`, ...).
        generator: A name in `debug.generators.GENERATORS`.
        seq_lens: The lengths measured: the eval suite's default lengths (`default_lens`), then longer ones.
        default_lens: The lengths the eval suite's task measures by default (`evals/test_*.py`).
        knobs: Keyword arguments for the generator (always with `query=True`).
    """

    name: str
    generator: str
    seq_lens: tuple[int, ...]
    default_lens: tuple[int, ...]
    knobs: dict[str, Any] = field(default_factory=lambda: {"query": True})


_Q = {"query": True}
#: Every family the eval suite measures in its query form, at the suite's default lengths and beyond them
#: (binding to 24 lines, loops and integer tracking to 8 and 12 steps): what a length-general model must hold.
FAMILIES: tuple[Family, ...] = (
    Family("binding", "make_variable_binding_program", (4, 8, 16, 24), (4, 8, 16)),
    Family("binding_spaced", "make_variable_binding_program", (8, 16, 24), (16,), {"style": "spaced"}),
    Family("range", "make_range_program", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("range_lines", "make_range_program_lines", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("increments", "make_variable_increments", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("arithmetic", "make_arithmetic_sequence", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("counter", "make_counter_program", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("fibonacci", "make_fibonacci_program", (2, 4, 6, 8, 12), (2, 4, 6), _Q),
    Family("exception", "make_exception_program", (1, 2, 3, 4), (1, 2, 3), _Q),
    Family("boolean", "make_boolean_program", (2, 4, 6, 8), (2, 4, 6), _Q),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def family_programs(
    per_length: int, families: Sequence[Family] = FAMILIES
) -> dict[str, dict[int, list[Program]]]:
    """The per-family held-out sets: `per_length` programs of every family at each of its lengths.

    Seeds come from `EVAL_BASE_SEED`'s namespace (a hash of the family, length and index), never from a
    training stream's rng, exactly as `eval_programs` keeps the binding set apart. Short loop programs have
    few distinct texts (a counter program has one per length), so held out means unseen seeds, not texts
    the training can never produce.
    """
    out: dict[str, dict[int, list[Program]]] = {}
    for fam in families:
        generate = GENERATORS[fam.generator]
        out[fam.name] = {}
        for seq_len in fam.seq_lens:
            progs = []
            for i in range(per_length):
                digest = hashlib.sha256(f"{EVAL_BASE_SEED}:{fam.name}:{seq_len}:{i}".encode()).hexdigest()
                rng = random.Random(int(digest[:12], 16))
                progs.append(as_program(generate(seq_len, rng, **fam.knobs)))
            out[fam.name][seq_len] = progs
    return out


def evaluate_families(
    model: Any, tokenizer: Any, sets: dict[str, dict[int, list[Program]]]
) -> dict[str, dict[str, float]]:
    """Held-out accuracy by family and length: {family: {str(seq_len): accuracy}}.

    Scored as the eval suite scores a query-form task: greedy decoding after the raw program (template
    `{code}`), the answer parsed by `debug.parsing.parser_for` of the expected answer, right when the parsed
    value equals it in type and value.
    """
    model.eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, model_id="training", fingerprint="training")
    keys = [(name, seq_len) for name, by_len in sets.items() for seq_len in by_len]
    flat = [p for name, seq_len in keys for p in sets[name][seq_len]]
    samples = score_programs(loaded, flat, "{code}")
    out: dict[str, dict[str, float]] = {}
    start = 0
    for name, seq_len in keys:
        n = len(sets[name][seq_len])
        right = sum(s.correct for s in samples[start : start + n])
        out.setdefault(name, {})[str(seq_len)] = round(right / max(1, n), 4)
        start += n
    return out


def family_line(by_family: dict[str, dict[str, float]]) -> str:
    """The per-family accuracies as one progress line: `binding 4:1.00 8:0.99 | range 2:0.95 ...`."""
    return " | ".join(
        f"{name} " + " ".join(f"{n}:{acc:.2f}" for n, acc in by_len.items())
        for name, by_len in by_family.items()
    )
