"""What guarded decoding watches and what the suppression attack forbids, per sequence, token by token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from safepretrain.markup import HARMFUL_TAG, Reflection, ReflectionFormat


class ReflectionWatcher:
    """Finds the model's reflections as it writes them, cheaply, and decides on each as soon as its label is written.

    Decoding the whole answer after every token would cost O(length^2); a reflection can only open, close or get its
    label on a token whose text holds the last character of a marker (``MarkerEnds.marker``) or, while a reflection
    is open, of a label (``MarkerEnds.label``), so only those tokens trigger a look.
    """

    def __init__(self, tokenizer, fmt: ReflectionFormat, stop_labels: Sequence[str], prefill: str = ""):
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.stop_labels = tuple(stop_labels)
        self.prefill = prefill
        self.ids: list[int] = []
        self.reflections: tuple[Reflection, ...] = ()
        """The model's reflections so far whose label is written (``ReflectionFormat.decisions``)."""
        self.awaiting_label = False
        self.since_reflection = 0
        """Tokens written since the last reflection's label (or since the start)."""

    def push(self, token_id: int, ends_marker: bool, ends_label: bool) -> Reflection | None:
        """Add a generated token; return the reflection that tells decoding to stop, if this token wrote its label."""
        self.ids.append(token_id)
        self.since_reflection += 1
        if not (ends_marker or (ends_label and self.awaiting_label)):
            return None
        text = self.text()
        decisions = self.fmt.decisions(text)
        self.awaiting_label = text.rfind(self.fmt.open.strip()) > max((r.start for r in decisions), default=-1)
        # Reflections the attacker wrote into the prefill are not the model's judgement.
        found = tuple(r for r in decisions if r.end > len(self.prefill))
        new = found[len(self.reflections):]
        self.reflections = found
        if new:
            self.since_reflection = 0
        return next((r for r in new if r.label in self.stop_labels), None)

    def text(self) -> str:
        return self.prefill + self.tokenizer.decode(self.ids, skip_special_tokens=False)


@dataclass(frozen=True)
class MarkerEnds:
    """(vocab,) lists of bools: the tokens whose text holds the last character of a reflection's opening or
    closing marker, and of one of its labels. Lists, not tensors: per-token lookups stay cheap."""

    marker: list[bool]
    label: list[bool]

    @classmethod
    def of(cls, tokenizer, fmt: ReflectionFormat) -> MarkerEnds:
        vocab = [t or "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
        markers = {fmt.open.strip()[-1], fmt.close.strip()[-1]}
        labels = {written[-1] for _, written in fmt.label_tokens}
        return cls([any(c in t for c in markers) for t in vocab], [any(c in t for c in labels) for t in vocab])


def sentence_ends(tokenizer) -> list[bool]:
    """For each token id, whether the token ends a sentence (its text ends with . ! ? or holds a line break)."""
    ends = []
    for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        text = (token or "").replace("Ċ", "\n").replace("Ġ", " ")  # byte-level BPE's newline and space
        ends.append("\n" in text or text.rstrip().endswith((".", "!", "?")))
    return ends


def opening_ids(tokenizer, fmt: ReflectionFormat, answer_start: bool = False) -> list[int]:
    """The tokens of a reflection's opening marker, spelled as the format writes it in training data so that an asked
    reflection reads like a learned one: after text (``fmt.opened``), or opening an answer (``srp_response``)."""
    return tokenizer.encode(fmt.open.rstrip() if answer_start else fmt.opened(""), add_special_tokens=False)


def _special_id(tokenizer, marker: str) -> int | None:
    """The id of a ``<|...|>`` marker that the tokenizer keeps as one token; None for a plain-text marker."""
    return tokenizer.get_vocab().get(marker) if marker.startswith("<|") else None


class SequenceBan:
    """Forbids token sequences (the suppression attack): a sequence's last token is banned wherever the text so far
    ends with the rest of it. Single tokens are banned everywhere."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        unique = {tuple(s) for s in sequences if s}
        self.single = sorted(s[0] for s in unique if len(s) == 1)
        self.longer = [s for s in unique if len(s) > 1]

    def __bool__(self) -> bool:
        return bool(self.single or self.longer)

    def apply(self, logits: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """``logits`` (rows, vocab), one token history per row; returns the logits with banned tokens at -inf."""
        if self.single:
            logits[:, self.single] = float("-inf")
        for row, history in enumerate(histories):
            for seq in self.longer:
                if len(history) >= len(seq) - 1 and tuple(history[len(history) - len(seq) + 1:]) == seq[:-1]:
                    logits[row, seq[-1]] = float("-inf")
        return logits


def suppressed_sequences(tokenizer, fmt: ReflectionFormat, what: Sequence[str]) -> list[list[int]]:
    """Token sequences of the markers an attack forbids: a reflection's opening and/or the harmful tag.

    A plain-text marker is forbidden in the ways it is usually tokenized (on its own and after a space).
    """
    markers = ([fmt.open.strip()] if "reflection" in what else []) + ([HARMFUL_TAG] if "tag" in what else [])
    sequences = []
    for marker in markers:
        variants = [marker] if _special_id(tokenizer, marker) is not None else [marker, " " + marker]
        sequences += [tokenizer.encode(v, add_special_tokens=False) for v in variants]
    return sequences
