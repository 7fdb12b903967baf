"""The training-data stream of `debug.train.loop`: seeded program plans, encoding, and a background producer.

A batch is made in two parts. The *plan* (which data source, which program length, which 48-bit program
seed) is drawn from the run's one `random.Random`, in order, in the main process, from the mix that the
`Curriculum` gives the batch's step: it is cheap, and drawing it
there keeps the stream a pure function of the seed whatever the number of workers. *Building* the batch
(generating the programs from their seeds and tokenizing them) is the slow, pure-Python part; with
`workers > 0` it runs in worker processes ahead of the training loop, and the batches come back in plan
order, so `workers=N` gives exactly the batches of `workers=0`.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import multiprocessing
import random
from collections.abc import Sequence
from typing import Any

from debug.chain import values_by_line
from debug.generators import GENERATORS
from debug.programs import Program, as_program

#: One program's plan: (index into the mix, program length, program seed).
Plan = tuple[int, int, int]


def plan_programs(mix: Sequence[Any], rng: random.Random, n: int) -> list[Plan]:
    """Draw the plans of `n` training programs from `rng` (the order of draws is part of every recipe)."""
    weights = [s.weight for s in mix]
    plans = []
    for index in rng.choices(range(len(mix)), weights=weights, k=n):
        lens = mix[index].seq_lens
        seq_len = lens[int(rng.random() * len(lens))]
        plans.append((index, seq_len, rng.getrandbits(48)))
    return plans


def stage_spans(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """The first and last 1-based step of each curriculum stage, given the stages' lengths in order."""
    ends = list(itertools.accumulate(lengths))
    return [(end - length + 1, end) for length, end in zip(lengths, ends, strict=True)]


class Curriculum:
    """Which data mix each training step draws from: each stage's mix for its steps, in order, then `mix`.

    Plans index into `sources`, every stage's sources followed by the final mix's, so one flat tuple serves
    the workers whatever the step. Without stages the plans are exactly `plan_programs(mix, ...)`'s: a run
    with no curriculum draws the same data it always did.

    Args:
        mix: The data sources once every stage is done (`TrainConfig.mix`).
        stages: Objects with `steps` (how many optimizer steps) and `mix` (their data sources), in order.
    """

    def __init__(self, mix: Sequence[Any], stages: Sequence[Any] = ()) -> None:
        self.mixes = [tuple(stage.mix) for stage in stages] + [tuple(mix)]
        self.sources = tuple(source for m in self.mixes for source in m)
        for stage in stages:
            if stage.steps < 1 or not stage.mix:
                raise ValueError(f"a curriculum stage needs steps >= 1 and a data source; got {stage!r}")
        self.ends = [last for _, last in stage_spans([stage.steps for stage in stages])]
        self.offsets = [0]
        for m in self.mixes[:-1]:
            self.offsets.append(self.offsets[-1] + len(m))

    def stage(self, step: int) -> int:
        """The index of the stage that 1-based `step` belongs to (`len(stages)` for the final mix)."""
        return bisect.bisect_left(self.ends, step)

    def plan(self, rng: random.Random, n: int, step: int) -> list[Plan]:
        """The plans of step `step`'s `n` programs, drawn from `rng` out of that step's mix."""
        k = self.stage(step)
        offset = self.offsets[k]
        return [
            (offset + index, seq_len, seed) for index, seq_len, seed in plan_programs(self.mixes[k], rng, n)
        ]


def build_programs(mix: Sequence[Any], plans: Sequence[Plan]) -> list[Program]:
    """The programs that `plans` describe, each from its own `random.Random(seed)`."""
    out = []
    for index, seq_len, seed in plans:
        source = mix[index]
        out.append(as_program(GENERATORS[source.generator](seq_len, random.Random(seed), **source.knobs)))
    return out


def line_values(text: str) -> list[tuple[int, str]]:
    """(newline offset, value) for every assignment line whose variable holds a known value after it.

    The values are `debug.chain.values_by_line`'s; a last line with no newline after it has no offset and is
    left out.
    """
    out = []
    end = -1
    for line, value in zip(text.split("\n"), values_by_line(text), strict=True):
        end += len(line) + 1  # the offset of this line's newline
        if value is not None and end < len(text):
            out.append((end, value))
    return out


def encode_lists(
    programs: Sequence[Program], tokenizer: Any, line_targets: bool = False
) -> tuple[list[list[int]], list[list[int]]]:
    """Unpadded `text + answer + <eos>` id rows and their labels (-100 outside the answer and eos).

    With `line_targets`, the output at every assignment line's newline is also trained to give (the first
    token of) the value that line's variable holds there (`line_values`). The model never emits text at
    those positions when answering, so the prompt format is unchanged; the targets hand it every
    intermediate hop of every chain in the program instead of one final answer.
    """
    # One batched tokenizer call per list: the per-call overhead, not the characters, is what costs.
    prompts = tokenizer([p.text for p in programs], add_special_tokens=False)
    answers = tokenizer([str(p.answer) for p in programs], add_special_tokens=False)["input_ids"]
    first_token: dict[str, int] = {}  # value text -> its first token id
    rows, labels = [], []
    for i, p in enumerate(programs):
        prompt = prompts["input_ids"][i]
        answer = answers[i] + [tokenizer.eos_token_id]
        label = [-100] * len(prompt) + answer
        if line_targets:
            for offset, value in line_values(p.text):
                token = prompts.char_to_token(i, offset)
                # Labels are shifted: the label at token + 1 scores the output at the newline itself.
                if token is not None and token + 1 < len(prompt):
                    if value not in first_token:
                        first_token[value] = tokenizer(value, add_special_tokens=False)["input_ids"][0]
                    label[token + 1] = first_token[value]
        rows.append(prompt + answer)
        labels.append(label)
    return rows, labels


