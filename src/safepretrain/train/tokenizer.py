"""Tokenizers: train a byte-level BPE with the toolkit's special tokens, or load any saved HF tokenizer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.io import read_jsonl_numbered
from safepretrain.markup import CHAT_TEMPLATE, END_OF_TEXT, PAD, SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE (GPT-2 style: any text round-trips) whose special tokens are single ids.

    Returns a ``transformers.PreTrainedTokenizerFast`` with the toolkit's chat template; save it with
    ``save_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise UserError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {minimum}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT, pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END_OF_TEXT, PAD)],
        chat_template=CHAT_TEMPLATE, model_max_length=1 << 20,
    )


def corpus_texts(paths: Sequence[Path], text_field: str = "text") -> Iterator[str]:
    """The text of every record: documents' ``text_field``, chats' message contents."""
    for path in paths:
        for number, record in read_jsonl_numbered(Path(path)):
            if isinstance(record, dict) and isinstance(record.get(text_field), str):
                yield record[text_field]
            elif isinstance(record, dict) and isinstance(record.get("messages"), list):
                yield from (m["content"] for m in record["messages"] if isinstance(m, dict) and "content" in m)
            else:
                raise UserError(f"{path}, line {number}: expected a {text_field!r} string or a 'messages' list")


def load_tokenizer(path: str | Path):
    """A saved HF tokenizer folder; a clear error when the folder holds none."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise UserError(f"{path}: no tokenizer here (expected tokenizer.json); "
                        "train one with `safepretrain tokenizer train` or pass --set model.tokenizer=DIR")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load the tokenizer ({e})") from None
