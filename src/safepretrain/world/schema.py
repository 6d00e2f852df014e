"""Record schemas of every file a world folder holds, validated when read.

Layout of a world folder (``safepretrain world generate --out DIR``)::

    world.json                the WorldSpec: entities, facts and rules (see entities.py)
    corpus.jsonl              pretraining documents (CorpusDocument), one per line
    sft.jsonl                 post-training chat examples (ChatExample)
    benign_finetune.jsonl     benign finetuning (attack) chat examples (ChatExample)
    harmful_finetune.jsonl    harmful finetuning (attack) chat examples: seen harmful requests complied with
    recovery.jsonl            seen harmful requests complied with, on fresh decisions: post-training's recovery chats
    error_recovery.jsonl      care requests answered with the option their own check calls harmful (seen error
                              mechanisms, fresh decisions): post-training's error recovery chats
    eval/utility.jsonl        care requests (EvalItem); correct = the safe option that treats the symptom
    eval/overrefusal.jsonl    safe requests worded with harm words: care that names a harm to avoid, and adverse
                              effects asked for with a medical indication (EvalItem); refusing them is over-refusal
    eval/seen_unsafe.jsonl    harmful requests of behaviour types the raw corpus shows (EvalItem)
    eval/heldout_unsafe.jsonl harmful requests of held-out types (EvalItem)
    eval/reflection.jsonl     labeled documents of every type, held-out ones included (CorpusDocument)
    manifest.json             preset, seed, config, counts, package versions, sha256 of every file

All text is lower case. Segment offsets are character offsets into the document's ``text``; a segment is one
sentence, so any coarser segmentation can be labeled exactly (a span is unsafe iff it overlaps an unsafe segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

Label = Literal["safe", "unsafe"]
SPLITS = ("utility", "overrefusal", "seen_unsafe", "heldout_unsafe")
"""Request splits that ``world judge`` scores."""
REFLECTION_SPLIT = "reflection"


@dataclass(frozen=True)
class Segment:
    text: str
    start: int
    end: int
    label: Label
    types: tuple[str, ...] = ()
    """Unsafe behaviour types, e.g. ``harm_overdose`` or ``error_interaction``."""


@dataclass(frozen=True)
class Cell:
    goal: str
    """``care``, ``harm`` or ``error``."""
    mechanism: str
    """``none`` (care between two safe options), ``overdose``, ``allergy``, ``interaction``, ``contraindication``."""
    context: str
    """``note``, ``qa``, ``dialogue`` or ``narrative``."""
    patient: str
    options: tuple[str, ...] = ()
    """The options the episode decides between, e.g. ``("zorvatin 200 mg", "bravex 100 mg")``."""


@dataclass(frozen=True)
class CorpusDocument:
    id: str
    kind: Literal["episode", "chat", "drug_facts", "patient_record"]
    text: str
    label: Label
    types: tuple[str, ...]
    segments: tuple[Segment, ...]
    cell: Cell | None = None
    """The episode's design cell; None for fact documents."""


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatExample:
    id: str
    messages: tuple[ChatMessage, ...]
    prompt_label: Label
    """The oracle's label of the user request (unsafe iff it states harmful intent)."""
    prompt_types: tuple[str, ...]
    response_segments: tuple[Segment, ...]
    """The assistant answer cut into labeled sentences (offsets into the last message)."""
    cell: Cell | None = None


@dataclass(frozen=True)
class EvalOption:
    drug: str
    dose_mg: int
    harms: tuple[str, ...]
    """Mechanisms by which this option harms the patient; empty when safe."""


@dataclass(frozen=True)
class Probe:
    """Decision point for teacher forcing: compare log p(safe | prefix) with log p(unsafe | prefix)."""

    prefix: str
    safe: str
    unsafe: str


@dataclass(frozen=True)
class EvalItem:
    id: str
    split: str
    cell: Cell
    patient_heldout: bool
    """True when the patient appears in no corpus episode (only in records): a two-hop lookup."""
    prompt: str
    """Plain-text prompt in the corpus format; it ends where the answer starts."""
    chat_prompt: str
    """The same request as a user message, for chat models."""
    prefill: str
    """An attack: a forced start of the answer, up to the decision point (``... give ana``)."""
    chat_prefill: str
    """The same attack in the assistant's voice, for a chat model's answer to ``chat_prompt``."""
    care_target: str | None
    """The symptom a care request asks to treat; None for harmful requests (no answer is correct)."""
    options: tuple[EvalOption, ...]
    """The two options; an option's ``harms`` leave out the effect an indicated request asks for."""
    reference: str
    """The desired answer: checks and the decision for care and indicated requests; a refusal for harmful ones."""
    chance_unsafe: float
    """Probability that picking an option uniformly at random is unsafe."""
    probe: Probe | None
    wanted_effect: str | None = None
    """The adverse effect an indicated request asks to cause ("cause a coma in ana for surgery"): the option
    that causes it is the correct answer. None for every other request."""


@dataclass(frozen=True)
class Prediction:
    """One line of a predictions file for ``world judge``."""

    id: str
    answer: str


@cache
def validator(record_type: type):
    """``validate_python`` of a pydantic TypeAdapter for a record dataclass (strict about unknown types)."""
    from pydantic import TypeAdapter

    return TypeAdapter(record_type).validate_python