def pad_batch(rows: list[list[int]], labels: list[list[int]], pad: int) -> dict[str, Any]:
    """Right-pad id rows into `input_ids`, `attention_mask` and `labels` tensors."""
    import torch  # at use: torch costs seconds to import, and the stream's workers never need it

    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


# Per-worker globals, set once by `_init_worker` so each task ships only its plans.
_WORKER: dict[str, Any] = {}


def _init_worker(sources: Sequence[Any], line_targets: bool) -> None:
    from debug.tokenizer import build_char_tokenizer  # at use: it imports transformers (seconds)

    _WORKER["sources"] = sources
    _WORKER["line_targets"] = line_targets
    _WORKER["tokenizer"] = build_char_tokenizer()


def _build_lists(plans: Sequence[Plan]) -> tuple[list[list[int]], list[list[int]]]:
    # Plain lists cross the process boundary: workers never touch torch (no OpenMP state after fork).
    programs = build_programs(_WORKER["sources"], plans)
    return encode_lists(programs, _WORKER["tokenizer"], _WORKER["line_targets"])


class BatchStream:
    """Encoded training batches in a fixed order, optionally built ahead by worker processes.

    Args:
        curriculum: The run's data mix by step (`Curriculum(config.mix, config.curriculum)`).
        rng: The run's data rng; the stream draws every plan from it, in order.
        batch_size: Programs per batch.
        tokenizer: The char tokenizer (used in-process when `workers == 0`).
        workers: Worker processes building batches ahead (0: build each batch when asked).
        prefetch: Batches kept in flight per worker.
        line_targets: Also label every assignment line's value (see `encode_lists`).
    """

    def __init__(
        self,
        curriculum: Curriculum,
        rng: random.Random,
        batch_size: int,
        tokenizer: Any,
        workers: int = 0,
        prefetch: int = 4,
        line_targets: bool = False,
    ) -> None:
        if workers < 0:
            raise ValueError(f"data workers must be >= 0 (0 builds batches in-process); got {workers}")
        self.curriculum, self.rng, self.batch_size, self.tokenizer = curriculum, rng, batch_size, tokenizer
        self.planned = 0  # the step of the last batch planned
        self.depth = workers * prefetch
        self.line_targets = line_targets
        # (rng state before this batch's plan, pending result) for batches drawn but not yet consumed.
        self._pending: collections.deque[tuple[Any, Any]] = collections.deque()
        self._pool = None
        if workers:
            # fork: workers start in milliseconds and inherit the imported modules; they run pure Python.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ctx.Pool(
                workers, initializer=_init_worker, initargs=(curriculum.sources, line_targets)
            )

    def rng_state(self) -> Any:
        """The data rng's state right after the last batch handed out (what a resume must restore)."""
        return self._pending[0][0] if self._pending else self.rng.getstate()

    def restore(self, step: int, rng_state: Any) -> None:
        """Continue after `step`, with the data rng as `rng_state` left it (a resume, before any batch)."""
        if self._pending:
            raise RuntimeError("restore a stream before drawing batches from it")
        self.planned = step
        self.rng.setstate(rng_state)

    def _plan(self) -> list[Plan]:
        self.planned += 1
        return self.curriculum.plan(self.rng, self.batch_size, self.planned)

    def _submit(self) -> None:
        state = self.rng.getstate()
        plans = self._plan()
        assert self._pool is not None
        self._pending.append((state, self._pool.apply_async(_build_lists, (plans,))))

    def next(self) -> dict[str, Any]:
        """The next batch of the stream as padded tensors."""
        if self._pool is None:
            programs = build_programs(self.curriculum.sources, self._plan())
            rows, labels = encode_lists(programs, self.tokenizer, self.line_targets)
        else:
            while len(self._pending) < self.depth:
                self._submit()
            rows, labels = self._pending.popleft()[1].get()
        return pad_batch(rows, labels, self.tokenizer.pad_token_id)

    def close(self) -> None:
        """Stop the workers (batches still in flight are dropped; `rng_state` stays valid)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sample_programs(config: Any, rng: random.Random, n: int) -> list[Program]:
    """Draw `n` training programs from `config.mix`, every choice and program seed taken from `rng`.

    Each program gets its own `random.Random(seed)` with a 48-bit seed drawn from `rng`; the scheme is fixed
    here (not borrowed from `debug.programs.generate`) so a recipe's data never changes.
    """
    return build_programs(config.mix, plan_programs(config.mix, rng, n))


def encode(programs: Sequence[Program], tokenizer: Any, line_targets: bool = False) -> dict[str, Any]:
    """Right-padded `text + answer + <eos>` ids with labels on the answer and eos (and, with `line_targets`,
    on every assignment line's value); -100 elsewhere."""
    return pad_batch(*encode_lists(programs, tokenizer, line_targets), tokenizer.pad_token_id)
