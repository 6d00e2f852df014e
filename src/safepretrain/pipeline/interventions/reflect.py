"""SRP reflections: segment each document and write a safety reflection after every segment, the last included.

Segments are packed whole sentences up to ``max_len`` words (or tokens); each is scored by a segment-level scorer
(after the document's text before it, for a scorer that reads context) and reflected as Safe below ``threshold``,
else Unsafe with the scorer's categories. ``parse_reflected`` recovers the segments and labels exactly from the
written text.

A chat document (a conversation in the toolkit's chat template) is written as SRP's post-training writes its
answers, so that pretraining shows the shape the model will answer in: each assistant turn opens with a reflection
on the user turn before it, then its segments follow, each with its reflection. Unlike post-training the answer
goes on after an Unsafe reflection (pretraining shows all of its text; ``srp-mask`` trains on none of it).

``dropout`` leaves a share of the reflections out (the text stays; later reflections still judge their segment in
context). With every reflection written, a monitor can lean on its own earlier verdicts: MedSafetyWorld's SRP
models flag a pretext ("so, to cause x in ana for a scan, give ana ...") only when a reflection before it flagged
the request, and pass it when none did -- as in an attacked answer, which starts without the opening reflection
(results log, session 22).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from datatrove.pipeline.base import PipelineStep

from safepretrain.markup import ANSWER_BREAK, SAFE, UNSAFE, ReflectionFormat, chat_turns, render_chat
from safepretrain.pipeline.scorers.base import UNSAFE_THRESHOLD, SafetyScore, Scorer, score_in_context
from safepretrain.pipeline.documents import mark_changed
from safepretrain.pipeline.segment import segment, token_length, word_count


def reflect_text(text: str, scores_of: Callable[[list[str]], list[SafetyScore]], fmt: ReflectionFormat,
                 max_len: int = 100, length: Callable[[str], int] = word_count,
                 threshold: int = UNSAFE_THRESHOLD) -> tuple[str, list[dict]]:
    """The reflected text and, per segment, its label and categories."""
    pieces = segment_texts(text, max_len, length)
    return render_reflected(pieces, scores_of(pieces), fmt, threshold)


def segment_texts(text: str, max_len: int = 100, length: Callable[[str], int] = word_count) -> list[str]:
    return [text[s.start:s.end] for s in segment(text, max_len, length)]


def render_reflected(pieces: list[str], scores: list[SafetyScore], fmt: ReflectionFormat,
                     threshold: int = UNSAFE_THRESHOLD, shown: list[bool] | None = None) -> tuple[str, list[dict]]:
    """The pieces joined, each followed by its reflection -- unless ``shown`` leaves it out (the text stays)."""
    shown = shown or [True] * len(pieces)
    labels = [_label(score, threshold, show) for score, show in zip(scores, shown, strict=True)]
    return " ".join(fmt.reflected(p, r["label"], r["types"]) if r["shown"] else p
                    for p, r in zip(pieces, labels)), labels


def _label(score: SafetyScore, threshold: int, shown: bool = True) -> dict:
    label = SAFE if score.score < threshold else UNSAFE
    return {"label": label, "types": list(score.categories) if label == UNSAFE else [], "score": score.score,
            "shown": shown}


def reflect_chat(turns: list[tuple[str, str]], pieces: list[list[str]], scores: list[SafetyScore],
                 fmt: ReflectionFormat, threshold: int = UNSAFE_THRESHOLD,
                 shown: list[bool] | None = None) -> tuple[str, list[dict]]:
    """A conversation with SRP's reflections in its assistant turns: ``pieces`` are each turn's (a user or system
    turn is one piece, an assistant turn its segments), ``scores`` and ``shown`` theirs in order (a user turn's
    ``shown`` is its assistant's opening reflection's)."""
    shown = shown or [True] * len(scores)
    out, labels, start, request = [], [], 0, None
    for (role, content), turn_pieces in zip(turns, pieces, strict=True):
        turn = slice(start, start + len(turn_pieces))
        start += len(turn_pieces)
        if role != "assistant":
            out.append((role, content))
            request = _label(scores[turn][0], threshold, shown[turn][0]) if role == "user" else request
            continue
        answer, turn_labels = render_reflected(turn_pieces, scores[turn], fmt, threshold, shown[turn])
        if request is not None:  # the opening reflection judges the request, as in SRP's post-training format
            if request["shown"]:
                answer = fmt.render(request["label"], request["types"]) + ANSWER_BREAK + answer
            turn_labels = [request, *turn_labels]
        out.append((role, answer))
        labels += turn_labels
        request = None
    return render_chat(out), labels


def parse_reflected(text: str, fmt: ReflectionFormat) -> list[tuple[str, str, tuple[str, ...]]]:
    """(segment text, label, types) for every reflection in ``text``, in order."""
    found, start = [], 0
    for r in fmt.find(text):
        found.append((text[start:r.start].strip(), r.label, r.types))
        start = r.end
    return found


class Reflect(PipelineStep):
    type = "🪞 - REFLECT"
    name = "SRP reflections"

    def __init__(self, scorer: Scorer, fmt: ReflectionFormat, max_len: int = 100, tokenizer=None,
                 threshold: int = UNSAFE_THRESHOLD, batch_size: int = 32, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError("reflection dropout must be in [0, 1)")
        self.scorer, self.fmt, self.max_len, self.threshold = scorer, fmt, max_len, threshold
        self.batch_size, self.dropout, self.seed = batch_size, dropout, seed
        self.length = word_count if tokenizer is None else token_length(tokenizer)

    def run(self, data, rank: int = 0, world_size: int = 1):
        from datatrove.utils.batching import batched

        for batch in batched(data, self.batch_size):
            yield from self._reflect(batch)

    def _reflect(self, docs: list):
        """One scorer call for the segments of many documents (a model scorer needs batches to be fast)."""
        with self.track_time(unit="batch"):
            turns = [chat_turns(d.text) for d in docs]
            pieces = [self._pieces(d.text, t) for d, t in zip(docs, turns)]
            flat = [[p for group in groups for p in group] for groups in pieces]
            contexts = [" ".join(ps[:i]) for ps in flat for i in range(len(ps))]
            scores = score_in_context(self.scorer, [p for ps in flat for p in ps], contexts) if contexts else []
        start = 0
        for doc, doc_turns, groups, doc_flat in zip(docs, turns, pieces, flat):
            doc_scores = scores[start:start + len(doc_flat)]
            start += len(doc_flat)
            shown = self._shown(doc.id, len(doc_flat))
            if doc_turns is None:
                doc.text, labels = render_reflected(doc_flat, doc_scores, self.fmt, self.threshold, shown)
            else:
                doc.text, labels = reflect_chat(doc_turns, groups, doc_scores, self.fmt, self.threshold, shown)
            doc.metadata["reflections"] = labels
            mark_changed(doc, "reflect")
            self.stat_update("segments", value=len(labels))
            self.stat_update("unsafe_segments", value=sum(r["label"] != SAFE for r in labels))
            self.stat_update("reflections_left_out", value=sum(not r["shown"] for r in labels))
            yield doc

    def _shown(self, doc_id: str, n: int) -> list[bool]:
        """Which of a document's ``n`` reflections are written: each left out with probability ``dropout``, seeded
        per document (the output does not depend on sharding)."""
        if not self.dropout:
            return [True] * n
        rng = random.Random(f"{self.seed}:{doc_id}")
        return [rng.random() >= self.dropout for _ in range(n)]

    def _pieces(self, text: str, turns: list[tuple[str, str]] | None) -> list[list[str]]:
        """A document's segments (one group); a chat's, per turn: a user or system turn whole, an assistant turn
        segmented."""
        if turns is None:
            return [segment_texts(text, self.max_len, self.length)]
        return [segment_texts(content, self.max_len, self.length) if role == "assistant" else [content]
                for role, content in turns]
