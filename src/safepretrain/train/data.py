"""Training data: JSONL -> one token stream with a loss mask -> fixed-length blocks drawn by a resumable sampler.

Documents and chats alike are packed back to back (each ends with end-of-text) and cut into blocks of
``seq_len + 1`` tokens. The mask marks which tokens are loss *targets*: all of a document's by default; in chats only
the responses; never the masked token ids or the text after an Unsafe reflection when those options are on.
Streams are tokenized once per (files, tokenizer, options) and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safepretrain.errors import UserError
from safepretrain.io import read_jsonl_numbered, sha256_file
from safepretrain.markup import ReflectionFormat, after_unsafe_spans

IGNORE_INDEX = -100  # labels the loss skips (torch.nn.CrossEntropyLoss's ignore_index)


@dataclass(frozen=True)
class TokenStream:
    tokens: np.ndarray
    """uint32 token ids, documents back to back."""
    targets: np.ndarray
    """bool: may this token be a loss target?"""

    def n_blocks(self, seq_len: int) -> int:
        return max(0, (len(self.tokens) - 1) // seq_len)

    def block(self, index: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, labels) of block ``index``; labels are the next tokens, IGNORE_INDEX where masked."""
        start = index * seq_len
        window = self.tokens[start:start + seq_len + 1].astype(np.int64)
        labels = np.where(self.targets[start + 1:start + seq_len + 1], window[1:], IGNORE_INDEX)
        return window[:-1], labels


@dataclass(frozen=True)
class Tokenization:
    """What decides a stream's tokens and mask (and so its cache key)."""

    text_field: str = "text"
    masked_token_ids: tuple[int, ...] = ()
    mask_after_unsafe: bool = False
    train_on_prompt: bool = False
    reflection_format: ReflectionFormat | None = None


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for its ``*.jsonl`` shards (e.g. a pipeline's output), in name order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            shards = sorted(path.glob("*.jsonl"))
            if not shards:
                raise UserError(f"{path}: a folder with no .jsonl files to train on")
            files += shards
        else:
            files.append(path)
    return files


def load_stream(paths: Sequence[str | Path], tokenizer, options: Tokenization, cache_dir: Path) -> TokenStream:
    """Tokenize ``paths`` (files or folders of shards; or load the cached result) into one stream."""
    paths = expand_paths(paths)
    key = _cache_key(paths, tokenizer, options)
    cached = Path(cache_dir) / f"stream-{key}.npz"
    if cached.is_file():
        with np.load(cached) as f:
            return TokenStream(f["tokens"], f["targets"])
    stream = tokenize_files(paths, tokenizer, options)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, tokens=stream.tokens, targets=stream.targets)
    os.replace(tmp, cached)
    return stream


def tokenize_files(paths: Sequence[str | Path], tokenizer, options: Tokenization) -> TokenStream:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no end-of-text (eos) token; set one or train a tokenizer with safepretrain")
    tokens: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for texts, spans in _batches(paths, tokenizer, options):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for ids, offsets, trainable in zip(enc["input_ids"], enc["offset_mapping"], spans):
            tokens.append(np.asarray([*ids, tokenizer.eos_token_id], dtype=np.uint32))
            targets.append(np.asarray([*_inside(offsets, trainable), True], dtype=bool))
    if not tokens:
        raise UserError(f"no documents in {', '.join(map(str, paths))}")
    stream = TokenStream(np.concatenate(tokens), np.concatenate(targets))
    if options.masked_token_ids:
        stream.targets[np.isin(stream.tokens, options.masked_token_ids)] = False
    return stream


def _batches(paths, tokenizer, options: Tokenization, size: int = 1024) -> Iterator[tuple[list[str], list]]:
    """Texts to tokenize, each with the character spans whose tokens are loss targets."""
    texts, spans = [], []
    for path in paths:
        for number, record in read_jsonl_numbered(Path(path)):
            text, trainable = _record_text(record, tokenizer, options, f"{path}, line {number}")
            texts.append(text)
            spans.append(trainable)
            if len(texts) == size:
                yield texts, spans
                texts, spans = [], []
    if texts:
        yield texts, spans


def _record_text(record, tokenizer, options: Tokenization, where: str) -> tuple[str, list[tuple[int, int]]]:
    if isinstance(record, dict) and "messages" in record:
        text, spans = render_chat(record["messages"], tokenizer, options.train_on_prompt, where)
    elif isinstance(record, dict) and isinstance(record.get(options.text_field), str):
        text = record[options.text_field]
        spans = [(0, len(text))]
    else:
        raise UserError(f"{where}: expected a {options.text_field!r} string or a 'messages' list")
    if options.mask_after_unsafe and options.reflection_format is not None:
        spans = _subtract(spans, after_unsafe_spans(text, options.reflection_format))
    return text, spans


