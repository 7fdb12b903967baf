"""The character-level tokenizer of the embedded models.

One token per character of printable ASCII plus newline and tab, so every prompt template in `debug.prompts`
tokenizes and token offsets map one-to-one onto program characters. Built with the `tokenizers` library and
wrapped as a transformers `PreTrainedTokenizerFast`, so it saves as `tokenizer.json` and loads through
`AutoTokenizer.from_pretrained` like any hub tokenizer.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
CHARACTERS = ["\n", "\t"] + [chr(c) for c in range(32, 127)]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fresh character-level tokenizer (left padding, `<pad>`/`<eos>`/`<unk>` specials)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every character is its own pre-token; "[\s\S]" also matches newlines.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
