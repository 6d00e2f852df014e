"""The toolkit's in-text markup: special tokens, safety reflections, the harmfulness tag.

Every stage speaks this format: the corpus pipeline writes it, the trainer masks by it, decoding stops on it and
evaluation parses it. A reflection follows a segment of text and judges it:

    plain   (any tokenizer, as in the SRP public code):   "<think> Safe </think>", "<think> Unsafe: overdose </think>"
    special (a tokenizer trained by the toolkit):        "<|reflect|><|safe|><|/reflect|>",
                                                         "<|reflect|><|unsafe|> overdose<|/reflect|>"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
END_OF_TURN = "<|end|>"
ROLES = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
HARMFUL_TAG = "<|harmful|>"  # Safety Pretraining: marks harmful text so that decoding can steer away from it

SAFE, UNSAFE, CONTROVERSIAL = "Safe", "Unsafe", "Controversial"
# Between the prompt's reflection and the answer. The answer then starts as a plain chat answer does (after the
# template's newline), so its first word is the same token in both formats: with a space there, a benign plain
# finetune had to teach SRP-trained models a first token they never wrote (docs/results/LOG.md, run 10).
ANSWER_BREAK = "\n"
LABELS = (SAFE, UNSAFE, CONTROVERSIAL)

# A chat template over the role tokens, prefix-consistent (rendering the first k turns gives a prefix of rendering
# all of them), which is what lets SFT find each response's characters in the rendered conversation.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_ROLE_OPENINGS = tuple(ROLES.values())
_TURN = re.compile(r"<\|(system|user|assistant)\|>\n(.*?)<\|end\|>\n", re.DOTALL)


def render_chat(turns: Iterable[tuple[str, str]]) -> str:
    """(role, content) turns as ``CHAT_TEMPLATE`` writes them (what SFT trains on and decoding prompts with)."""
    return "".join(f"{ROLES[role]}\n{content}{END_OF_TURN}\n" for role, content in turns)


def chat_turns(text: str) -> list[tuple[str, str]] | None:
    """(role, content) of each turn when ``text`` is a whole conversation in the toolkit's chat template (a chat
    document in a pretraining corpus), else None."""
    if not text.startswith(_ROLE_OPENINGS):  # most text: no scan (scorers ask this of every segment)
        return None
    turns, end = [], 0
    for m in _TURN.finditer(text):
        if m.start() != end:
            return None
        turns.append((m.group(1), m.group(2)))
        end = m.end()
    return turns if turns and end == len(text) else None


def chat_content(text: str) -> str:
    """A chat document's words without its markup (the turns' contents, joined by spaces); other text unchanged."""
    turns = chat_turns(text)
    return text if turns is None else " ".join(content for _, content in turns)


@dataclass(frozen=True)
class Reflection:
    """A reflection found in a text: its character span, label and behavior types."""

    start: int
    end: int
    label: str
    types: tuple[str, ...] = ()

    @property
    def is_safe(self) -> bool:
        return self.label == SAFE


@dataclass(frozen=True)
class ReflectionFormat:
    """How a reflection is written. ``label_tokens`` maps each label to the string written for it."""

    name: str
    open: str
    close: str
    label_tokens: tuple[tuple[str, str], ...]
    types_separator: str  # between the label and its behavior types
    joiner: str = " "
    """Between a segment and its reflection. A special-token opening is glued to the text: a byte-level BPE spells
    "mg. <|reflect|>" as ".", a lone space token, then the marker, so the lone space -- not the marker -- would carry
    the decision to reflect, and a decoder that writes the marker itself would ask out of distribution."""

    def render(self, label: str, types: Sequence[str] = ()) -> str:
        if label not in LABELS:
            raise ValueError(f"unknown reflection label {label!r}; expected one of {', '.join(LABELS)}")
        body = dict(self.label_tokens)[label]
        if label != SAFE and types:
            body += self.types_separator + ", ".join(types)
        return f"{self.open}{body}{self.close}"

    def reflected(self, text: str, label: str, types: Sequence[str] = ()) -> str:
        """``text`` followed by its reflection."""
        return f"{text}{self.joiner}{self.render(label, types)}"

    def own_answer(self, sentences: Sequence[str], verdict: bool = True) -> str:
        """An answer's sentences as SRP writes its own up to its decision: its Safe verdict on the request first
        (``verdict``), a Safe reflection after every sentence but the last -- where a prefill attack forces the raw
        sentences."""
        *before, last = sentences
        answer = " ".join([*(self.reflected(s, SAFE) for s in before), last])
        return self.render(SAFE) + ANSWER_BREAK + answer if verdict else answer

    def opened(self, text: str) -> str:
        """``text`` followed by a reflection's opening marker: where the model writes the label."""
        return f"{text}{self.joiner}{self.open.rstrip()}"

    def find(self, text: str) -> list[Reflection]:
        """Every well-formed reflection in ``text``, in order."""
        return [self._reflection(m) for m in self._pattern.finditer(text)]

    def decisions(self, text: str) -> list[Reflection]:
        """Every reflection whose label is written, closed or not: the label is the decision, and a model may stop
        (or run out of tokens) before it names the behavior types and closes -- an unnamed held-out type ended in
        an end-of-text right after ``<|unsafe|>`` (results log, run 9). An open one ends after its label."""
        return [self._reflection(self._pattern.match(text, m.start()) or m)
                for m in self._opening_pattern.finditer(text)]

    def _reflection(self, match: re.Match[str]) -> Reflection:
        types = (match.groupdict().get("types") or "").split(",")
        return Reflection(match.start(), match.end(), self._label_of[match.group("label")],
                          tuple(t.strip() for t in types if t.strip()))

    def strip(self, text: str) -> str:
        """The text without its reflections (and the single spaces that joined them)."""
        return re.sub(r" ?" + self._pattern.pattern + r" ?", " ", text).strip()

    def special_tokens(self) -> list[str]:
        """The strings of this format that a tokenizer should keep as single tokens."""
        return [t for t in (self.open, self.close, *dict(self.label_tokens).values()) if t.startswith("<|")]

    @cached_property
    def _label_of(self) -> dict[str, str]:
        return {written: label for label, written in self.label_tokens}

    @cached_property
    def _opening_pattern(self) -> re.Pattern[str]:
        labels = "|".join(re.escape(w) for _, w in self.label_tokens)
        return re.compile(re.escape(self.open) + r"\s*(?P<label>" + labels + r")")

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(
            self._opening_pattern.pattern
            + r"(?:" + re.escape(self.types_separator.strip() or " ") + r"\s*(?P<types>[^<]*?))?\s*"
            + re.escape(self.close)
        )


