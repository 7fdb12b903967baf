"""Helper for tests: a tiny BPE tokenizer trained here (there is no hub), with multi-character tokens."""

from __future__ import annotations

import functools
import random

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from debug.generators import make_variable_binding_program


@functools.cache
def tiny_bpe() -> PreTrainedTokenizerFast:
    """A BPE trained on binding programs, split only at newlines: it learns merges like '=5' and '#q:'."""
    rng = random.Random(0)
    texts = [make_variable_binding_program(16, rng).text for _ in range(300)]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("\n", behavior="isolated")
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
