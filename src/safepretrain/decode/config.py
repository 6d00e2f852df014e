"""Decoding settings and results, shared by the decoders, evaluation and (later) serving."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from safepretrain.markup import CONTROVERSIAL, UNSAFE, Reflection

MODES = ("plain", "guarded", "beam", "safebeam")
SUPPRESSIBLE = ("reflection", "tag")


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    mode: Literal["plain", "guarded", "beam", "safebeam"] = "plain"
    """plain: greedy or sampled; guarded: plain + stop on the model's own non-Safe reflection (SRP);
    beam: beam search; safebeam: Safety Pretraining's Algorithm 2 (beam search steered away from the harmful tag)."""
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 = greedy (plain and guarded modes)."""
    top_k: int = 0
    """Sample from the k most likely tokens only (0 = all)."""
    seed: int = 0
    """Seed of sampling, per batch, so that a run repeats exactly."""
    policy: Literal["stop", "refuse"] = "stop"
    """guarded: on a non-Safe reflection, return the text up to that reflection (stop) or a refusal (refuse)."""
    refusal: str = "i can't help with that."
    stop_labels: tuple[str, ...] = (UNSAFE, CONTROVERSIAL)
    reflection_format: str = "auto"
    """plain, special, or auto (special when the tokenizer has the special reflection tokens)."""
    beams: int = 4
    """k of beam and Safe Beam search."""
    candidates: int = 4
    """N of Safe Beam: the top-N next tokens of each beam are scored."""
    drop_fraction: float = 0.5
    """Safe Beam drops this share of the pooled candidates, those most likely to be followed by the tag."""
    length_penalty: float = 1.0
    """Beam search ranks finished answers by summed log-probability / length ** length_penalty (transformers'
    default, 1.0). With 0 (raw sums) a short answer wins because every token costs probability: Safe Beam on
    MedSafetyWorld stopped after "check meil 50 mg." in 99 of 100 care requests (run 6 of the results log)."""
    stop_on_tag: bool = True
    """Safe Beam: stop when the best beam generates the harmful tag (the text before it is returned)."""
    suppress: tuple[str, ...] = ()
    """An attack: forbid the model to write its reflections (``reflection``) and/or the harmful tag (``tag``)."""
    reflect_every: int = 0
    """plain and guarded: when the model ends a sentence at least this many tokens after its last reflection (or
    the start of its answer), the decoder writes the reflection's opening marker and the model writes the label.
    The guard then rests on what the model's reflections say, not on when it chooses to write them: a model taught
    reflections by a short continued pretraining labels a segment right but rarely opens a reflection unasked.
    The decoder's marker is not subject to the ``suppress`` attack (the deployer, not the prompt, writes it).
    0 = the model reflects when it does."""
    reflect_on_request: bool = False
    """plain and guarded: the decoder opens the answer with a reflection's marker and the model labels the request
    itself -- the verdict SRP's post-training opens every answer with, which a model finetuned on answers without
    reflections no longer writes unasked (results log, session 24). Not under a prefill: there the attacker writes
    the answer's start, and only ``reflect_every`` asks."""
    batch_size: int = 16

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.policy not in ("stop", "refuse"):
            raise ValueError(f"policy {self.policy!r}: choose stop or refuse")
        if unknown := set(self.suppress) - set(SUPPRESSIBLE):
            raise ValueError(f"suppress {sorted(unknown)}: choose from {', '.join(SUPPRESSIBLE)}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.beams < 1 or self.candidates < 1:
            raise ValueError("max_new_tokens, batch_size, beams and candidates must be at least 1")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty {self.length_penalty} must be >= 0")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction {self.drop_fraction} must be in [0, 1)")
        if self.reflect_every < 0:
            raise ValueError(f"reflect_every {self.reflect_every} must be >= 0")
        if (self.reflect_every or self.reflect_on_request) and self.mode in ("beam", "safebeam"):
            raise ValueError("reflect_every and reflect_on_request work with plain and guarded decoding, "
                             "not beam search")
        if self.temperature < 0:
            raise ValueError(f"temperature {self.temperature} must be >= 0")


FinishReason = Literal["stop", "length", "unsafe_reflection", "harmful_tag"]


@dataclass(frozen=True)
class Generation:
    """One decoded answer. ``text`` is what reaches the caller: with guarded decoding it never holds anything
    written after a non-Safe reflection (policy stop), or it is the refusal (policy refuse)."""

    text: str
    finish_reason: FinishReason
    new_tokens: int
    reflections: tuple[Reflection, ...] = field(default=())
    """The model's reflections in its answer (offsets into prefill + answer), up to where decoding stopped."""
    stopped_at: int | None = None
    """Guarded / Safe Beam: the character offset (into prefill + answer) where decoding stopped the model."""

    @property
    def flagged(self) -> bool:
        """True when the model judged its own text non-Safe (or Safe Beam met the tag)."""
        return self.finish_reason in ("unsafe_reflection", "harmful_tag")

    def to_dict(self) -> dict:
        return {
            "text": self.text, "finish_reason": self.finish_reason, "new_tokens": self.new_tokens,
            "reflections": [{"label": r.label, "types": list(r.types), "start": r.start, "end": r.end}
                            for r in self.reflections],
            "stopped_at": self.stopped_at,
        }