def render_chat(messages, tokenizer, train_on_prompt: bool, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The conversation through the tokenizer's chat template, and the character spans of its targets
    (each assistant turn, including the template's end-of-turn; everything when ``train_on_prompt``)."""
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise UserError(f"{where}: 'messages' must be a list of {{role, content}} string pairs")
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template; chat data needs one (safepretrain tokenizers have it)")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if train_on_prompt:
        return text, [(0, len(text))]
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (text.startswith(upto) and upto.startswith(prompt)):
            raise UserError("the tokenizer's chat template is not prefix-consistent; train with masking.train_on_prompt")
        spans.append((len(prompt) + _prefill_length(message, text, len(prompt), where), len(upto)))
    return text, spans


def _prefill_length(message: dict, text: str, start: int, where: str) -> int:
    """An assistant message's ``prefill``: the start of its content that is context, not a target -- a forced
    answer start the model is taught to recover from (as after a prefill attack)."""
    prefill = message.get("prefill")
    if prefill is None:
        return 0
    if not isinstance(prefill, str) or not message["content"].startswith(prefill):
        raise UserError(f"{where}: an assistant message's 'prefill' must be a string its content starts with")
    if not text.startswith(message["content"], start):
        raise UserError(f"{where}: the chat template changes the assistant's content, so its 'prefill' cannot be "
                        "placed; drop the prefill or use another template")
    return len(prefill)


def _inside(offsets, spans: list[tuple[int, int]]) -> list[bool]:
    """Is each token (by its first character) inside one of ``spans``?"""
    starts = np.fromiter((a for a, _ in offsets), dtype=np.int64, count=len(offsets))
    keep = np.zeros(len(offsets), dtype=bool)
    for a, b in spans:
        keep |= (starts >= a) & (starts < b)
    return keep.tolist()


def _subtract(spans: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for ha, hb in holes:
        spans = [piece for a, b in spans for piece in ((a, min(b, ha)), (max(a, hb), b)) if piece[0] < piece[1]]
    return spans


def _cache_key(paths, tokenizer, options: Tokenization) -> str:
    fingerprint = {
        "files": [sha256_file(Path(p)) for p in paths],
        "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "chat_template": tokenizer.chat_template,
        "eos": tokenizer.eos_token_id,
        "options": [options.text_field, list(options.masked_token_ids), options.mask_after_unsafe,
                    options.train_on_prompt, options.reflection_format.name if options.reflection_format else None],
    }
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


class BlockSampler:
    """Which block of which stream fills each slot of each global batch.

    Each stream is read in a fresh seeded permutation per epoch; its cursor (blocks read so far) is the data position a
    checkpoint stores. Which stream a slot reads is a pure function of (seed, step, slot), so every rank of a
    distributed run draws the same global batch and takes its own slice of it.
    """

    def __init__(self, n_blocks: Sequence[int], seed: int, intervened_from_step: int | None = None, mix: float = 1.0):
        self.n_blocks = list(n_blocks)
        self.seed = seed
        self.intervened_from_step = intervened_from_step
        self.mix = mix
        self.cursors = [0] * len(self.n_blocks)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def next_batch(self, step: int, size: int) -> list[tuple[int, int]]:
        """(stream, block) for each of the ``size`` slots of optimizer step ``step``; advances the cursors."""
        sources = self._sources(step, size)
        batch = []
        for stream in sources:
            cursor = self.cursors[stream]
            epoch, offset = divmod(cursor, self.n_blocks[stream])
            batch.append((stream, int(self._permutation(stream, epoch)[offset])))
            self.cursors[stream] = cursor + 1
        return batch

    def _sources(self, step: int, size: int) -> np.ndarray:
        if self.intervened_from_step is None or step < self.intervened_from_step or len(self.n_blocks) < 2:
            return np.zeros(size, dtype=np.int64)
        rng = np.random.default_rng([self.seed, 1, step])
        return (rng.random(size) < self.mix).astype(np.int64)

    def _permutation(self, stream: int, epoch: int) -> np.ndarray:
        key = (stream, epoch)
        if key not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k[0] != stream}  # keep one epoch per stream
            self._perms[key] = np.random.default_rng([self.seed, 0, stream, epoch]).permutation(self.n_blocks[stream])
        return self._perms[key]

    def state_dict(self) -> dict:
        return {"cursors": list(self.cursors)}

    def load_state_dict(self, state: dict) -> None:
        self.cursors = [int(c) for c in state["cursors"]]


def collate(streams: Sequence[TokenStream], picks: Sequence[tuple[int, int]], seq_len: int):
    """Stack the picked blocks into (input_ids, labels) tensors."""
    inputs, labels = zip(*(streams[s].block(b, seq_len) for s, b in picks))
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(labels))