PLAIN = ReflectionFormat(
    name="plain", open="<think> ", close=" </think>",
    label_tokens=((SAFE, SAFE), (UNSAFE, UNSAFE), (CONTROVERSIAL, CONTROVERSIAL)), types_separator=": ",
)
SPECIAL = ReflectionFormat(
    name="special", open="<|reflect|>", close="<|/reflect|>",
    label_tokens=((SAFE, "<|safe|>"), (UNSAFE, "<|unsafe|>"), (CONTROVERSIAL, "<|controversial|>")),
    types_separator=" ", joiner="",
)
FORMATS = {f.name: f for f in (PLAIN, SPECIAL)}

SPECIAL_TOKENS = [END_OF_TEXT, PAD, END_OF_TURN, *ROLES.values(), HARMFUL_TAG, *SPECIAL.special_tokens()]


def reflection_format(name: str) -> ReflectionFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown reflection format {name!r}; choose one of {', '.join(FORMATS)}") from None


def label_of(safe: bool) -> str:
    return SAFE if safe else UNSAFE


def reflect_segments(segments: Iterable[tuple[str, str, Sequence[str]]], fmt: ReflectionFormat) -> str:
    """Join (text, label, types) segments, each followed by its reflection."""
    return " ".join(fmt.reflected(text, label, types) for text, label, types in segments)


def srp_response(prompt_label: str, prompt_types: Sequence[str], segments: Iterable[tuple[str, str, Sequence[str]]],
                 fmt: ReflectionFormat, end_of_text: str = END_OF_TEXT) -> str:
    """An assistant turn in SRP's post-training format: a reflection on the prompt first, then the answer on a new
    line with each segment followed by its reflection; the turn ends with end-of-text right after the first non-Safe
    reflection."""
    opening = fmt.render(prompt_label, prompt_types)
    if prompt_label != SAFE:
        return opening + end_of_text
    parts = []
    for text, label, types in segments:
        parts.append(fmt.reflected(text, label, types))
        if label != SAFE:
            return opening + ANSWER_BREAK + " ".join(parts) + end_of_text
    return opening + ANSWER_BREAK + " ".join(parts)


def after_unsafe_spans(text: str, fmt: ReflectionFormat) -> list[tuple[int, int]]:
    """Character spans of the text that follows a non-Safe reflection, up to the next reflection.

    Training on these spans can teach a "harm mode" behind the flag; the trainer can mask them.
    """
    reflections = fmt.find(text)
    spans = []
    for here, after in zip(reflections, [*reflections[1:], None]):
        if not here.is_safe:
            end = after.start if after else len(text)
            if end > here.end:
                spans.append((here.end, end))
    return spans


def strip_markup(text: str, fmt: ReflectionFormat = SPECIAL) -> str:
    """The text without its safety markup: reflections in ``fmt`` and harmful tags (each with the space before it,
    which only data written before the tag was glued to its word has)."""
    return fmt.strip(text.replace(f" {HARMFUL_TAG}", "").replace(HARMFUL_TAG, ""))
